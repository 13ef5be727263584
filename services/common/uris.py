"""The shared URI grammar (``keel.shared.uris``) in server code.

The same parsers the SDK uses, so a URI the SDK refuses is refused here too and one the SDK
accepts is accepted; only the error type differs: these raise the server's own errors (made by
the interceptor's ``translate()``, the one place SDK errors become server errors), so a store
and whatever calls it (a sweeper, another store) catch one error type.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from keel.exceptions import KeelError as SdkError
from keel.shared import uris
from keel.shared.uris import INVALID_MODEL_URI, ModelsUri, RunsUri, is_runs_uri
from keel_server.common.interceptors import translate

__all__ = ["ModelsUri", "RunsUri", "is_runs_uri", "parse_models_uri", "parse_runs_uri"]

T = TypeVar("T")


def _as_server_error(parse: Callable[[], T]) -> T:
    try:
        return parse()
    except SdkError as exc:
        raise translate(exc) or exc from None  # translate() maps every SDK error


def parse_models_uri(uri: str, field: str = "model_uri") -> ModelsUri:
    """``keel.shared.uris.parse_models_uri``, raising the server's INVALID_ARGUMENT on ``field``."""
    return _as_server_error(lambda: uris.parse_models_uri(uri, field=field))


def parse_runs_uri(uri: str, reason: str = INVALID_MODEL_URI, field: str = "") -> RunsUri:
    """``keel.shared.uris.parse_runs_uri``, raising the server's INVALID_ARGUMENT (``reason``)."""
    return _as_server_error(lambda: uris.parse_runs_uri(uri, reason=reason, field=field))
