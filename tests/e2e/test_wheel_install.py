"""The built wheel, installed as a user installs it, runs `keel server` and the seed flow.

No requirements file: a wheel is built from the files deploy/Dockerfile copies, then installed
into two fresh virtualenvs (`python -m venv`, no system site-packages) with only what its own
metadata asks for:

- `keel-ml[server]` (what the container image installs): tracking, registry, sklearn
  log_model with registration, stage transition, then serving over HTTP /invocations;
- `keel-ml` with no extra: tracking, registry and a pyfunc model served end to end work, and
  every feature that needs an extra (serving or loading a sklearn model, keel.pytorch,
  keel.evaluate, a PostgreSQL/MySQL URL) fails with a message that names it.

Speed: dependency wheels are kept in a wheelhouse (KEEL_TEST_WHEELHOUSE, default
~/.cache/keel-ml-tests/wheelhouse) and installed with --no-index; when the wheelhouse lacks
something (first run, a new dependency) it is filled from the package index with `pip wheel`
of the same requirement, so resolution still comes from the wheel's metadata alone. About a
minute with a filled wheelhouse, two on the first run.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
# exactly what deploy/Dockerfile copies before `pip install ".[server]"`
SOURCES = ("pyproject.toml", "setup.py", "README.md", "clients/python/keel", "services")
WHEELHOUSE = Path(
    os.environ.get("KEEL_TEST_WHEELHOUSE") or Path.home() / ".cache" / "keel-ml-tests" / "wheelhouse"
)
PIP_TIMEOUT = 900


def _run(cmd: list[str], timeout: float = PIP_TIMEOUT, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload, no-any-return]


def _check(result: subprocess.CompletedProcess[str], what: str) -> None:
    assert result.returncode == 0, f"{what} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


def _clean_env(venv: Path | None = None) -> dict[str, str]:
    """The environment of a user's shell: nothing of this test run's interpreter or keel settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("KEEL_", "PYTHON", "VIRTUAL_ENV", "PYTEST", "COV_"))
    }
    if venv is not None:
        env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["VIRTUAL_ENV"] = str(venv)
    return env


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# building and installing
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timings() -> Iterator[dict[str, float]]:
    spent: dict[str, float] = {}
    yield spent
    print("\nwheel install timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in spent.items()))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory, timings: dict[str, float]) -> Path:
    """keel-ml's wheel, built from a copy of the files the Dockerfile copies (so nothing outside
    them, and no stale build/ folder of the checkout, can end up in it)."""
    started = time.monotonic()
    src = tmp_path_factory.mktemp("src")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=ignore)
        else:
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], cwd=src)
    _check(built, "pip wheel")
    wheels = sorted(dist.glob("keel_ml-*.whl"))
    assert len(wheels) == 1, wheels
    timings["build wheel"] = time.monotonic() - started
    return wheels[0]


