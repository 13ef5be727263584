"""``keel.Client``: the explicit, MLflow-``MlflowClient``-shaped facade over every service.

Each service's methods live in their own mixin module; this class only composes them over one
transport.
"""

from __future__ import annotations

from keel._artifacts_client import ArtifactsClientMixin
from keel._inference_client import InferenceClientMixin
from keel._registry_client import RegistryClientMixin
from keel._tracking_client import TrackingClientMixin
from keel._transport import Transport, get_tracking_uri, transport


class Client(TrackingClientMixin, ArtifactsClientMixin, RegistryClientMixin, InferenceClientMixin):
    """A client of one keel server (``grpc://host:port``; default: the current tracking URI)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self.tracking_uri = tracking_uri or get_tracking_uri()
        self._transport: Transport = transport(self.tracking_uri)
