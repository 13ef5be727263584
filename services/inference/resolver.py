"""Turning a deployment's model URI into "which version now" and into local files.

Two implementations of one small interface:

* ``StoreResolver`` (inside ``keel server``): ``models:/`` through the registry store and
  ``runs:/`` through the tracking store, in-process over the shared database; files come from
  the server's artifact store (``app.artifact_store``), streamed into a local cache folder.
* ``ClientResolver`` (``keel models serve``, no database): a local path is used in place;
  ``models:/`` is resolved by the registry's ``ResolveModelUri`` RPC at ``KEEL_TRACKING_URI``
  and downloaded, both through the public ``keel.Client``.

``resolve`` is cheap and is what the poller calls every few seconds; ``fetch`` runs only when
the answer changes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

from keel.shared.chunks import make_private_dirs, open_private_file
from keel_server.common.errors import InvalidArgument, NotFound, quote
from keel_server.common.uris import parse_models_uri, parse_runs_uri

if TYPE_CHECKING:
    from keel import Client
    from keel_server.common.app import App

# Files of one model at most (a listing page loop bound, not a size limit).
MAX_MODEL_FILES = 100_000


@dataclass(frozen=True)
class Resolution:
    """What a model URI designates right now."""

    model_name: str  # registered model; "" for runs:/ and paths
    version: int  # registered version; 0 for runs:/ and paths
    artifact_uri: str  # where the files are (a store URI or a local path)

    @property
    def is_local(self) -> bool:
        return local_path(self.artifact_uri) is not None


class Resolver(Protocol):
    def resolve(self, model_uri: str) -> Resolution: ...

    def fetch(self, resolution: Resolution, dest: str) -> str:
        """A local directory holding the model (``dest`` when it had to be downloaded)."""
        ...


def local_path(uri: str) -> str | None:
    """The filesystem path of a plain path or ``file://`` URI; None for other schemes."""
    parsed = urlparse(uri)
    if parsed.scheme == "":
        return os.path.abspath(os.path.expanduser(uri))
    if parsed.scheme == "file":
        return unquote(parsed.path)
    return None


def check_model_uri(model_uri: str) -> None:
    """Shape check at CreateDeployment time, so a typo is an error rather than a FAILED state.
    ``models:/`` and ``runs:/`` follow the grammar the SDK and ResolveModelUri use
    (``keel.shared.uris``), so all three accept exactly the same URIs."""
    if not model_uri.strip():
        raise InvalidArgument(
            "model_uri is empty: give models:/<name>/<version|stage|latest>, models:/<name>@<alias>, "
            "runs:/<run_id>/<path> or a path",
            reason="INVALID_MODEL_URI",
            field="model_uri",
        )
    scheme = urlparse(model_uri).scheme
    if scheme == "models":
        parse_models_uri(model_uri, field="model_uri")
    elif scheme == "runs":
        if not parse_runs_uri(model_uri, field="model_uri").path.strip("/"):
            raise InvalidArgument(
                f"invalid model URI {quote(model_uri)}: no path after the run id; expected runs:/<run_id>/<path>",
                reason="INVALID_MODEL_URI",
                field="model_uri",
            )
    elif scheme not in ("", "file", "s3"):
        raise InvalidArgument(
            f"unsupported model URI scheme {scheme!r} in {quote(model_uri)}: use models:/, runs:/, s3:// or a path",
            reason="INVALID_MODEL_URI",
            field="model_uri",
        )


def _resolve_local(model_uri: str) -> Resolution | None:
    path = local_path(model_uri)
    if path is None:
        return None
    if not os.path.isdir(path):
        raise NotFound(f"model path {path!r} does not exist or is not a directory", reason="MODEL_NOT_FOUND")
    return Resolution("", 0, path)


class StoreResolver:
    """In-process resolution over the shared database and artifact store (``keel server``)."""

    def __init__(self, app: App) -> None:
        self._app = app

    def resolve(self, model_uri: str) -> Resolution:
        local = _resolve_local(model_uri)
        if local is not None:
            return local
        scheme = urlparse(model_uri).scheme
        if scheme == "models":
            from keel_server.registry.store import RegistryStore

            version, artifact_uri = RegistryStore(self._app).resolve_model_uri(model_uri)
            return Resolution(version.name, int(version.version), self._runs_to_store(artifact_uri))
        return Resolution("", 0, self._runs_to_store(model_uri))

    def _runs_to_store(self, uri: str) -> str:
        if urlparse(uri).scheme != "runs":
            return uri
        from keel_server.tracking.store import TrackingStore

        runs = parse_runs_uri(uri, field="model_uri")
        run = TrackingStore(lambda: self._app.artifact_store.root_uri).get_run(runs.run_id)
        return f"{run.info.artifact_uri.rstrip('/')}/{runs.path.strip('/')}"

    def fetch(self, resolution: Resolution, dest: str) -> str:
        path = local_path(resolution.artifact_uri)
        if path is not None:
            if not os.path.isdir(path):
                raise NotFound(f"model directory {path!r} does not exist", reason="MODEL_NOT_FOUND")
            return path
        store = self._app.artifact_store
        base = resolution.artifact_uri.rstrip("/")
        make_private_dirs(dest)  # the model cache: 0700 folders, 0600 files
        cursor, count = "", 0
        while True:
            page, cursor = store.list_entries(base, recursive=True, cursor=cursor, limit=1000)
            for info in page:
                if info.is_dir:
                    continue
                count += 1
                if count > MAX_MODEL_FILES:
                    raise InvalidArgument(
                        f"{base} holds more than {MAX_MODEL_FILES} files: not a model", reason="INVALID_MODEL"
                    )
                target = os.path.normpath(os.path.join(dest, info.path))
                if not target.startswith(os.path.normpath(dest) + os.sep):
                    raise InvalidArgument(
                        f"artifact path {info.path!r} escapes the model folder", reason="INVALID_MODEL"
                    )
                make_private_dirs(os.path.dirname(target))
                _, chunks = store.open_reader(f"{base}/{info.path}")
                with open_private_file(target) as f:
                    for chunk in chunks:
                        f.write(chunk)
            if not cursor:
                break
        if count == 0:
            raise NotFound(f"no model files at {base}", reason="MODEL_NOT_FOUND")
        return dest


class ClientResolver:
    """Resolution through a keel server's API (``keel models serve`` with a remote URI): the one
    place the server is a client of a remote keel, through the public ``keel.Client``."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._tracking_uri = tracking_uri
        self._client: Client | None = None

    def _keel(self) -> Client:
        if self._client is None:
            from keel import Client

            self._client = Client(self._tracking_uri)
        return self._client

    def resolve(self, model_uri: str) -> Resolution:
        local = _resolve_local(model_uri)
        if local is not None:
            return local
        if urlparse(model_uri).scheme != "models":
            return Resolution("", 0, model_uri)
        # ResolveModelUri answers with the READY version the URI designates now; its storage
        # location is the artifact URI the call reports (one call: no race with a stage move).
        version = self._keel().resolve_model_version(model_uri)
        return Resolution(version.name, int(version.version), version.storage_location)

    def fetch(self, resolution: Resolution, dest: str) -> str:
        path = local_path(resolution.artifact_uri)
        if path is not None:
            return path
        make_private_dirs(dest)
        return self._keel().download_artifact_uri(resolution.artifact_uri, dst_path=dest)


def remove_quietly(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