def _pip(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """This interpreter's pip, acting on the venv of ``python`` (the venv itself has no pip)."""
    cmd = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check", *args]
    return _run(cmd, env=_clean_env())


def _install(python: Path, requirement: str) -> None:
    # --no-compile: byte-compiling scipy, scikit-learn and pandas would triple the install time;
    # the few modules a run imports are compiled (and cached) when first imported
    offline = ["install", "-q", "--no-compile", "--no-index", "--find-links", str(WHEELHOUSE), requirement]
    if WHEELHOUSE.is_dir() and _pip(python, *offline).returncode == 0:
        return
    # First run (or a dependency the wheelhouse lacks): fetch the wheels this requirement needs.
    WHEELHOUSE.mkdir(parents=True, exist_ok=True)
    _check(_pip(python, "wheel", "-q", "-w", str(WHEELHOUSE), requirement), f"pip wheel {requirement}")
    for own in WHEELHOUSE.glob("keel_ml-*.whl"):
        own.unlink()  # the project's own wheel always comes from the build above
    _check(_pip(python, *offline), f"pip install {requirement}")


def _venv(path: Path, wheel: Path, extras: str, timings: dict[str, float]) -> Path:
    started = time.monotonic()
    _check(_run([sys.executable, "-m", "venv", "--without-pip", str(path)], env=_clean_env()), "python -m venv")
    python = path / "bin" / "python"
    _install(python, f"{wheel}[{extras}]" if extras else str(wheel))
    timings[f"venv [{extras}]"] = time.monotonic() - started
    return path


@pytest.fixture(scope="module")
def server_venv(tmp_path_factory: pytest.TempPathFactory, wheel: Path, timings: dict[str, float]) -> Path:
    return _venv(tmp_path_factory.mktemp("venv") / "server", wheel, "server", timings)


@pytest.fixture(scope="module")
def bare_venv(
    tmp_path_factory: pytest.TempPathFactory, wheel: Path, server_venv: Path, timings: dict[str, float]
) -> Path:
    # after server_venv: the wheelhouse then holds every core dependency already
    return _venv(tmp_path_factory.mktemp("venv") / "bare", wheel, "", timings)


def _installed(venv: Path) -> set[str]:
    listed = _run(
        [str(venv / "bin" / "python"), "-c", "import importlib.metadata as m; "
         "print('\\n'.join(d.metadata['Name'].lower() for d in m.distributions()))"],
        env=_clean_env(venv),
    )  # fmt: skip
    _check(listed, "listing distributions")
    return {re.sub(r"[-_.]+", "-", name) for name in listed.stdout.split()}


# ---------------------------------------------------------------------------------------------
# running keel from a venv
# ---------------------------------------------------------------------------------------------


@contextmanager
def _keel_server(venv: Path, workdir: Path, http_port: int) -> Iterator[str]:
    """`<venv>/bin/keel server` on a free port over SQLite and a local folder in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / "server.log"
    command = [
        str(venv / "bin" / "keel"), "server", "--port", "0", "--http-port", str(http_port),
        "--db-url", f"sqlite:///{workdir}/keel.db", "--artifact-uri", f"file://{workdir}/artifacts",
        "--log-level", "WARNING",
    ]  # fmt: skip
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=log, text=True, cwd=workdir, env=_clean_env(venv)
        )
    try:
        assert process.stdout is not None
        target = ""
        for line in process.stdout:
            match = re.search(r"keel server listening on (\S+:\d+)", line)
            if match:
                target = match.group(1)
                break
        assert target, f"keel server did not start (exit {process.poll()}):\n{log_path.read_text()[-4000:]}"
        yield f"grpc://{target}"
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _run_script(venv: Path, workdir: Path, name: str, source: str, *args: str) -> str:
    """Runs ``source`` with the venv's interpreter; a failure shows the server log's end too."""
    script = workdir / name
    script.write_text(textwrap.dedent(source))
    result = _run([str(venv / "bin" / "python"), str(script), *args], timeout=300, cwd=workdir, env=_clean_env(venv))
    if result.returncode != 0:
        server_log = workdir / "server" / "server.log"
        tail = server_log.read_text()[-4000:] if server_log.exists() else "(no server log)"
        pytest.fail(f"{name} failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
                    f"\n--- server log ---\n{tail}")
    return result.stdout


SERVER_SEED = """
import importlib.util
import json
import sys
import urllib.request

import pandas as pd
from sklearn.linear_model import LogisticRegression

import keel
import keel.sklearn
from keel.models import infer_signature

uri, http_port, venv = sys.argv[1], int(sys.argv[2]), sys.argv[3]
assert keel.__file__.startswith(venv), keel.__file__  # the installed wheel, not the checkout
for module in ("psycopg2", "pymysql", "sklearn"):
    assert importlib.util.find_spec(module) is not None, module

keel.set_tracking_uri(uri)
client = keel.Client()
keel.set_experiment("wheel-install")
X = pd.DataFrame({"a": [0.0, 0.1, 0.2, 0.9, 1.0, 1.1] * 4, "b": [0.1, 0.0, 0.2, 1.0, 0.9, 1.2] * 4})
y = [0, 0, 0, 1, 1, 1] * 4
with keel.start_run(run_name="logreg") as run:
    keel.log_params({"C": 1.0, "solver": "lbfgs"})
    model = LogisticRegression(C=1.0).fit(X, y)
    keel.log_metric("accuracy", float((model.predict(X) == y).mean()))
    info = keel.sklearn.log_model(
        model, "model", signature=infer_signature(X, model.predict(X)), input_example=X.head(2),
        registered_model_name="wheel-clf",
    )
assert keel.get_run(run.info.run_id).data.metrics["accuracy"] == 1.0
version = client.transition_model_version_stage("wheel-clf", info.registered_model_version, "Production")
assert version.current_stage == "Production", version

deployment = client.create_deployment("clf", "models:/wheel-clf/Production")
assert deployment.state == "READY", (deployment.state, deployment.state_message)
rows = pd.DataFrame({"a": [0.0, 1.0], "b": [0.0, 1.0]})
body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))}).encode()
request = urllib.request.Request(
    f"http://127.0.0.1:{http_port}/invocations", data=body, headers={"Content-Type": "application/json"}
)
with urllib.request.urlopen(request, timeout=60) as response:
    answer = json.loads(response.read())
