"""Turning a deployment's model URI into "which version now" and into local files.

Two implementations of one small interface:

* ``StoreResolver`` (inside ``keel server``): ``models:/`` through the registry store and
  ``runs:/`` through the tracking store, in-process over the shared database; files come from
  the server's artifact store (``app.artifact_store``), streamed into a local cache folder.
* ``ClientResolver`` (``keel models serve``, no database): a local path is used in place;
  ``models:/`` is resolved by the registry's ``ResolveModelUri`` RPC at ``KEEL_TRACKING_URI``
  and downloaded through the SDK.

``resolve`` is cheap and is what the poller calls every few seconds; ``fetch`` runs only when
the answer changes.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol
from urllib.parse import unquote, urlparse

from keel_server.common.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
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
    """Shape check at CreateDeployment time, so a typo is an error rather than a FAILED state."""
    from keel.exceptions import KeelError as SdkError
    from keel.models.uri import parse_models_uri

    if not model_uri.strip():
        raise InvalidArgument(
            "model_uri is empty: give models:/<name>/<version|stage|latest>, models:/<name>@<alias>, "
            "runs:/<run_id>/<path> or a path",
            reason="INVALID_MODEL_URI",
            field="model_uri",
        )
    scheme = urlparse(model_uri).scheme
    if scheme == "models":
        try:
            parse_models_uri(model_uri)
        except SdkError as exc:
            raise InvalidArgument(exc.message, reason="INVALID_MODEL_URI", field="model_uri") from None
    elif scheme == "runs":
        run_id, _, path = model_uri[len("runs:") :].lstrip("/").partition("/")
        if not run_id or not path.strip("/"):
            raise InvalidArgument(
                f"invalid model URI {model_uri!r}: expected runs:/<run_id>/<path>",
                reason="INVALID_MODEL_URI",
                field="model_uri",
            )
    elif scheme not in ("", "file", "s3"):
        raise InvalidArgument(
            f"unsupported model URI scheme {scheme!r} in {model_uri!r}: use models:/, runs:/, s3:// or a path",
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

        run_id, _, path = uri[len("runs:") :].lstrip("/").partition("/")
        run = TrackingStore(lambda: self._app.artifact_store.root_uri).get_run(run_id)
        return f"{run.info.artifact_uri.rstrip('/')}/{path.strip('/')}"

    def fetch(self, resolution: Resolution, dest: str) -> str:
        path = local_path(resolution.artifact_uri)
        if path is not None:
            if not os.path.isdir(path):
                raise NotFound(f"model directory {path!r} does not exist", reason="MODEL_NOT_FOUND")
            return path
        store = self._app.artifact_store
        base = resolution.artifact_uri.rstrip("/")
        os.makedirs(dest, exist_ok=True)
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
                os.makedirs(os.path.dirname(target), exist_ok=True)
                _, chunks = store.open_reader(f"{base}/{info.path}")
                with open(target, "wb") as f:
                    for chunk in chunks:
                        f.write(chunk)
            if not cursor:
                break
        if count == 0:
            raise NotFound(f"no model files at {base}", reason="MODEL_NOT_FOUND")
        return dest


class ClientResolver:
    """Resolution through a keel server's API (``keel models serve`` with a remote URI)."""

    def __init__(self, tracking_uri: str | None = None) -> None:
        self._tracking_uri = tracking_uri

    def resolve(self, model_uri: str) -> Resolution:
        local = _resolve_local(model_uri)
        if local is not None:
            return local
        if urlparse(model_uri).scheme != "models":
            return Resolution("", 0, model_uri)
        from keel._transport import transport
        from keel.registry.v1 import registry_pb2, registry_pb2_grpc

        t = transport(self._tracking_uri)
        reply = t.call(
            t.stub(registry_pb2_grpc.ModelRegistryServiceStub).ResolveModelUri,
            registry_pb2.ResolveModelUriRequest(model_uri=model_uri),
            idempotent=True,
        )
        return Resolution(reply.model_version.name, int(reply.model_version.version), reply.artifact_uri)

    def fetch(self, resolution: Resolution, dest: str) -> str:
        path = local_path(resolution.artifact_uri)
        if path is not None:
            return path
        from keel import artifacts

        if self._tracking_uri:
            import keel

            keel.set_tracking_uri(self._tracking_uri)
        os.makedirs(dest, exist_ok=True)
        return str(artifacts.download_artifacts(artifact_uri=resolution.artifact_uri, dst_path=dest))


def remove_quietly(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)
