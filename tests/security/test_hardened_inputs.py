"""Issue #14, hardened inputs: the classes of MLflow's CVE-2023-1177, -2356, -2780, -6909,
CVE-2024-1558, -1560, -1593 and -3573, each refused with a precise error, through a real
in-process server on the local store and on a real S3 server.

- A model version ``source`` is ``runs:/``, ``models:/`` or a URI inside the server's artifact
  store: a bare local path, ``file:///etc/passwd``, another host, bucket or scheme is refused,
  and no version number is used up.
- Sources, artifact paths and artifact URIs are percent-decoded until stable (at most 8 rounds)
  and refused (INVALID_ARGUMENT ``UNSAFE_PATH``, ``metadata["rule"]`` naming the rule) when any
  spelling has a ``..`` segment, a NUL or control character, a backslash, ``#``, ``;``, a drive
  prefix or (for a relative path) a leading ``/``: on every RPC of ``keel.artifacts.v1`` that
  takes a path or a URI, and nothing is written.
- What the SDK (and the server's model cache) creates on disk is private: folders 0700, files
  0600; a folder the user gave keeps its mode.
"""

from __future__ import annotations

import contextlib
import os
import stat
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from backends import make_database_url, make_s3_bucket
from server_fixtures import ServerHandle, running_server, s3_settings

import keel
import keel.artifacts
from keel.artifacts.v1 import artifacts_pb2 as pb
from keel.artifacts.v1 import artifacts_pb2_grpc
from keel.exceptions import InvalidArgument, KeelError, from_rpc_error
from keel.models.uri import resolve_model_uri
from keel_server.common.paths import MAX_DECODE_ROUNDS

MODEL_FILES = {"MLmodel": "flavors: {}\n", "weights.bin": "w1"}


def _encoded(text: str, times: int) -> str:
    """``text`` percent-encoded ``times`` times, every character (even '.', which
    ``urllib.parse.quote`` leaves alone) the first time."""
    text = "".join(f"%{b:02x}" for b in text.encode())
    for _ in range(times - 1):
        text = urllib.parse.quote(text, safe="")
    return text


@dataclass
class World:
    """A server, one run with ``model/`` and ``notes/`` files, another run, a registered model."""

    kind: str  # "local" or "s3"
    handle: ServerHandle
    client: keel.Client
    s3: dict[str, Any] | None
    run_id: str
    other_run_id: str
    model: str

    @property
    def store(self) -> Any:
        assert self.handle.running is not None
        return self.handle.running.app.artifact_store

    @property
    def root(self) -> str:
        return str(self.store.root_uri)

    @property
    def run_root(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    @property
    def stub(self) -> artifacts_pb2_grpc.ArtifactServiceStub:
        return artifacts_pb2_grpc.ArtifactServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.handle.port}"))

    def files(self) -> dict[str, int]:
        """Every file in the store and its size, read through the store itself."""
        found: dict[str, int] = {}
        cursor = ""
        for _ in range(1000):
            page, cursor = self.store.list_entries(self.root, recursive=True, cursor=cursor, limit=1000)
            found.update((e.path, e.size) for e in page)
            if not cursor:
                return found
        raise AssertionError("the store listing never ended")

    def versions(self) -> list[int]:
        return sorted(int(v.version) for v in self.client.search_model_versions(f"name = '{self.model}'"))


@contextlib.contextmanager
def _server(kind: str, folder: Path) -> Iterator[tuple[ServerHandle, dict[str, Any] | None]]:
    with make_database_url("sqlite", folder) as db_url, contextlib.ExitStack() as stack:
        if kind == "s3":
            s3 = stack.enter_context(make_s3_bucket())
            handle = stack.enter_context(running_server(db_url, s3["artifact_uri"], **s3_settings(s3)))
            yield handle, s3
        else:
            with running_server(db_url, f"file://{folder}/artifacts") as handle:
                yield handle, None


