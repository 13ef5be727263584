"""Server-side clients of keel's own gRPC services, for the HTTP front doors (the MLflow REST port
and the web console).

A front door never touches the stores: it turns each HTTP request into the gRPC call a client
would make, carrying the HTTP caller's credentials as call metadata, so permissions, validation,
the audit log and services running apart work exactly as for any gRPC client. In the server
process the services it runs are reached over a private Unix socket (``internal_socket``); the
others, and everything for a front door in its own process (``keel ui``), at their
``grpc://``/``grpcs://`` addresses.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc

from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.audit.v1 import audit_pb2_grpc
from keel.auth.v1 import auth_pb2_grpc
from keel.channels import MAX_MESSAGE_BYTES, open_plain_channel
from keel.discovery.v1 import discovery_pb2, discovery_pb2_grpc
from keel.exceptions import from_rpc_error
from keel.inference.v1 import inference_pb2_grpc
from keel.registry.v1 import registry_pb2_grpc
from keel.tracking.v1 import tracking_pb2_grpc

T = TypeVar("T")
SERVICES = ("tracking", "registry", "artifacts", "inference", "auth", "audit")
_STUBS: dict[str, Callable[[grpc.Channel], Any]] = {
    "tracking": tracking_pb2_grpc.TrackingServiceStub,
    "registry": registry_pb2_grpc.ModelRegistryServiceStub,
    "artifacts": artifacts_pb2_grpc.ArtifactServiceStub,
    "inference": inference_pb2_grpc.InferenceServiceStub,
    "auth": auth_pb2_grpc.AuthServiceStub,
    "audit": audit_pb2_grpc.AuditServiceStub,
}
# Default deadline of a unary call made on a caller's behalf.
DEFAULT_TIMEOUT_S = 60.0

Metadata = Sequence[tuple[str, str]]


def internal_socket() -> str:
    """A fresh ``unix:`` address in a private (0700) folder, for a server's own front doors."""
    folder = tempfile.mkdtemp(prefix="keel-internal-")
    os.chmod(folder, 0o700)
    return f"unix:{os.path.join(folder, 'grpc.sock')}"


class Gateway:
    """One channel per distinct target and one stub per service; ``call`` and ``stream`` raise
    the SDK's typed ``keel.exceptions.KeelError`` (code, reason, message) on failure."""

    def __init__(self, targets: Mapping[str, str]) -> None:
        """``targets``: service name → ``unix:/path``, ``grpc://host:port`` or ``grpcs://…``."""
        self._targets = dict(targets)
        self._channels: dict[str, grpc.Channel] = {}
        self._stubs: dict[str, Any] = {}
        self._lock = threading.Lock()

    @classmethod
    def for_server(cls, local_target: str, local_services: Sequence[str], remote: Mapping[str, str]) -> Gateway:
        """The services this process runs (and auth, audit, always local) at ``local_target``; the
        others at their configured addresses (``remote``, service → URI; '' when unknown: local)."""
        targets = {}
        for service in SERVICES:
            address = remote.get(service, "")
            local = service in local_services or service in ("auth", "audit") or not address
            targets[service] = local_target if local else address
        return cls(targets)

    @classmethod
    def for_uri(cls, uri: str) -> Gateway:
        """Every service at ``uri`` unless its discovery RPC names another address (as the SDK does)."""
        targets = dict.fromkeys(SERVICES, uri)
        gateway = cls(targets)
        try:
            answer = gateway.call("discovery", "GetServiceAddresses", discovery_pb2.GetServiceAddressesRequest())
        except Exception:  # noqa: BLE001 - an older or unreachable server: keep one address
            return gateway
        for entry in answer.services:
            if entry.service in targets and not entry.local and entry.address:
                targets[entry.service] = entry.address
        return cls(targets)

    def target(self, service: str) -> str:
        return self._targets[service]

    def _stub(self, service: str) -> Any:
        stub = self._stubs.get(service)
        if stub is not None:
            return stub
        with self._lock:
            if service not in self._stubs:
                target = self._targets.get(service) or self._targets["tracking"]
                channel = self._channels.get(target)
                if channel is None:
                    channel = self._channels[target] = _open(target)
                factory = _STUBS.get(service) or discovery_pb2_grpc.DiscoveryServiceStub
                self._stubs[service] = factory(channel)
            return self._stubs[service]

    def call(
        self, service: str, method: str, request: Any, metadata: Metadata = (), timeout: float = DEFAULT_TIMEOUT_S
    ) -> Any:
        """A unary call; raises ``keel.exceptions.KeelError``."""
        try:
            return getattr(self._stub(service), method)(request, metadata=tuple(metadata), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def stream(self, service: str, method: str, request: Any, metadata: Metadata = ()) -> Iterator[Any]:
        """A server-streaming call's messages; raises ``keel.exceptions.KeelError``."""
        try:
            yield from getattr(self._stub(service), method)(request, metadata=tuple(metadata))
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def upload(
        self, service: str, method: str, requests: Iterator[Any], metadata: Metadata = (), timeout: float | None = None
    ) -> Any:
        """A client-streaming call fed from ``requests``; raises ``keel.exceptions.KeelError``."""
        try:
            return getattr(self._stub(service), method)(requests, metadata=tuple(metadata), timeout=timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()
            self._stubs.clear()


def _open(target: str) -> grpc.Channel:
    if target.startswith("unix:"):
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ]
        return grpc.insecure_channel(target, options=options)
    return open_plain_channel(target)
