"""``keel.Client``: the explicit, MLflow-``MlflowClient``-shaped facade over every service.

Each service's methods live in their own mixin module; this class only composes them, each
over the transport of the address its service runs at (see ``keel._routing``).
"""

from __future__ import annotations

from keel._artifacts_client import ArtifactsClientMixin
from keel._inference_client import InferenceClientMixin
from keel._registry_client import RegistryClientMixin
from keel._routing import service_uri
from keel._tracking_client import TrackingClientMixin
from keel._transport import Transport, get_tracking_uri, resolve_tracking_uri, transport


class Client(TrackingClientMixin, ArtifactsClientMixin, RegistryClientMixin, InferenceClientMixin):
    """A client of one keel server (``grpc://host:port``, or ``http://host:port`` of its MLflow
    port; default: the current tracking URI). MLflow's name for it: ``MlflowClient``."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        # an http:// URI (a keel server's MLflow port) becomes the grpc:// URI it names
        self.tracking_uri = resolve_tracking_uri(tracking_uri) if tracking_uri else get_tracking_uri()
        self._transport: Transport = transport(self.tracking_uri)
        self._transports: dict[str, Transport] = {"tracking": self._transport}

    def _service_transport(self, service: str) -> Transport:
        """The transport of ``service`` (tracking, registry, artifacts or inference), found on
        first use: an explicit URI for it, else discovery through the tracking URI."""
        found = self._transports.get(service)
        if found is None:
            found = self._transports[service] = transport(service_uri(service, self.tracking_uri))
        return found


# MLflow's name for the same facade: ``from keel.client import MlflowClient``.
MlflowClient = Client

__all__ = ["Client", "MlflowClient"]