@pytest.fixture(scope="module", params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with _server(request.param, tmp_path_factory.mktemp(f"hardened-{request.param}")) as (handle, s3):
        client = keel.Client(handle.uri)
        experiment = client.create_experiment(f"hardened-{uuid.uuid4().hex[:8]}")
        run_id = client.create_run(experiment).info.run_id
        for name, text in MODEL_FILES.items():
            client.log_text(run_id, text, f"model/{name}")
        client.log_text(run_id, "a", "notes/a.txt")
        other = client.create_run(experiment).info.run_id
        client.log_text(other, "secret", "notes/secret.txt")
        model = f"hardened-{uuid.uuid4().hex[:8]}"
        client.create_registered_model(model)
        assert client.create_model_version(model, f"runs:/{run_id}/model").status == "READY"
        yield World(request.param, handle, client, s3, run_id, other, model)


def _refused(call: Callable[[], object]) -> KeelError:
    try:
        call()
    except KeelError as exc:
        return exc
    except grpc.RpcError as exc:
        return from_rpc_error(exc)
    raise AssertionError("the call was accepted")


# ------------------------------------------------------------------ model version sources
def test_legit_sources_still_register(world: World) -> None:
    root = world.run_root
    sources = [f"runs:/{world.run_id}/model", f"{root}/model", f"models:/{world.model}/1"]
    if world.kind == "local":
        sources.append("file://localhost" + root[len("file://") :] + "/model")
    for source in sources:
        version = world.client.create_model_version(world.model, source)
        assert version.status == "READY", (source, version.status_message)
        local = Path(resolve_model_uri_via(world, f"models:/{world.model}/{version.version}"))
        assert sorted(p.name for p in local.iterdir()) == sorted(MODEL_FILES), source


def resolve_model_uri_via(world: World, uri: str) -> str:
    keel.set_tracking_uri(world.handle.uri)
    return resolve_model_uri(uri)


# (label, source as a function of the world, {store kind: (error, reason, rule or "")})
_ANY = ("local", "s3")
SOURCE_CASES: list[tuple[str, Callable[[World], str], dict[str, tuple[type[KeelError], str, str]]]] = [
    # CVE-2023-1177 / CVE-2024-3573: a local file of the server, by absolute or bare path.
    (
        "file:///etc/passwd",
        lambda w: "file:///etc/passwd",
        {
            "local": (InvalidArgument, "SOURCE_OUTSIDE_STORE", ""),
            "s3": (InvalidArgument, "INVALID_ARTIFACT_URI", ""),
        },
    ),
    (
        "bare absolute path",
        lambda w: "/etc/passwd",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    (
        "bare relative path",
        lambda w: "model",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    (
        "empty scheme",
        lambda w: "://etc/passwd",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    (
        "windows path",
        lambda w: "C:\\Users\\x\\model",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    # Another host, bucket or scheme.
    (
        "file URI of another host",
        lambda w: "file://otherhost/etc/passwd",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    (
        "file URI of a host named like the root",
        lambda w: "file://" + w.root[len("file:///") :] + "/x" if w.kind == "local" else "file://artifacts/x",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    (
        "another bucket",
        lambda w: "s3://some-other-bucket/artifacts/model",
        {
            "local": (InvalidArgument, "INVALID_ARTIFACT_URI", ""),
            "s3": (InvalidArgument, "SOURCE_OUTSIDE_STORE", ""),
        },
    ),
    (
        "same bucket, outside the prefix",
        lambda w: f"s3://{w.s3['bucket']}/elsewhere/model" if w.s3 else "file:///tmp/x",
        dict.fromkeys(_ANY, (InvalidArgument, "SOURCE_OUTSIDE_STORE", "")),
    ),
    (
        "http URL of the store's endpoint",
        lambda w: f"{w.s3['endpoint_url'] if w.s3 else 'http://127.0.0.1:9000'}/b/model",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    (
        "https URL",
        lambda w: "https://example.org/model",
        dict.fromkeys(_ANY, (InvalidArgument, "INVALID_ARTIFACT_URI", "")),
    ),
    # Each spelling rule (CVE-2023-2356, -2780, -6909, CVE-2024-1558, -1560, -1593).
    (
        "'..' segment",
        lambda w: f"runs:/{w.run_id}/model/../../../{w.other_run_id}/artifacts/notes",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "DOT_DOT_SEGMENT")),
    ),
    (
        "'..' encoded once",
        lambda w: f"{w.run_root}/%2e%2e/%2e%2e/{w.other_run_id}/artifacts/notes",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "DOT_DOT_SEGMENT")),
    ),
    (
        "'../' encoded twice",
        lambda w: f"runs:/{w.run_id}/model%252f..%252f..%252f{w.other_run_id}",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "DOT_DOT_SEGMENT")),
    ),
    (
        "NUL",
        lambda w: f"runs:/{w.run_id}/model%00",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "CONTROL_CHARACTER")),
    ),
    (
        "control character",
        lambda w: f"runs:/{w.run_id}/mo\ndel",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "CONTROL_CHARACTER")),
    ),
    (
        "backslash",
        lambda w: f"runs:/{w.run_id}/model\\..\\..\\x",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "BACKSLASH")),
    ),
    (
        "encoded backslash",
        lambda w: f"{w.run_root}/model%5c..%5c..",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "BACKSLASH")),
    ),
    (
        "'#' hiding '../'",
        lambda w: f"{w.run_root}/model#/../../{w.other_run_id}",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "FRAGMENT")),
    ),
    (
        "encoded '#'",
        lambda w: f"runs:/{w.run_id}/model%23x",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "FRAGMENT")),
    ),
    (
        "';' path parameters",
        lambda w: f"{w.run_root}/model/..;/..;/{w.other_run_id}",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "PATH_PARAMETER")),
    ),
    (
        "drive prefix",
        lambda w: f"runs:/{w.run_id}/C:/Windows",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "DRIVE_PREFIX")),
    ),
    (
        "absolute path in runs:/",
        lambda w: f"runs:/{w.run_id}/%2fetc%2fpasswd",
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "ABSOLUTE_PATH")),
    ),
    (
        "never settles when decoded",
        lambda w: f"runs:/{w.run_id}/model/" + _encoded("..", MAX_DECODE_ROUNDS + 1),
        dict.fromkeys(_ANY, (InvalidArgument, "UNSAFE_PATH", "ENCODING")),
    ),
]


