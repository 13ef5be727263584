"""The front end's pure functions, run in the browser as the console loads them (ES modules from
/static): the YAML reader against PyYAML on a real MLmodel, the CSV reader, EMA smoothing, the
mean/spread aggregation of grouped runs, column specs and the search-box heuristic."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from browser_helpers import browser_fixture, expect, log_sklearn_model, open_console, page_fixture  # noqa: F401  (the browser and page fixtures)

pytestmark = [pytest.mark.server]


def _module_call(page: Any, module: str, expression: str, arg: Any = None) -> Any:
    """Evaluates ``expression`` (a function of ``m``, the module, and ``arg``) in the page."""
    return page.evaluate(
        f"async (arg) => {{ const m = await import('/static/{module}'); return ({expression}); }}", arg
    )


@pytest.fixture()
def loaded(page: Any, console_server: Any) -> Any:
    open_console(page, console_server, "/experiments")
    expect(page.get_by_test_id("experiments-table")).to_be_visible()
    return page


def test_yaml_reader_matches_pyyaml_on_a_real_mlmodel(
    loaded: Any, console_server: Any, tmp_path: Path
) -> None:
    client = console_server.client()
    experiment_id = client.create_experiment("units-yaml")
    run_id = client.create_run(experiment_id).info.run_id
    log_sklearn_model(client, run_id, tmp_path)
    folder = tmp_path / f"model-{run_id}"
    for name in ("MLmodel", "conda.yaml", "python_env.yaml"):
        text = (folder / name).read_text()
        assert _module_call(loaded, "mlmodel.js", "m.parseYaml(arg)", text) == yaml.safe_load(text), name
    # long signature strings wrap over several lines in PyYAML's output and must fold back
    wrapped = yaml.safe_dump(
        {"signature": {"inputs": '[{"name": "' + "x" * 120 + '", "type": "double"}]'}}, sort_keys=True
    )
    assert "\n    " in wrapped
    assert _module_call(loaded, "mlmodel.js", "m.parseYaml(arg)", wrapped) == yaml.safe_load(wrapped)
    nested = "a:\n- 1\n- b: two\n  c: [1, 2]\n- 'q''uote'\nd: null\ne: |\n  line1\n  line2\n"
    assert _module_call(loaded, "mlmodel.js", "m.parseYaml(arg)", nested) == {
        "a": [1, {"b": "two", "c": [1, 2]}, "q'uote"],
        "d": None,
        "e": "line1\nline2",
    }


def test_csv_reader(loaded: Any) -> None:
    text = 'a,b,c\n1,"x, y",3\r\n4,"say ""hi""","multi\nline"\n'
    assert _module_call(loaded, "mlmodel.js", "m.parseCsv(arg)", text) == {
        "rows": [["a", "b", "c"], ["1", "x, y", "3"], ["4", 'say "hi"', "multi\nline"]],
        "more": False,
    }
    many = "n\n" + "".join(f"{i}\n" for i in range(50))
    got = _module_call(loaded, "mlmodel.js", "m.parseCsv(arg, ',', 10)", many)
    assert len(got["rows"]) == 10 and got["more"] is True
    assert _module_call(loaded, "mlmodel.js", "m.parseCsv(arg, '\\t')", "k\tv\nx\t1") == {
        "rows": [["k", "v"], ["x", "1"]],
        "more": False,
    }


def test_smoothing_ticks_and_aggregation(loaded: Any) -> None:
    # EMA with debiasing: weight 0 is the raw series; a constant stays constant
    assert _module_call(loaded, "chart.js", "m.ema(arg, 0)", [[0, 1], [1, 5]]) == [[0, 1], [1, 5]]
    smooth = _module_call(loaded, "chart.js", "m.ema(arg, 0.9)", [[i, 3.0] for i in range(5)])
    assert all(abs(y - 3.0) < 1e-9 for _, y in smooth)
    smooth = _module_call(loaded, "chart.js", "m.ema(arg, 0.5)", [[0, 0], [1, 10]])
    assert smooth[0][1] == 0 and 0 < smooth[1][1] < 10
    assert _module_call(loaded, "chart.js", "m.niceTicks(0, 1, 5)") == [0, 0.2, 0.4, 0.6, 0.8, 1]
    assert _module_call(loaded, "chart.js", "m.fmtTick(20000)") == "20k"
    # mean and ±std of runs grouped by a param, lined up by step
    agg = _module_call(
        loaded, "page-compare.js", "m.aggregateHistories(arg)", [[[0, 1], [1, 3]], [[0, 3], [1, 5]]]
    )
    assert agg["mean"] == [[0, 2], [1, 4]]
    assert [round(lo, 6) for _, lo, _ in agg["band"]] == [round(2 - 2**0.5, 6), round(4 - 2**0.5, 6)]
    groups = _module_call(
        loaded,
        "page-compare.js",
        "m.groupRuns(arg, 'model', ['rmse'])",
        [
            {"params": {"model": "a"}, "metrics": {"rmse": {"last": 1}}},
            {"params": {"model": "a"}, "metrics": {"rmse": {"last": 3}}},
            {"params": {"model": "b"}, "metrics": {"rmse": {"last": "NaN"}}},
        ],
    )
    assert [(g["value"], len(g["runs"])) for g in groups] == [("a", 2), ("b", 1)]
    assert groups[0]["stats"]["rmse"]["mean"] == 2 and groups[1]["stats"]["rmse"] is None


def test_column_specs_and_search_box(loaded: Any) -> None:
    assert _module_call(loaded, "page-runs.js", "m.parseColumn('metrics.val.loss:min')") == {
        "id": "metrics.val.loss:min",
        "kind": "metrics",
        "key": "val.loss",
        "agg": "min",
    }
    assert _module_call(loaded, "page-runs.js", "m.parseColumn('metrics.rmse')")["id"] == "metrics.rmse:last"
    assert _module_call(loaded, "page-runs.js", "m.parseColumn('bogus.x')") is None
    assert _module_call(loaded, "page-runs.js", "m.ident('metrics', 'f1-score')") == "metrics.`f1-score`"
    assert _module_call(loaded, "page-runs.js", "m.ident('tags', 'mlflow.runName')") == "tags.mlflow.runName"
    assert (
        _module_call(loaded, "page-experiments.js", 'm.searchFilter("it\'s-in")') == "name ILIKE '%it''s-in%'"
    )
    assert (
        _module_call(loaded, "page-experiments.js", "m.searchFilter(\"tags.team = 'x'\")")
        == "tags.team = 'x'"
    )
    assert (
        _module_call(loaded, "page-experiments.js", "m.searchFilter(\"name LIKE 'a%'\")") == "name LIKE 'a%'"
    )
