"""Which address each keel service's calls go to, for a client that holds one tracking URI.

In order: an explicit per-client URI (``keel.set_registry_uri()`` / ``KEEL_REGISTRY_URI``, as
MLflow's ``set_registry_uri`` / ``MLFLOW_REGISTRY_URI``; ``KEEL_ARTIFACTS_URI``,
``KEEL_INFERENCE_URI``), else what the tracking URI's server says through discovery (asked once
per URI and process), else the tracking URI itself.
"""

from __future__ import annotations

import os
import threading

from keel._transport import get_tracking_uri, parse_target, transport
from keel.discovery.v1 import discovery_pb2, discovery_pb2_grpc
from keel.exceptions import InvalidArgument, Unimplemented

SERVICES = ("tracking", "registry", "artifacts", "inference")
URI_VARIABLES = {"registry": "KEEL_REGISTRY_URI", "artifacts": "KEEL_ARTIFACTS_URI", "inference": "KEEL_INFERENCE_URI"}
DISCOVERY_TIMEOUT_S = 10.0

_lock = threading.Lock()
_explicit: dict[str, str] = {}
_discovered: dict[str, dict[str, str]] = {}


def set_service_uri(service: str, uri: str | None) -> None:
    """Sends ``service``'s calls to ``uri`` in this process (None: back to discovery)."""
    if service not in URI_VARIABLES:
        raise InvalidArgument(
            f"no URI can be set for service {service!r}; choose one of {', '.join(URI_VARIABLES)}",
            reason="INVALID_SERVICE",
        )
    if uri is None:
        _explicit.pop(service, None)
        return
    parse_target(uri)  # validate now, not at the first call
    _explicit[service] = uri


def set_registry_uri(uri: str | None) -> None:
    """MLflow's ``set_registry_uri``: the registry's calls go to ``uri``."""
    set_service_uri("registry", uri)


def explicit_uri(service: str) -> str:
    """The URI set for ``service`` in this process or by its variable ('' when none)."""
    return _explicit.get(service) or os.environ.get(URI_VARIABLES.get(service, ""), "")


def get_registry_uri() -> str:
    """The registry URI: the explicit one, else ``KEEL_REGISTRY_URI``, else the tracking URI."""
    return explicit_uri("registry") or get_tracking_uri()


def service_uri(service: str, tracking_uri: str) -> str:
    """Where ``service``'s calls go for a client of ``tracking_uri``."""
    if service == "tracking":
        return tracking_uri
    return explicit_uri(service) or discover(tracking_uri).get(service) or tracking_uri


def discover(uri: str) -> dict[str, str]:
    """{service: URI} as the server at ``uri`` reports them (only the services it knows).

    A server without discovery (older keel) answers UNIMPLEMENTED: everything is then taken to
    be at ``uri``. Other failures (the server is down) raise, as the call itself would.
    """
    found = _discovered.get(uri)
    if found is not None:
        return found
    client = transport(uri)
    stub = client.stub(discovery_pb2_grpc.DiscoveryServiceStub)
    try:
        response = client.call(
            stub.GetServiceAddresses,
            discovery_pb2.GetServiceAddressesRequest(),
            idempotent=True,
            timeout=DISCOVERY_TIMEOUT_S,
        )
    except Unimplemented:
        addresses: dict[str, str] = {}
    else:
        addresses = {e.service: uri if e.local else e.address for e in response.services if e.local or e.address}
    with _lock:
        return _discovered.setdefault(uri, addresses)


def forget_discovered() -> None:
    """Drops what discovery said (the next call of each URI asks again)."""
    with _lock:
        _discovered.clear()


__all__ = [
    "SERVICES",
    "URI_VARIABLES",
    "discover",
    "forget_discovered",
    "get_registry_uri",
    "service_uri",
    "set_registry_uri",
    "set_service_uri",
]