@pytest.mark.parametrize(("label", "make", "expected"), SOURCE_CASES, ids=[c[0] for c in SOURCE_CASES])
def test_unsafe_source_is_refused_and_uses_no_number(
    world: World,
    label: str,
    make: Callable[[World], str],
    expected: dict[str, tuple[type[KeelError], str, str]],
) -> None:
    error, reason, rule = expected[world.kind]
    source = make(world)
    files, versions = world.files(), world.versions()
    err = _refused(lambda: world.client.create_model_version(world.model, source))
    assert type(err) is error and err.reason == reason, (label, err)
    if error is InvalidArgument:
        assert err.field == "source", (label, err.field)
    if rule:
        assert err.metadata["rule"] == rule, (label, err.metadata)
        assert "refused" in err.message and "source" in err.message
    assert world.files() == files, f"{label} wrote to the store"
    assert world.versions() == versions, f"{label} left a version behind"
    # No number was used up: the next registration takes the next one.
    assert (
        int(world.client.create_model_version(world.model, f"runs:/{world.run_id}/model").version)
        == versions[-1] + 1
    )


def test_eight_encodings_are_decoded_and_nine_refused(world: World) -> None:
    """The bound: a spelling that settles within 8 rounds is checked (and here refused for its
    '..'); one that still changes after 8 rounds is refused as ENCODING."""
    within = f"runs:/{world.run_id}/model/" + _encoded("..", MAX_DECODE_ROUNDS)
    err = _refused(lambda: world.client.create_model_version(world.model, within))
    assert err.reason == "UNSAFE_PATH" and err.metadata["rule"] == "DOT_DOT_SEGMENT"
    assert err.metadata["decode_rounds"] == str(MAX_DECODE_ROUNDS)
    beyond = f"runs:/{world.run_id}/model/" + _encoded("..", MAX_DECODE_ROUNDS + 1)
    err = _refused(lambda: world.client.create_model_version(world.model, beyond))
    assert err.reason == "UNSAFE_PATH" and err.metadata["rule"] == "ENCODING"