assert answer == {"predictions": [0, 1]}, answer
print(f"SEED OK wheel-clf v{version.version} Production served over HTTP: {answer}")
"""


BARE_SEED = """
import importlib.util
import json
import sys
import urllib.error
import urllib.request

import pandas as pd

import keel
import keel.pyfunc
from keel.exceptions import FailedPrecondition, KeelError, MissingExtra

uri, http_port, venv, sklearn_model_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
assert keel.__file__.startswith(venv), keel.__file__
for module in ("sklearn", "torch", "matplotlib", "PIL", "psycopg2", "pymysql"):
    assert importlib.util.find_spec(module) is None, f"{module} is installed without an extra"

keel.set_tracking_uri(uri)
client = keel.Client()


class Doubler(keel.pyfunc.PythonModel):
    def predict(self, context, model_input, params=None):
        return model_input["x"] * 2


# tracking and the registry with no extra
keel.set_experiment("bare")
with keel.start_run(run_name="bare") as run:
    keel.log_params({"lr": 0.1})
    for step in range(3):
        keel.log_metric("loss", 1.0 / (step + 1), step=step)
    keel.log_text("hello", "notes/readme.txt")
    info = keel.pyfunc.log_model(
        "pyfunc", python_model=Doubler(), input_example=pd.DataFrame({"x": [1.0, 2.0]}),
        registered_model_name="bare-pyfunc",
    )
    keel.log_artifacts(sklearn_model_dir, "skmodel")  # saved elsewhere; only bytes here
run_id = run.info.run_id
assert keel.get_run(run_id).data.metrics["loss"] == 1.0 / 3
assert len(keel.search_runs(experiment_names=["bare"])) == 1  # a pandas DataFrame: core
client.create_registered_model("bare-notes")
notes = client.create_model_version("bare-notes", f"runs:/{run_id}/notes", run_id=run_id)
assert notes.status == "READY", notes
moved = client.transition_model_version_stage("bare-notes", notes.version, "Staging")
assert moved.current_stage == "Staging", moved
version = client.transition_model_version_stage("bare-pyfunc", info.registered_model_version, "Production")
assert version.current_stage == "Production"

# a pyfunc model is served with no extra
deployment = client.create_deployment("double", "models:/bare-pyfunc/Production")
assert deployment.state == "READY", deployment.state_message
body = json.dumps({"dataframe_split": {"columns": ["x"], "data": [[1.5], [4.0]]}}).encode()
request = urllib.request.Request(
    f"http://127.0.0.1:{http_port}/deployments/double/invocations", data=body,
    headers={"Content-Type": "application/json"},
)
with urllib.request.urlopen(request, timeout=60) as response:
    answer = json.loads(response.read())
assert answer == {"predictions": [3.0, 8.0]}, answer

# serving a sklearn model on a server without scikit-learn names the extra
deployment = client.create_deployment("sk", f"runs:/{run_id}/skmodel")
assert deployment.state == "FAILED", deployment
assert "keel-ml[sklearn]" in deployment.state_message, deployment.state_message
try:
    client.predict("sk", pd.DataFrame({"a": [0.0], "b": [0.0]}))
except FailedPrecondition as exc:
    assert "keel-ml[sklearn]" in exc.message, exc
else:
    raise AssertionError("predict on a sklearn model served without scikit-learn succeeded")
request = urllib.request.Request(
    f"http://127.0.0.1:{http_port}/deployments/sk/invocations", data=body,
    headers={"Content-Type": "application/json"},
)
try:
    urllib.request.urlopen(request, timeout=60)
except urllib.error.HTTPError as exc:
    http_error = json.loads(exc.read())
    assert "keel-ml[sklearn]" in http_error["message"], http_error
else:
    raise AssertionError("HTTP scoring of a sklearn model served without scikit-learn succeeded")

# the SDK's optional features name their extra too
def missing(call):
    try:
        call()
    except MissingExtra as exc:
        assert isinstance(exc, KeelError) and isinstance(exc, ImportError)
        return str(exc.message)
    raise AssertionError(f"{call} did not raise MissingExtra")

import keel.sklearn  # importing the flavor works; using it needs scikit-learn

