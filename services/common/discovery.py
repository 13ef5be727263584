"""Where each keel service runs, for clients that hold one URI.

Every keel server carries ``keel.discovery.v1.DiscoveryService``: for each of the four services
it says "here", the address this server was configured with (``KEEL_<SERVICE>_ADDRESS``), or
nothing. The SDK asks once per URI and routes each service's calls accordingly.

A call for a keel service this server does not run gets ``UNIMPLEMENTED`` with a message that
names the service and where to configure it, instead of grpc's bare "Method not found!".
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.descriptor import ServiceDescriptor

from keel.discovery.v1 import discovery_pb2 as pb
from keel.discovery.v1 import discovery_pb2_grpc
from keel_server.common.config import ALL_SERVICES, Settings
from keel_server.common.errors import Unimplemented

# (module of the generated messages, service name) of keel's own service behind each name.
_GRPC_SERVICES: dict[str, tuple[str, str]] = {
    "tracking": ("keel.tracking.v1.tracking_pb2", "TrackingService"),
    "registry": ("keel.registry.v1.registry_pb2", "ModelRegistryService"),
    "artifacts": ("keel.artifacts.v1.artifacts_pb2", "ArtifactService"),
    "inference": ("keel.inference.v1.inference_pb2", "InferenceService"),
}
# The inference service also speaks KServe v2. Its stubs are never imported here: a process that
# has them in protobuf's pool cannot import tritonclient (duplicate 'inference.*' symbols), and
# every method of the v2 protocol is unary, so its name is all this module needs.
KSERVE_SERVICE = "inference.GRPCInferenceService"


def keel_service(service: str) -> ServiceDescriptor:
    """The descriptor of keel's own gRPC service behind ``service``."""
    module, name = _GRPC_SERVICES[service]
    return importlib.import_module(module).DESCRIPTOR.services_by_name[name]


def grpc_service_names(service: str) -> list[str]:
    """The gRPC services a keel service serves."""
    names = [keel_service(service).full_name]
    return [*names, KSERVE_SERVICE] if service == "inference" else names


def _setting_names(service: str) -> str:
    return f"KEEL_{service.upper()}_ADDRESS (--{service}-address)"


class DiscoveryServicer(discovery_pb2_grpc.DiscoveryServiceServicer):
    def __init__(self, settings: Settings) -> None:
        self._response = pb.GetServiceAddressesResponse(
            services=[
                pb.ServiceAddress(
                    service=service,
                    local=service in settings.services,
                    address="" if service in settings.services else settings.address_of(service),
                    grpc_services=grpc_service_names(service),
                )
                for service in ALL_SERVICES
            ]
        )

    def GetServiceAddresses(
        self, request: pb.GetServiceAddressesRequest, context: grpc.ServicerContext
    ) -> pb.GetServiceAddressesResponse:
        return self._response


class _NotHere(grpc.GenericRpcHandler):
    """Answers every method of a keel service this server does not run with UNIMPLEMENTED."""

    def __init__(self, settings: Settings) -> None:
        self._handlers: dict[str, grpc.RpcMethodHandler] = {}
        self._kserve: grpc.RpcMethodHandler | None = None
        runs = ", ".join(settings.services)
        for service in ALL_SERVICES:
            if service in settings.services:
                continue
            address = settings.address_of(service)
            where = (
                f"it runs at {address}: clients find it there through discovery (or set "
                f"KEEL_{service.upper()}_URI on the client)"
                if address
                else f"set {_setting_names(service)} on this server so clients can find it, or "
                f"KEEL_{service.upper()}_URI on the client"
            )
            descriptor = keel_service(service)
            message = (
                f"this keel server does not run the {service} service ({descriptor.full_name}); it runs "
                f"{runs}. {where[0].upper()}{where[1:]}"
            )
            for method in descriptor.methods:
                self._handlers[f"/{descriptor.full_name}/{method.name}"] = _refusing_handler(
                    message, method.client_streaming, method.server_streaming
                )
            if service == "inference":
                self._kserve = _refusing_handler(message.replace(descriptor.full_name, KSERVE_SERVICE), False, False)

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if self._kserve is not None and method.startswith(f"/{KSERVE_SERVICE}/"):
            return self._kserve
        return self._handlers.get(method)


def _refusing_handler(message: str, client_streaming: bool, server_streaming: bool) -> grpc.RpcMethodHandler:
    def refuse(request: Any, context: grpc.ServicerContext) -> Any:
        raise Unimplemented(message, reason="SERVICE_NOT_HERE")

    def refuse_stream(request: Any, context: grpc.ServicerContext) -> Any:
        refuse(request, context)
        yield  # pragma: no cover - makes this a generator, as stream handlers are

    factory: Callable[..., grpc.RpcMethodHandler] = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(client_streaming, server_streaming)]
    return factory(refuse_stream if server_streaming else refuse)


def add_to_server(server: grpc.Server, settings: Settings) -> list[str]:
    """Discovery, plus the UNIMPLEMENTED answers for the keel services that run elsewhere
    (registered after the real services, so they only catch what nothing else serves)."""
    discovery_pb2_grpc.add_DiscoveryServiceServicer_to_server(DiscoveryServicer(settings), server)
    server.add_generic_rpc_handlers((_NotHere(settings),))
    return [pb.DESCRIPTOR.services_by_name["DiscoveryService"].full_name]
