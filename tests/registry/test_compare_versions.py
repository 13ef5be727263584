"""``Client.compare_model_versions`` and ``keel models compare`` against a real server (issue #19):
three versions whose source runs hold params, training metrics and keel.evaluate results (with
SHAP importances), one version without a source run, differences and best versions marked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from registry_helpers import unique
from sklearn.ensemble import RandomForestClassifier

import keel
from keel.cli import main
from keel.exceptions import InvalidArgument, NotFound

FEATURES = 4


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(120, FEATURES))
    return X, (X[:, 1] + 0.3 * rng.normal(size=len(X)) > 0).astype(int)


def _trained_version(client, name: str, depth: int, *, evaluate: bool = True) -> str:  # type: ignore[no-untyped-def]
    """A run that trains a forest of ``depth``, logs it and (optionally) evaluates it; the
    version registered from it."""
    X, y = _data()
    model = RandomForestClassifier(n_estimators=5, max_depth=depth, random_state=0).fit(X, y)
    with keel.start_run() as run:
        keel.log_params({"max_depth": depth, "n_estimators": 5})
        keel.log_metric("training_loss", 1.0 / depth)
        keel.log_metric("epochs", 3)
        info = keel.sklearn.log_model(model, "model")
        if evaluate:
            keel.evaluate(
                model,
                (X, y),
                model_type="classifier",
                evaluator_config={
                    "explainability_nsamples": 10,
                    "log_plots": False,
                    "log_predictions": False,
                },
            )
    return client.create_model_version(name, info.model_uri, run_id=run.info.run_id).version


@pytest.fixture()
def compared(client) -> tuple[str, list[str], str]:  # type: ignore[no-untyped-def]
    """Model with v1 (depth 1), v2 (depth 4), v3 (depth 4, not evaluated) and v4 (no source
    run: registered from v2's files in the store)."""
    keel.set_experiment(unique("compare"))
    name = unique("compared")
    client.create_registered_model(name)
    versions = [
        _trained_version(client, name, 1),
        _trained_version(client, name, 4),
        _trained_version(client, name, 4, evaluate=False),
    ]
    location = client.get_model_version_download_uri(name, versions[1])
    no_run = client.create_model_version(name, location).version
    return name, versions, no_run


def test_sdk_puts_three_versions_side_by_side(client, compared) -> None:
    name, (v1, v2, v3), _ = compared
    comparison = client.compare_model_versions(name, [v1, v2, v3])
    assert [v.version for v in comparison.versions] == [v1, v2, v3]
    assert all(v.run_id and v.note is None and v.run_status == "FINISHED" for v in comparison.versions)

    depth = comparison.row("params", "max_depth")
    assert depth.values == {v1: "1", v2: "4", v3: "4"} and depth.differs
    trees = comparison.row("params", "n_estimators")
    assert trees.values == {v1: "5", v2: "5", v3: "5"} and not trees.differs

    # training metrics and evaluation results are apart
    assert {r.key for r in comparison.metrics} == {"training_loss", "epochs"}
    assert comparison.row("metrics", "training_loss").differs
    assert not comparison.row("metrics", "epochs").differs
    evaluation = {r.key: r for r in comparison.evaluation}
    assert {"accuracy_score", "f1_score", "roc_auc", "log_loss", "example_count"} <= set(evaluation)
    accuracy = evaluation["accuracy_score"]
    assert accuracy.values[v3] is None and accuracy.differs  # v3 was not evaluated
    assert 0.5 < accuracy.values[v1] <= accuracy.values[v2] <= 1.0  # the deeper forest fits better
    assert accuracy.best == [v2]
    assert evaluation["log_loss"].best == [v2]  # lower is better
    assert evaluation["example_count"].best is None  # a count has no better direction

    # SHAP importances from each evaluation's JSON: the informative feature dominates in both
    informative = comparison.row("explanation", "mean_abs_shap.feature_2")
    assert informative.values[v3] is None
    for version in (v1, v2):
        others = [
            comparison.row("explanation", f"mean_abs_shap.feature_{i}").values[version] for i in (1, 3, 4)
        ]
        assert informative.values[version] > max(others)

    differing = {(r.section, r.key) for r in comparison.differences()}
    assert ("params", "max_depth") in differing and ("params", "n_estimators") not in differing

    as_dict = comparison.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict  # plain JSON
    assert set(as_dict) == {"name", "versions", "params", "metrics", "evaluation", "explanation"}


def test_cli_json_and_table(client, keel_server, compared, capsys) -> None:
    name, (v1, v2, v3), _ = compared
    code = main(["--tracking-uri", keel_server.uri, "models", "compare", name, v1, v2, v3, "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    assert report["name"] == name and [v["version"] for v in report["versions"]] == [v1, v2, v3]
    params = {row["key"]: row for row in report["params"]}
    assert params["max_depth"] == {"key": "max_depth", "values": {v1: "1", v2: "4", v3: "4"}, "differs": True}
    accuracy = next(row for row in report["evaluation"] if row["key"] == "accuracy_score")
    assert accuracy["best"] == [v2] and accuracy["values"][v3] is None

    code = main(["--tracking-uri", keel_server.uri, "models", "compare", name, v1, v2, v3])
    out, _ = capsys.readouterr()
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"model: {name}"
    assert any(
        line.startswith("*") and " max_depth " in line and line.split()[-3:] == ["1", "4", "4"]
        for line in lines
    )
    assert any(line.split()[:1] == ["n_estimators"] for line in lines)  # equal: no '*'
    assert any("EVALUATION" in line and "BEST" in line for line in lines)

    code = main(["--tracking-uri", keel_server.uri, "models", "compare", name, v1, v2, "--differences"])
    out, _ = capsys.readouterr()
    assert code == 0 and "max_depth" in out and "n_estimators" not in out


def test_a_version_without_source_run_says_so(client, keel_server, compared, capsys) -> None:
    name, (v1, v2, v3), no_run = compared
    comparison = client.compare_model_versions(name, [v2, v3, no_run])
    alone = comparison.versions[2]
    assert alone.run_id is None and alone.note is not None and "no source run" in alone.note
    depth = comparison.row("params", "max_depth")
    # shown empty, and not a difference: the version has no run to differ by
    assert depth.values == {v2: "4", v3: "4", no_run: None} and not depth.differs
    assert comparison.row("evaluation", "accuracy_score").differs  # v3 was not evaluated: that is one

    client.delete_run(client.get_model_version(name, v1).run_id)
    deleted = client.compare_model_versions(name, [v1, v2]).versions[0]
    assert deleted.note is not None and "deleted" in deleted.note

    code = main(["--tracking-uri", keel_server.uri, "models", "compare", name, v2, no_run])
    out, _ = capsys.readouterr()
    assert code == 0 and "no source run" in out


def test_bad_requests(client, keel_server, compared, capsys) -> None:
    name, (v1, v2, _), _ = compared
    with pytest.raises(InvalidArgument, match="compare needs 2 to 20 versions"):
        client.compare_model_versions(name, [v1])
    with pytest.raises(InvalidArgument, match="listed twice"):
        client.compare_model_versions(name, [v1, v2, int(v1)])
    with pytest.raises(InvalidArgument, match="is not a version number"):
        client.compare_model_versions(name, [v1, "latest"])
    with pytest.raises(InvalidArgument, match="must be a list"):
        client.compare_model_versions(name, "12")
    with pytest.raises(NotFound):
        client.compare_model_versions(name, [v1, 999])
    with pytest.raises(NotFound):
        client.compare_model_versions(unique("ghost"), [1, 2])

    code = main(["--tracking-uri", keel_server.uri, "models", "compare", name, v1, "999"])
    _, err = capsys.readouterr()
    assert code == 1 and "not found" in err.lower()
    code = main(["--tracking-uri", keel_server.uri, "models", "compare", name, v1])
    _, err = capsys.readouterr()
    assert code == 1 and "compare needs 2 to 20 versions" in err
