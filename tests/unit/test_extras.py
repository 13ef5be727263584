"""keel.extras: a feature whose optional package is missing raises MissingExtra naming the
keel-ml extra that brings it, and the extras table matches pyproject.toml.

A missing package is simulated with ``sys.modules[name] = None`` (what makes ``import name``
raise ModuleNotFoundError), so these run in the fully equipped dev environment."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
from ast_source import parse_file

from keel import extras
from keel.exceptions import FailedPrecondition, KeelError, MissingExtra
from keel.extras import require, require_any, require_db_driver

ROOT = Path(__file__).resolve().parents[2]
SOURCES = (ROOT / "services", ROOT / "clients" / "python" / "keel")


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _pyproject_extras() -> dict[str, set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return {
        extra: {_normalise(re.split(r"[\s\[<>=!~;]", spec, maxsplit=1)[0]) for spec in specs}
        for extra, specs in project["optional-dependencies"].items()
    }


def _block(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Makes ``import <module>`` fail as if the package were not installed."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)


# ---------------------------------------------------------------------------------------------
# the helper
# ---------------------------------------------------------------------------------------------


def test_require_returns_the_module() -> None:
    import json

    assert require("json", "sklearn") is json


def test_missing_package_is_a_keel_error_that_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "sklearn")
    with pytest.raises(MissingExtra) as caught:
        require("sklearn", "sklearn")
    err = caught.value
    assert err.message == "scikit-learn is not installed: pip install 'keel-ml[sklearn]'"
    assert isinstance(err, FailedPrecondition) and isinstance(err, KeelError)
    assert isinstance(err, ImportError)  # `except ImportError` guards keep working
    assert err.code.name == "FAILED_PRECONDITION" and err.reason == "MISSING_EXTRA"
    assert (err.extra, err.package) == ("sklearn", "scikit-learn")
    assert err.metadata == {"extra": "sklearn", "package": "scikit-learn"}
    assert isinstance(err.__cause__, ModuleNotFoundError)


def test_submodule_and_purpose(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "matplotlib.figure")
    with pytest.raises(MissingExtra) as caught:
        require("matplotlib.figure", "eval", purpose="to draw plots")
    assert caught.value.message == "matplotlib is not installed (to draw plots): pip install 'keel-ml[eval]'"


def test_a_broken_install_says_what_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "keel_test_broken_pkg.py").write_text("import keel_test_absent_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(MissingExtra) as caught:
        require("keel_test_broken_pkg", "eval")
    message = caught.value.message
    assert message.startswith("keel_test_broken_pkg cannot be imported (No module named 'keel_test_absent_dependency')")
    assert message.endswith("pip install 'keel-ml[eval]'")


def test_require_any_takes_the_first_that_imports(monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    _block(monkeypatch, "keel_test_nothing_here")
    assert require_any(("keel_test_nothing_here", "json"), "postgres") is json
    with pytest.raises(MissingExtra, match=r"keel_test_nothing_here is not installed: pip install 'keel-ml\[mysql\]'"):
        require_any(("keel_test_nothing_here",), "mysql")


@pytest.mark.parametrize(
    ("url", "blocked", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:5432/keel", ("psycopg2", "psycopg"), "keel-ml[postgres]"),
        ("postgres://u@h/db", ("psycopg2", "psycopg"), "keel-ml[postgres]"),
        ("mysql://root@127.0.0.1:3306/keel", ("pymysql", "MySQLdb"), "keel-ml[mysql]"),
        ("mysql+pool://root@127.0.0.1:3306/keel", ("pymysql", "MySQLdb"), "keel-ml[mysql]"),
    ],
)
def test_database_drivers(monkeypatch: pytest.MonkeyPatch, url: str, blocked: tuple[str, ...], expected: str) -> None:
    _block(monkeypatch, *blocked)
    with pytest.raises(MissingExtra) as caught:
        require_db_driver(url)
    assert caught.value.message.endswith(f"pip install '{expected}'"), caught.value.message
    assert "\n" not in caught.value.message


def test_sqlite_needs_no_driver(monkeypatch: pytest.MonkeyPatch) -> None:
    _block(monkeypatch, "psycopg2", "psycopg", "pymysql", "MySQLdb")
    require_db_driver("sqlite:///keel.db")
    require_db_driver("sqlite:////tmp/x.db")


def test_keel_server_refuses_a_mysql_url_without_driver_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from keel.cli import main

    monkeypatch.chdir(tmp_path)
    _block(monkeypatch, "pymysql", "MySQLdb")
    assert main(["server", "--port", "0", "--db-url", "mysql://root@127.0.0.1:3306/keel"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keel server: cannot start: pymysql is not installed"), err
    assert err[0].endswith("pip install 'keel-ml[mysql]'")


# ---------------------------------------------------------------------------------------------
# the table and every call site agree with pyproject.toml
# ---------------------------------------------------------------------------------------------


def test_extras_table_matches_pyproject() -> None:
    declared = _pyproject_extras()
    assert {extra: set(map(_normalise, packages)) for extra, packages in extras.EXTRAS.items()} == declared
    assert {"sklearn", "pytorch", "eval", "postgres", "mysql", "server", "all"} <= declared.keys()
    assert "ml" not in declared
    assert declared["all"] == set().union(*(v for k, v in declared.items() if k != "all"))
    assert {"psycopg2-binary", "pymysql", "scikit-learn"} <= declared["server"]


def test_deploy_image_installs_the_server_extra() -> None:
    installs = re.findall(r"pip install (\S+)", (ROOT / "deploy" / "Dockerfile").read_text())
    assert installs == ['".[server]"'], installs


def _require_calls() -> list[tuple[str, str, str]]:
    """(module, extra, where) of every require("module", "extra") call in the sources."""
    calls = []
    for folder in SOURCES:
        for path in folder.rglob("*.py"):
            if "_pb2" in path.name:
                continue
            for node in ast.walk(parse_file(path)):
                if (
                    isinstance(node, ast.Call)
                    and getattr(node.func, "id", getattr(node.func, "attr", None)) == "require"
                    and len(node.args) >= 2
                    and all(isinstance(a, ast.Constant) and isinstance(a.value, str) for a in node.args[:2])
                ):
                    module, extra = (a.value for a in node.args[:2])  # type: ignore[attr-defined]
                    calls.append((module, extra, f"{path.relative_to(ROOT)}:{node.lineno}"))
    return calls


def test_every_required_module_comes_with_the_extra_it_names() -> None:
    declared = _pyproject_extras()
    calls = _require_calls()
    assert {m.split(".")[0] for m, _, _ in calls} >= {"sklearn", "torch", "matplotlib"}, calls
    for module, extra, where in calls:
        assert extra in declared, f"{where}: extra {extra!r} is not in pyproject.toml"
        package = _normalise(extras.package_of(module))
        assert package in declared[extra], f"{where}: {module} comes from {package}, which [{extra}] lacks"
    for extra, drivers in extras.DB_DRIVERS.values():
        assert _normalise(extras.package_of(drivers[0])) in declared[extra]


# ---------------------------------------------------------------------------------------------
# the features that need an extra
# ---------------------------------------------------------------------------------------------


def test_sklearn_model_without_scikit_learn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sklearn.linear_model import LinearRegression

    import keel.pyfunc
    import keel.sklearn

    path = str(tmp_path / "model")
    keel.sklearn.save_model(LinearRegression().fit([[0.0], [1.0]], [0.0, 1.0]), path)
    _block(monkeypatch, "sklearn")
    for load in (keel.sklearn.load_model, keel.pyfunc.load_model):
        with pytest.raises(MissingExtra, match=r"^scikit-learn is not installed .*pip install 'keel-ml\[sklearn\]'"):
            load(path)
    with pytest.raises(MissingExtra, match=r"keel-ml\[sklearn\]"):
        keel.sklearn.save_model(object(), str(tmp_path / "other"))


def test_sklearn_autolog_without_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    import keel.autologging
    from keel.autologging import sklearn as sk_autolog

    _block(monkeypatch, "sklearn")
    with pytest.raises(MissingExtra, match=r"keel-ml\[sklearn\]"):
        sk_autolog.autolog()
    keel.autologging.autolog()  # the catch-all turns on what is installed: nothing here, no error
    keel.autologging.autolog(disable=True)  # and leaves nothing on for later tests


def test_pytorch_flavor_without_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.delitem(sys.modules, "keel.pytorch", raising=False)
    _block(monkeypatch, "torch")
    with pytest.raises(MissingExtra, match=r"^torch is not installed .*pip install 'keel-ml\[pytorch\]'"):
        importlib.import_module("keel.pytorch")


def test_evaluate_without_matplotlib_or_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    import keel

    data = ([[0.0], [1.0], [2.0], [3.0]], [0, 0, 1, 1])

    def model(x):  # noqa: ANN001, ANN202
        return [int(row[0] > 1) for row in x]

    with monkeypatch.context() as patched:
        _block(patched, "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg")
        # raised before anything is predicted or logged (no server is running here)
        with pytest.raises(MissingExtra) as caught:
            keel.evaluate(model, data, model_type="classifier")
        assert caught.value.message.startswith("matplotlib is not installed (keel.evaluate draws its plots")
        assert "log_plots" in caught.value.message and "pip install 'keel-ml[eval]'" in caught.value.message
    with monkeypatch.context() as patched:
        _block(patched, "sklearn", "sklearn.metrics")
        with pytest.raises(MissingExtra, match=r"^scikit-learn is not installed .*pip install 'keel-ml\[eval\]'"):
            keel.evaluate(model, data, model_type="classifier", evaluator_config={"log_plots": False})
