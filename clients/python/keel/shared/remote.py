"""The seam between the model format and the network.

``keel.models.uri.resolve_model_uri`` turns local paths into directories itself; for a remote
URI (``runs:/``, ``models:/``, ``s3://``) it asks ``fetch_model`` here, and whoever can fetch
plugs in: the SDK's client layer when ``keel`` is imported (``keel._model_download``). So the
format layer and the flavors above it load remote models without importing any network client,
and the layering (exceptions < shared grammar and format < flavors < pyfunc < ... < client)
holds.
"""

from __future__ import annotations

from collections.abc import Callable

from keel.exceptions import FailedPrecondition

# A function from a remote model URI to a new local directory holding its files.
ModelFetcher = Callable[[str], str]

_plugged: list[ModelFetcher] = []


def plug_in(fetcher: ModelFetcher) -> None:
    """Makes ``fetcher`` the way remote model URIs are fetched (replacing any earlier one)."""
    _plugged[:] = [fetcher]


def fetch_model(uri: str) -> str:
    """A new local directory holding the files of the remote model URI ``uri`` (the caller owns it)."""
    if not _plugged:
        raise FailedPrecondition(
            f"cannot fetch {uri!r}: no model downloader is plugged in (importing keel plugs the SDK's in)",
            reason="NO_MODEL_DOWNLOADER",
        )
    return _plugged[0](uri)