# ------------------------------------------------------------------ artifact RPCs
# Relative paths (the ``path`` of an ArtifactRef) that pass the shape check as written and
# break a rule once decoded, or break one of the rules that came with the hardening.
PATH_CASES = [
    ("DOT_DOT_SEGMENT", lambda w: f"notes/%2e%2e/%2e%2e/{w.other_run_id}/artifacts/notes/secret.txt"),
    ("DOT_DOT_SEGMENT", lambda w: "notes/..%252f..%252fx"),
    ("CONTROL_CHARACTER", lambda w: "notes/a%00.txt"),
    ("CONTROL_CHARACTER", lambda w: "notes/a\x01.txt"),
    ("BACKSLASH", lambda w: "notes%5c..%5c..%5cx"),
    ("FRAGMENT", lambda w: "notes/a#.txt"),
    ("FRAGMENT", lambda w: "notes/a%23.txt"),
    ("PATH_PARAMETER", lambda w: "notes/..;/..;/x"),
    ("DRIVE_PREFIX", lambda w: "C:/Windows/win.ini"),
    ("DRIVE_PREFIX", lambda w: "notes/c%3a/x"),
    ("ABSOLUTE_PATH", lambda w: "%2fetc%2fpasswd"),
    ("ENCODING", lambda w: "notes/" + _encoded(".", MAX_DECODE_ROUNDS + 1)),
]
# Artifact URIs (``artifact_uri`` of a ref, ``uri`` of ResolveArtifactUri).
URI_CASES = [
    ("DOT_DOT_SEGMENT", lambda w: f"{w.run_root}/%2e%2e/%2e%2e/{w.other_run_id}/artifacts"),
    ("DOT_DOT_SEGMENT", lambda w: f"runs:/{w.run_id}/..%2f..%2f{w.other_run_id}"),
    ("CONTROL_CHARACTER", lambda w: f"{w.run_root}/notes%00"),
    ("BACKSLASH", lambda w: f"{w.run_root}\\..\\..\\{w.other_run_id}"),
    ("FRAGMENT", lambda w: f"{w.run_root}/notes#/../../{w.other_run_id}"),
    ("PATH_PARAMETER", lambda w: f"{w.run_root}/..;/..;/{w.other_run_id}"),
    ("DRIVE_PREFIX", lambda w: f"runs:/{w.run_id}/C:/x"),
    ("ABSOLUTE_PATH", lambda w: f"runs:/{w.run_id}/%2fetc%2fpasswd"),
    ("ENCODING", lambda w: f"runs:/{w.run_id}/" + _encoded(".", MAX_DECODE_ROUNDS + 1)),
]


def _artifact_calls(
    world: World, good: pb.ArtifactRef, bad: pb.ArtifactRef, bad_uri: str
) -> dict[str, tuple[str, Callable[[], object]]]:
    """Every RPC of keel.artifacts.v1 that takes a path or URI, called with the bad one:
    name → (the field the error must name, the call)."""
    stub = world.stub
    upload_ref = (
        bad if bad.path else pb.ArtifactRef(run_id=bad.run_id, artifact_uri=bad.artifact_uri, path="x.txt")
    )
    field = "path" if bad.path else "artifact_uri"
    return {
        "UploadArtifact": (
            f"ref.{field}",
            lambda: stub.UploadArtifact(
                iter(
                    [
                        pb.UploadArtifactRequest(header=pb.UploadHeader(ref=upload_ref, size=3)),
                        pb.UploadArtifactRequest(chunk=b"bad"),
                    ]
                )
            ),
        ),
        "DownloadArtifact": (
            f"ref.{field}",
            lambda: list(stub.DownloadArtifact(pb.DownloadArtifactRequest(ref=bad))),
        ),
        "ListArtifacts": (f"ref.{field}", lambda: stub.ListArtifacts(pb.ListArtifactsRequest(ref=bad))),
        "StatArtifact": (f"ref.{field}", lambda: stub.StatArtifact(pb.StatArtifactRequest(ref=bad))),
        "DeleteArtifact": (f"ref.{field}", lambda: stub.DeleteArtifact(pb.DeleteArtifactRequest(ref=bad))),
        "CreatePresignedUrl": (
            f"ref.{field}",
            lambda: stub.CreatePresignedUrl(
                pb.CreatePresignedUrlRequest(
                    ref=upload_ref, method=pb.PRESIGN_METHOD_PUT, expires_in_seconds=60
                )
            ),
        ),
        "ResolveArtifactUri": (
            "uri",
            lambda: stub.ResolveArtifactUri(pb.ResolveArtifactUriRequest(uri=bad_uri)),
        ),
        "CopyArtifacts (source)": (
            f"source.{field}",
            lambda: stub.CopyArtifacts(
                pb.CopyArtifactsRequest(
                    source=bad, destination=pb.ArtifactRef(run_id=world.run_id, path="copied")
                )
            ),
        ),
        "CopyArtifacts (destination)": (
            f"destination.{field}",
            lambda: stub.CopyArtifacts(pb.CopyArtifactsRequest(source=good, destination=bad)),
        ),
    }


