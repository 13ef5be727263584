"""Model URIs, resolved in one place for every loader.

Forms: a local path, ``file://``, ``runs:/<run_id>/<path>``, ``models:/<name>/<version>``,
``models:/<name>/latest``, ``models:/<name>/<Stage>``, ``models:/<name>@<alias>`` and
``s3://bucket/key``.  Local forms resolve in place; the others are downloaded into a fresh
temporary directory that the caller owns (it is not deleted: a loaded model may keep reading
files such as pyfunc artifacts from it).
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from urllib.parse import unquote, urlparse
from urllib.request import url2pathname

from keel.exceptions import InvalidArgument, NotFound

STAGES = ("None", "Staging", "Production", "Archived")
MAX_VERSION = 2**63 - 1  # version numbers are 64-bit, as on the server
_ALIAS_RE = re.compile(r"^[A-Za-z0-9_\-]+$")
_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


@dataclass(frozen=True)
class ModelsUri:
    """A parsed ``models:/`` URI; exactly one of version, stage, alias and latest is set."""

    name: str
    version: int | None = None
    stage: str | None = None
    alias: str | None = None
    latest: bool = False


def _bad(uri: str, part: str) -> InvalidArgument:
    return InvalidArgument(
        f"invalid model URI {uri!r}: {part}; expected models:/<name>/<version>, models:/<name>/latest, "
        f"models:/<name>/<stage> or models:/<name>@<alias>",
        reason="INVALID_MODEL_URI",
    )


def parse_models_uri(uri: str) -> ModelsUri:
    """Parse ``models:/...``; every malformed part is reported locally, before any RPC."""
    if not uri.startswith("models:"):
        raise _bad(uri, "the scheme is not 'models:'")
    rest = uri[len("models:") :]
    if rest.startswith("//"):
        raise _bad(uri, "use one slash after 'models:' (models:/<name>/...), not a host part")
    body = rest.lstrip("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        if not name.strip():
            raise _bad(uri, "the model name is empty")
        if "/" in name:
            raise _bad(uri, f"the model name {name!r} contains '/'")
        if not alias:
            raise _bad(uri, "the alias after '@' is empty")
        if not _ALIAS_RE.match(alias):
            raise _bad(uri, f"the alias {alias!r} may only hold letters, digits, '_' and '-'")
        return ModelsUri(name=name, alias=alias)
    parts = body.split("/")
    if len(parts) != 2:
        if len(parts) == 1 and parts[0].strip():
            raise _bad(uri, f"no version, stage or alias after the model name {parts[0]!r}")
        if not parts[0].strip():
            raise _bad(uri, "the model name is empty")
        raise _bad(uri, f"too many path parts after the model name {parts[0]!r}")
    name, suffix = parts
    if not name.strip():
        raise _bad(uri, "the model name is empty")
    if not suffix:
        raise _bad(uri, f"the version or stage after {name!r} is empty")
    if suffix.isascii() and suffix.isdigit():
        # Never int() an over-long digit string: CPython refuses more than 4,300 digits.
        digits = suffix.lstrip("0")
        shown = suffix if len(suffix) <= 40 else f"{suffix[:20]}...{suffix[-8:]} ({len(suffix):,} digits)"
        if not digits:
            raise _bad(uri, f"version {shown} is not a positive number")
        if len(digits) > len(str(MAX_VERSION)) or int(digits) > MAX_VERSION:
            raise _bad(uri, f"version {shown} is out of range: version numbers are 1..{MAX_VERSION} (64-bit)")
        return ModelsUri(name=name, version=int(digits))
    if suffix.lower() == "latest":
        return ModelsUri(name=name, latest=True)
    for stage in STAGES:
        if suffix.lower() == stage.lower():
            return ModelsUri(name=name, stage=stage)
    raise _bad(uri, f"{suffix!r} is neither a version number, 'latest' nor a stage ({', '.join(STAGES)})")


def _parse_runs_uri(uri: str) -> tuple[str, str]:
    body = uri[len("runs:") :]
    if body.startswith("//"):
        raise InvalidArgument(
            f"invalid model URI {uri!r}: use runs:/<run_id>/<path> (one slash)", reason="INVALID_MODEL_URI"
        )
    run_id, _, path = body.lstrip("/").partition("/")
    if not run_id:
        raise InvalidArgument(
            f"invalid model URI {uri!r}: the run id is empty; expected runs:/<run_id>/<path>",
            reason="INVALID_MODEL_URI",
        )
    return run_id, path.strip("/")


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


def _download(artifact_uri: str) -> str:
    from keel import artifacts  # the artifact SDK is imported only when something is remote

    dst = tempfile.mkdtemp(prefix="keel-model-")
    return str(artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=dst))


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
    if scheme == "runs":
        _parse_runs_uri(uri)  # parse errors are local
        return _download(uri)
    if scheme == "models":
        parse_models_uri(uri)
        from keel.client import Client

        # the registry turns name + version/stage/alias into the version's artifact location
        return _download(Client().resolve_model_uri(uri))
    if scheme == "s3":
        if not urlparse(uri).netloc:
            raise InvalidArgument(
                f"invalid model URI {uri!r}: the bucket is empty; expected s3://<bucket>/<key>",
                reason="INVALID_MODEL_URI",
            )
        return _download(uri)
    raise InvalidArgument(
        f"unsupported model URI scheme {scheme!r} in {uri!r}: use a local path, file://, runs:/, models:/ or s3://",
        reason="INVALID_MODEL_URI",
    )
