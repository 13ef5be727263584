"""Tracking methods of `keel.Client` (being built)."""

from __future__ import annotations

from keel._transport import Transport


class TrackingClientMixin:
    _transport: Transport
