"""Model URIs, resolved in one place for every loader.

Forms: a local path, ``file://``, ``runs:/<run_id>/<path>``, ``models:/<name>/<version>``,
``models:/<name>/latest``, ``models:/<name>/<Stage>``, ``models:/<name>@<alias>`` and
``s3://bucket/key``.  Local forms resolve in place; a malformed URI is refused here, before any
call (the grammar is ``keel.shared.uris``, the same the server uses). The others are fetched
through ``keel.shared.remote`` into a fresh temporary directory that the caller owns: this
module never talks to a server itself.
"""

from __future__ import annotations

import os
import re
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from keel.exceptions import InvalidArgument, NotFound
from keel.shared import remote
from keel.shared.uris import MAX_VERSION, STAGES, ModelsUri, parse_models_uri, parse_runs_uri

__all__ = ["MAX_VERSION", "STAGES", "ModelsUri", "parse_models_uri", "resolve_model_uri"]

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _local_path(uri: str) -> str | None:
    """The filesystem path of a local-path or file:// URI, or None for remote schemes."""
    if _WINDOWS_DRIVE.match(uri):
        return uri
    parsed = urlparse(uri)
    if parsed.scheme == "":
        return os.path.abspath(os.path.expanduser(uri))
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise InvalidArgument(
                f"invalid model URI {uri!r}: file:// URIs cannot name host {parsed.netloc!r}",
                reason="INVALID_MODEL_URI",
            )
        return url2pathname(unquote(parsed.path))
    return None


def resolve_model_uri(uri: str) -> str:
    """A local directory holding the model that ``uri`` names (see module docstring)."""
    if not isinstance(uri, str | os.PathLike) or not os.fspath(uri):
        raise InvalidArgument("the model URI is empty", reason="INVALID_MODEL_URI")
    uri = os.fspath(uri)
    local = _local_path(uri)
    if local is not None:
        if not os.path.exists(local):
            raise NotFound(f"model path {local!r} (from {uri!r}) does not exist", reason="MODEL_NOT_FOUND")
        return local
    scheme = urlparse(uri).scheme
    # Every parse error is local; only a well-formed URI is fetched.
    if scheme == "runs":
        parse_runs_uri(uri)
        return remote.fetch_model(uri)
    if scheme == "models":
        parse_models_uri(uri)  # the registry turns it into the version's artifact location
        return remote.fetch_model(uri)
    if scheme == "s3":
        if not urlparse(uri).netloc:
            raise InvalidArgument(
                f"invalid model URI {uri!r}: the bucket is empty; expected s3://<bucket>/<key>",
                reason="INVALID_MODEL_URI",
            )
        return remote.fetch_model(uri)
    raise InvalidArgument(
        f"unsupported model URI scheme {scheme!r} in {uri!r}: use a local path, file://, runs:/, models:/ or s3://",
        reason="INVALID_MODEL_URI",
    )
