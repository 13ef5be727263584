"""Placeholder: the registry service is registered (health, reflection) but its RPCs are not built yet."""

from __future__ import annotations

import grpc

from keel.registry.v1 import registry_pb2, registry_pb2_grpc
from keel_server.common.app import App


def add_to_server(server: grpc.Server, app: App) -> list[str]:
    registry_pb2_grpc.add_ModelRegistryServiceServicer_to_server(registry_pb2_grpc.ModelRegistryServiceServicer(), server)
    return [registry_pb2.DESCRIPTOR.services_by_name["ModelRegistryService"].full_name]
