"""Artifacts methods of `keel.Client` (being built)."""

from __future__ import annotations

from keel._transport import Transport


class ArtifactsClientMixin:
    _transport: Transport
