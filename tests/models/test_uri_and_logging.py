"""Model URI parsing/resolution and log_model's calls into the SDK, with the remote pieces
(registry client, artifact download, fluent run API) replaced by fakes.  The same flows
against a real server belong in the server-marked suite."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import yaml

import keel
import keel.artifacts
import keel.client
import keel.pyfunc
import keel.sklearn
from keel.exceptions import InvalidArgument, NotFound
from keel.models.uri import ModelsUri, parse_models_uri, resolve_model_uri

# -- parsing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "parsed"),
    [
        ("models:/churn/3", ModelsUri("churn", version=3)),
        ("models:/churn/latest", ModelsUri("churn", latest=True)),
        ("models:/churn/Production", ModelsUri("churn", stage="Production")),
        ("models:/churn/staging", ModelsUri("churn", stage="Staging")),
        ("models:/churn@champion", ModelsUri("churn", alias="champion")),
        ("models:/simple-cnn classifier/1", ModelsUri("simple-cnn classifier", version=1)),
    ],
)
def test_parse_models_uri(uri: str, parsed: ModelsUri) -> None:
    assert parse_models_uri(uri) == parsed


@pytest.mark.parametrize(
    ("uri", "part"),
    [
        ("models:/", "the model name is empty"),
        ("models://3", "use one slash after 'models:'"),
        ("models:/churn", "no version, stage or alias after the model name 'churn'"),
        ("models:/churn/", "the version or stage after 'churn' is empty"),
        ("models:/churn/Prod", "'Prod' is neither a version number, 'latest' nor a stage"),
        ("models:/churn/0", "version 0 is not a positive number"),
        ("models:/churn/1/extra", "too many path parts after the model name 'churn'"),
        ("models:/@champion", "the model name is empty"),
        ("models:/churn@", "the alias after '@' is empty"),
        ("models:/churn@a/b", "the alias 'a/b' may only hold letters, digits, '_' and '-'"),
    ],
)
def test_malformed_models_uri_says_which_part(uri: str, part: str) -> None:
    with pytest.raises(InvalidArgument) as e:
        resolve_model_uri(uri)
    assert e.value.reason == "INVALID_MODEL_URI"
    assert f"invalid model URI {uri!r}: {part}" in e.value.message


def test_other_uri_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="the run id is empty"):
        resolve_model_uri("runs:/")
    with pytest.raises(InvalidArgument, match="one slash"):
        resolve_model_uri("runs://abc/model")
    with pytest.raises(InvalidArgument, match="the bucket is empty"):
        resolve_model_uri("s3:///key")
    with pytest.raises(InvalidArgument, match="unsupported model URI scheme 'gs'"):
        resolve_model_uri("gs://bucket/model")
    with pytest.raises(NotFound, match="does not exist"):
        resolve_model_uri(str(tmp_path / "missing"))
    with pytest.raises(NotFound, match="does not exist"):
        resolve_model_uri((tmp_path / "missing").as_uri())


def test_local_and_file_uris_resolve_in_place(tmp_path: Path) -> None:
    d = tmp_path / "a dir"
    d.mkdir()
    assert resolve_model_uri(str(d)) == str(d)
    assert resolve_model_uri(d.as_uri()) == str(d)  # percent-encoded space
    assert resolve_model_uri(f"file://localhost{d}") == str(d)


# -- remote resolution through the SDK (faked) -------------------------------------------


@pytest.fixture()
def saved_model(tmp_path: Path, classifier) -> Path:
    keel.sklearn.save_model(classifier, str(tmp_path / "store" / "model"))
    return tmp_path / "store" / "model"


@pytest.fixture()
def fake_remote(monkeypatch: pytest.MonkeyPatch, saved_model: Path) -> list[tuple[str, Any]]:
    calls: list[tuple[str, Any]] = []

    class FakeClient:
        def resolve_model_uri(self, uri: str) -> str:
            calls.append(("resolve", uri))
            if "missing" in uri:
                raise NotFound("registered model 'missing' not found", reason="REGISTERED_MODEL_NOT_FOUND")
            return "runs:/abc123/model"

    def download_artifacts(artifact_uri: str, dst_path: str) -> str:
        calls.append(("download", artifact_uri))
        target = Path(dst_path) / "model"
        shutil.copytree(saved_model, target)
        return str(target)

    monkeypatch.setattr(keel.client, "Client", FakeClient)
    monkeypatch.setitem(vars(keel.artifacts), "download_artifacts", download_artifacts)
    return calls


@pytest.mark.parametrize(
    "uri", ["models:/churn/1", "models:/churn/latest", "models:/churn/Production", "models:/churn@champion"]
)
def test_models_uri_resolves_through_registry_then_downloads(
    fake_remote, uri: str, tabular, classifier
) -> None:
    X, _ = tabular
    model = keel.sklearn.load_model(uri)
    np.testing.assert_array_equal(model.predict(X), classifier.predict(X))
    assert fake_remote == [("resolve", uri), ("download", "runs:/abc123/model")]


def test_runs_and_s3_uris_download_directly(fake_remote) -> None:
    for uri in ("runs:/abc123/model", "s3://bucket/models/m"):
        local = resolve_model_uri(uri)
        assert (Path(local) / "MLmodel").is_file()
    assert fake_remote == [("download", "runs:/abc123/model"), ("download", "s3://bucket/models/m")]


def test_registry_errors_propagate(fake_remote) -> None:
    with pytest.raises(NotFound, match="registered model 'missing' not found"):
        keel.pyfunc.load_model("models:/missing/1")


# -- log_model ---------------------------------------------------------------------------


@pytest.fixture()
def fake_tracking(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, Any]:
    state: dict[str, Any] = {"active": None, "logged": [], "registered": []}
    store = tmp_path / "artifact-store"

    def active_run() -> Any:
        return state["active"]

    def start_run() -> Any:
        state["active"] = SimpleNamespace(info=SimpleNamespace(run_id="run42"))
        return state["active"]

    def log_artifacts(local_dir: str, artifact_path: str | None = None) -> None:
        shutil.copytree(local_dir, store / (artifact_path or ""))
        state["logged"].append(artifact_path)

    def register_model(model_uri: str, name: str) -> Any:
        state["registered"].append((model_uri, name))
        return SimpleNamespace(name=name, version="3")

    for name, fn in [
        ("active_run", active_run),
        ("start_run", start_run),
        ("log_artifacts", log_artifacts),
        ("register_model", register_model),
    ]:
        # set in the module dict: keel's lazy __getattr__ would import the real fluent module
        monkeypatch.setitem(vars(keel), name, fn)
    state["store"] = store
    return state


def test_log_model_starts_a_run_logs_and_registers(fake_tracking, classifier, tabular) -> None:
    X, _ = tabular
    info = keel.sklearn.log_model(classifier, "model", input_example=X.head(2), registered_model_name="churn")
    assert info.run_id == "run42" and info.model_uri == "runs:/run42/model" and info.artifact_path == "model"
    assert info.registered_model_version == 3
    assert info.signature is not None and set(info.flavors) == {"sklearn", "python_function"}
    assert fake_tracking["registered"] == [("runs:/run42/model", "churn")]
    mlmodel = yaml.safe_load((fake_tracking["store"] / "model" / "MLmodel").read_text())
    assert mlmodel["run_id"] == "run42" and mlmodel["artifact_path"] == "model"
    assert mlmodel["model_uuid"] == info.model_uuid


def test_log_model_uses_the_active_run_and_skips_registration(fake_tracking) -> None:
    import torch

    fake_tracking["active"] = SimpleNamespace(info=SimpleNamespace(run_id="existing"))
    info = keel.pytorch.log_model(torch.nn.Linear(2, 1), "nets/linear")
    assert info.run_id == "existing" and info.registered_model_version is None
    assert fake_tracking["registered"] == [] and fake_tracking["logged"] == ["nets/linear"]


def test_pyfunc_log_model(fake_tracking) -> None:
    class Const(keel.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
            return 1

    info = keel.pyfunc.log_model("const", python_model=Const(), registered_model_name="const")
    assert info.model_uri == "runs:/run42/const" and info.registered_model_version == 3


def test_log_model_rejects_escaping_artifact_paths(fake_tracking, classifier) -> None:
    for bad in ("", "/abs", "../up"):
        with pytest.raises(InvalidArgument, match="must be a relative path"):
            keel.sklearn.log_model(classifier, bad)
