"""Placeholder: the artifacts service is registered (health, reflection) but its RPCs are not built yet."""

from __future__ import annotations

import grpc

from keel.artifacts.v1 import artifacts_pb2, artifacts_pb2_grpc
from keel_server.common.app import App


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    artifacts_pb2_grpc.add_ArtifactServiceServicer_to_server(artifacts_pb2_grpc.ArtifactServiceServicer(), server)
    return [artifacts_pb2.DESCRIPTOR.services_by_name["ArtifactService"].full_name]