assert "pip install 'keel-ml[sklearn]'" in missing(lambda: keel.sklearn.load_model(sklearn_model_dir))
assert "pip install 'keel-ml[sklearn]'" in missing(lambda: keel.pyfunc.load_model(sklearn_model_dir))
assert "pip install 'keel-ml[pytorch]'" in missing(lambda: __import__("keel.pytorch"))
evaluated = missing(lambda: keel.evaluate(lambda X: X["x"] > 1, pd.DataFrame({"x": [0.0, 2.0], "y": [False, True]}),
                                          targets="y", model_type="classifier"))
assert "pip install 'keel-ml[eval]'" in evaluated, evaluated
print("BARE OK", deployment.state_message)
"""


# ---------------------------------------------------------------------------------------------
# the tests
# ---------------------------------------------------------------------------------------------


def test_server_extra_runs_the_seed_flow(server_venv: Path, tmp_path: Path, timings: dict[str, float]) -> None:
    installed = _installed(server_venv)
    assert {"keel-ml", "scikit-learn", "psycopg2-binary", "pymysql", "prometheus-client"} <= installed
    assert "torch" not in installed and "matplotlib" not in installed
    started = time.monotonic()
    http_port = _free_port()
    with _keel_server(server_venv, tmp_path / "server", http_port) as uri:
        out = _run_script(server_venv, tmp_path, "seed_server.py", SERVER_SEED, uri, str(http_port), str(server_venv))
    assert "SEED OK" in out, out
    timings["[server] flow"] = time.monotonic() - started


def test_no_extra_tracks_registers_and_names_missing_extras(
    bare_venv: Path, tmp_path: Path, timings: dict[str, float]
) -> None:
    installed = _installed(bare_venv)
    assert {"keel-ml", "prometheus-client", "pandas", "numpy", "urllib3"} <= installed
    assert not {"scikit-learn", "torch", "matplotlib", "pillow", "psycopg2-binary", "pymysql"} & installed

    # a sklearn model saved by this (fully equipped) interpreter, uploaded as plain files there
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    import keel.sklearn

    model_dir = tmp_path / "sk-model"
    features = np.array([[0.0, 0.0], [1.0, 1.0], [0.1, 0.2], [0.9, 1.1]])
    keel.sklearn.save_model(LogisticRegression().fit(features, [0, 1, 0, 1]), str(model_dir))

    started = time.monotonic()
    http_port = _free_port()
    with _keel_server(bare_venv, tmp_path / "server", http_port) as uri:
        out = _run_script(
            bare_venv, tmp_path, "seed_bare.py", BARE_SEED, uri, str(http_port), str(bare_venv), str(model_dir)
        )
    assert "BARE OK" in out, out
    assert "pip install 'keel-ml[sklearn]'" in out, out
    timings["no-extra flow"] = time.monotonic() - started


@pytest.mark.parametrize(
    ("url", "extra"),
    [("postgresql://postgres@127.0.0.1:5432/keel", "postgres"), ("mysql://root@127.0.0.1:3306/keel", "mysql")],
)
def test_no_extra_server_refuses_a_database_without_its_driver(
    bare_venv: Path, tmp_path: Path, url: str, extra: str
) -> None:
    result = _run(
        [str(bare_venv / "bin" / "keel"), "server", "--port", "0", "--db-url", url],
        timeout=60,
        cwd=tmp_path,
        env=_clean_env(bare_venv),
    )
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("keel server: cannot start:"), lines
    assert f"pip install 'keel-ml[{extra}]'" in lines[0], lines


def test_keel_ui_serves_the_console_from_the_installed_package(bare_venv: Path, tmp_path: Path) -> None:
    """`keel ui` of a bare install serves the front end shipped inside the wheel (no checkout, no CDN)."""
    import urllib.request

    env = {**_clean_env(bare_venv), "KEEL_TRACKING_URI": f"grpc://127.0.0.1:{_free_port()}"}
    process = subprocess.Popen(
        [str(bare_venv / "bin" / "keel"), "ui", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"keel console on (http://\S+:\d+)", line)
        assert match, (line, process.poll())
        with urllib.request.urlopen(match.group(1) + "/", timeout=30) as page:
            html = page.read().decode()
            assert page.headers["Content-Type"].startswith("text/html"), page.headers
        assert "/static/" in html, html[:500]
        asset = re.search(r'src="(/static/[^"?]+)', html)
        assert asset, html[:500]
        with urllib.request.urlopen(match.group(1) + asset.group(1), timeout=30) as script:
            assert script.headers["Content-Type"].startswith("text/javascript"), script.headers
            assert script.read()
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
