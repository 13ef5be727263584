"""Placeholder: the tracking service is registered (health, reflection) but its RPCs are not built yet."""

from __future__ import annotations

import grpc

from keel.tracking.v1 import tracking_pb2, tracking_pb2_grpc
from keel_server.common.app import App


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    tracking_pb2_grpc.add_TrackingServiceServicer_to_server(tracking_pb2_grpc.TrackingServiceServicer(), server)
    return [tracking_pb2.DESCRIPTOR.services_by_name["TrackingService"].full_name]