def _assert_every_rpc_refuses(world: World, rule: str, bad: pb.ArtifactRef, bad_uri: str) -> None:
    good = pb.ArtifactRef(run_id=world.run_id, path="notes")
    before = world.files()
    for name, (field, call) in _artifact_calls(world, good, bad, bad_uri).items():
        err = _refused(call)
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT, (name, err)
        assert err.reason == "UNSAFE_PATH" and err.metadata["rule"] == rule, (name, err)
        assert err.field == field, (name, err.field)
    assert world.files() == before, f"a refused call changed the store ({rule})"


@pytest.mark.parametrize(("rule", "make"), PATH_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(PATH_CASES)])
def test_unsafe_artifact_path_is_refused_by_every_rpc(
    world: World, rule: str, make: Callable[[World], str]
) -> None:
    path = make(world)
    _assert_every_rpc_refuses(
        world, rule, pb.ArtifactRef(run_id=world.run_id, path=path), f"runs:/{world.run_id}/{path}"
    )


@pytest.mark.parametrize(("rule", "make"), URI_CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(URI_CASES)])
def test_unsafe_artifact_uri_is_refused_by_every_rpc(
    world: World, rule: str, make: Callable[[World], str]
) -> None:
    uri = make(world)
    _assert_every_rpc_refuses(world, rule, pb.ArtifactRef(artifact_uri=uri), uri)


def test_raw_path_shape_errors_keep_their_reason(world: World) -> None:
    """The path rules that were there before the hardening keep INVALID_ARTIFACT_PATH."""
    for path in ("../x", "notes/../../x", "a\\b", "/etc/passwd", "a\x00b", "a//b", "./a"):
        request = pb.StatArtifactRequest(ref=pb.ArtifactRef(run_id=world.run_id, path=path))
        err = _refused(lambda r=request: world.stub.StatArtifact(r))  # type: ignore[misc]
        assert err.code == grpc.StatusCode.INVALID_ARGUMENT and err.reason == "INVALID_ARTIFACT_PATH", (
            path,
            err,
        )


def test_artifact_uri_of_another_host_or_scheme_is_refused(world: World) -> None:
    cases = ["file://otherhost/etc/passwd", "http://example.org/x", "https://example.org/x", "/etc/passwd"]
    if world.kind == "s3":
        cases.remove("file://otherhost/etc/passwd")
        cases.append("file:///etc/passwd")
    for uri in cases:
        err = _refused(lambda u=uri: world.client.stat_artifact(artifact_uri=u))  # type: ignore[misc]
        assert isinstance(err, InvalidArgument) and err.reason == "INVALID_ARTIFACT_URI", (uri, err)
        assert err.field == "ref.artifact_uri"


