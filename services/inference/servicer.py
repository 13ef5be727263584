"""Placeholder: the inference service is registered (health, reflection) but its RPCs are not built yet."""

from __future__ import annotations

import grpc

from keel.inference.v1 import inference_pb2, inference_pb2_grpc
from keel_server.common.app import App


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    inference_pb2_grpc.add_InferenceServiceServicer_to_server(inference_pb2_grpc.InferenceServiceServicer(), server)
    return [inference_pb2.DESCRIPTOR.services_by_name["InferenceService"].full_name]
