"""``keel models ...`` against a real server: the seed's script (list, versions, transition,
predict from the registry) plus describe, alias and history, as tables and as JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from registry_helpers import unique

import keel
from keel.cli import main


def _run(keel_server, capsys, *argv: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    code = main(["--tracking-uri", keel_server.uri, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_models_cli_workflow(client, keel_server, capsys, model_name, versions) -> None:
    versions(2)
    client.update_registered_model(model_name, description="SimpleCNN")

    code, out, _ = _run(keel_server, capsys, "models", "list", "--filter", f"name = '{model_name}'")
    assert code == 0 and "NAME" in out and model_name in out and "SimpleCNN" in out

    code, out, _ = _run(keel_server, capsys, "models", "transition", model_name, "1", "staging")
    assert code == 0 and "Staging" in out
    code, out, _ = _run(
        keel_server, capsys, "models", "transition", model_name, "2", "Staging", "--archive-existing"
    )
    assert code == 0

    code, out, _ = _run(keel_server, capsys, "models", "versions", model_name, "--json")
    rows = json.loads(out)
    assert [(r["version"], r["current_stage"]) for r in rows] == [("2", "Staging"), ("1", "Archived")]
    code, out, _ = _run(keel_server, capsys, "models", "versions", model_name)
    assert out.splitlines()[0].split()[:3] == ["VERSION", "STAGE", "STATUS"]

    assert _run(keel_server, capsys, "models", "alias", "set", model_name, "champion", "2")[0] == 0
    code, out, _ = _run(keel_server, capsys, "models", "describe", model_name)
    assert "champion=2" in out and "Staging=2" in out
    code, out, _ = _run(keel_server, capsys, "models", "describe", model_name, "2", "--json")
    assert json.loads(out)["aliases"] == ["champion"]

    code, _, err = _run(
        keel_server, capsys, "models", "alias", "set", model_name, "champion", "1", "--expected-version", "1"
    )
    assert code == 1 and "points at version 2" in err
    assert _run(keel_server, capsys, "models", "alias", "delete", model_name, "champion")[0] == 0

    code, out, _ = _run(keel_server, capsys, "models", "history", model_name, "--json")
    events = json.loads(out)
    assert [e["event_type"] for e in events] == [
        "ALIAS_DELETED",
        "ALIAS_SET",
        "STAGE_TRANSITION",
        "STAGE_TRANSITION",
        "STAGE_TRANSITION",
    ]
    code, out, _ = _run(keel_server, capsys, "models", "history", model_name)
    assert out.splitlines()[0].split() == ["TIME", "EVENT", "VERSION", "FROM", "TO", "ALIAS", "ACTOR"]


def test_models_cli_errors(keel_server, capsys) -> None:
    code, _, err = _run(keel_server, capsys, "models", "describe", unique("ghost"))
    assert code == 1 and "not found" in err
    code, _, err = _run(keel_server, capsys, "models", "versions", unique("ghost"))
    assert code == 1 and "not found" in err


@pytest.mark.parametrize("kind", ["json", "csv"])
def test_models_predict(client, keel_server, capsys, tmp_path, kind: str) -> None:
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    X = pd.DataFrame({"a": [1.0, 2.0, 3.0], "b": [0.0, 1.0, 0.0]})
    model = LinearRegression().fit(X, X["a"] * 2 + X["b"])
    keel.set_tracking_uri(keel_server.uri)
    with keel.start_run() as run:
        keel.sklearn.log_model(model, "model")
    name = unique("predict")
    keel.register_model(f"runs:/{run.info.run_id}/model", name)
    path = tmp_path / f"input.{kind}"
    if kind == "csv":
        X.to_csv(path, index=False)
    else:
        path.write_text(json.dumps({"dataframe_split": {"columns": ["a", "b"], "data": X.values.tolist()}}))
    code, out, err = _run(
        keel_server, capsys, "models", "predict", "-m", f"models:/{name}/1", "--input", str(path)
    )
    assert code == 0, err
    np.testing.assert_allclose(json.loads(out)["predictions"], model.predict(X))