def test_names_with_percent_plus_and_colon_still_work(world: World, tmp_path: Path) -> None:
    """Decoding is only for checking: a name whose decoded spelling breaks no rule is stored
    and read back exactly as given."""
    names = ["notes/50%.txt", "notes/a%20b.txt", "notes/a+b.txt", "notes/model:v1.txt", "notes/100%25.txt"]
    for name in names:
        world.client.log_text(world.run_id, name, name)
    listed = {f.path for f in world.client.list_artifacts(world.run_id, "notes")}
    assert set(names) <= listed
    for name in names:
        local = world.client.download_artifacts(world.run_id, name, dst_path=str(tmp_path / uuid.uuid4().hex))
        assert Path(local).read_text() == name
        world.client.delete_artifacts(name, run_id=world.run_id)


# ------------------------------------------------------------------ private files on disk
@pytest.fixture()
def open_umask() -> Iterator[None]:
    """A permissive umask, so only keel's own modes can make what it creates private."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _assert_private_tree(top: str | Path) -> None:
    assert _mode(top) == 0o700, (top, oct(_mode(top)))
    for folder, dirs, names in os.walk(top):
        for d in dirs:
            assert _mode(os.path.join(folder, d)) == 0o700, (d, oct(_mode(os.path.join(folder, d))))
        for n in names:
            assert not n.endswith(".keel-part"), n
            assert _mode(os.path.join(folder, n)) == 0o600, (n, oct(_mode(os.path.join(folder, n))))


def test_sdk_download_temp_dirs_and_files_are_private(world: World, open_umask: None) -> None:
    default = keel.artifacts.download_artifacts(f"runs:/{world.run_id}/model", tracking_uri=world.handle.uri)
    _assert_private_tree(Path(default).parent)  # the temp folder keel made, and all inside
    local = world.client.download_artifacts(world.run_id, "model")
    _assert_private_tree(Path(local).parent)
    keel.set_tracking_uri(world.handle.uri)
    model_dir = resolve_model_uri(f"models:/{world.model}/1")
    _assert_private_tree(Path(model_dir).parent)


def test_sdk_download_folders_it_creates_are_private_and_a_given_folder_keeps_its_mode(
    world: World, tmp_path: Path, open_umask: None
) -> None:
    missing = tmp_path / "new" / "deeper"
    local = keel.artifacts.download_artifacts(
        f"runs:/{world.run_id}/model", dst_path=str(missing), tracking_uri=world.handle.uri
    )
    assert Path(local) == missing / "model"
    _assert_private_tree(tmp_path / "new")
    mine = tmp_path / "mine"
    mine.mkdir()
    os.chmod(mine, 0o755)
    local = keel.artifacts.download_artifacts(
        f"runs:/{world.run_id}/model", dst_path=str(mine), tracking_uri=world.handle.uri
    )
    assert _mode(mine) == 0o755  # the user's folder is never chmod-ed
    _assert_private_tree(local)
    single = keel.artifacts.download_artifacts(
        f"runs:/{world.run_id}/model/MLmodel", dst_path=str(mine), tracking_uri=world.handle.uri
    )
    assert _mode(single) == 0o600 and _mode(mine) == 0o755
    # A download over an existing file replaces it with a private one.
    os.chmod(single, 0o666)
    keel.artifacts.download_artifacts(
        f"runs:/{world.run_id}/model/MLmodel", dst_path=str(mine), tracking_uri=world.handle.uri
    )
    assert _mode(single) == 0o600


def test_server_model_cache_is_private(world: World, tmp_path: Path, open_umask: None) -> None:
    from keel_server.inference.resolver import Resolution, StoreResolver

    assert world.handle.running is not None
    snapshot = world.client.get_model_version_download_uri(world.model, 1)
    dest = tmp_path / "cache" / "m-1"
    local = StoreResolver(world.handle.running.app).fetch(Resolution(world.model, 1, snapshot), str(dest))
    if world.kind == "local":  # the store's own folder is used in place: nothing is created
        assert local == snapshot[len("file://") :] and not (tmp_path / "cache").exists()
        return
    assert local == str(dest)
    _assert_private_tree(tmp_path / "cache")
    assert sorted(p.name for p in dest.iterdir()) == sorted(MODEL_FILES)
