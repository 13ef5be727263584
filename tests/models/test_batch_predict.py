"""``keel models predict --input ... --output ...``: chunked batch scoring (keel.batch, issue #17).

Predictions equal in-process pyfunc predictions for CSV, parquet and JSON lines inputs, with and
without an id column, over many chunks; a model registered in a real keel server is scored by the
``keel`` command as a process; bad inputs fail with one line, a non-zero exit and no output file;
a ~200 MB CSV is scored with the child's peak resident memory flat (well below the file's size).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from server_fixtures import running_server

import keel
import keel.pyfunc
import keel.sklearn
from keel.cli import main
from keel.models.signature import infer_signature

FEATURES = ["f0", "f1", "f2", "f3"]
ROWS = 103  # with --batch-size 10: 11 chunks, the last one short
KEEL = [sys.executable, "-m", "keel.cli"]


def _features(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(rng.normal(size=(rows, len(FEATURES))), columns=FEATURES)


def _fit():  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LinearRegression

    X = _features(200, seed=1)
    return LinearRegression().fit(X, X["f0"] * 2 - X["f3"] + 0.5), X


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, X = _fit()
    path = tmp_path_factory.mktemp("batch-model") / "model"
    keel.sklearn.save_model(model, str(path), signature=infer_signature(X, model.predict(X)))
    return path


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """The input rows: the features plus a row_id column (ids far from 0..n, so a lost order shows)."""
    return _features(ROWS).assign(row_id=np.arange(ROWS) * 7 + 1000)


def _write(frame: pd.DataFrame, path: Path) -> Path:
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True)
    return path


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        return pd.read_csv(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_json(path, lines=True)


def _predict(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["models", "predict", "--no-progress", *argv])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("id_column", [None, "row_id"])
@pytest.mark.parametrize("fmt", ["csv", "parquet", "jsonl"])
def test_predictions_equal_in_process_pyfunc(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model_dir: Path,
    frame: pd.DataFrame,
    fmt: str,
    id_column: str | None,
) -> None:
    source = _write(frame if id_column else frame[FEATURES], tmp_path / f"in.{fmt}")
    out = tmp_path / "out.parquet"
    argv = ["-m", str(model_dir), "--input", str(source), "--output", str(out), "--batch-size", "10"]
    code, err = _predict(capsys, *argv, *(["--id-column", id_column] if id_column else []))
    assert code == 0, err
    assert f"{ROWS} predictions in 11 chunks" in err
    expected = keel.pyfunc.load_model(str(model_dir)).predict(frame[FEATURES])
    got = _read(out)
    if id_column:
        assert list(got.columns) == ["row_id", "prediction"]
        assert got["row_id"].tolist() == frame["row_id"].tolist()
    else:
        assert list(got.columns) == ["prediction"]
    np.testing.assert_allclose(got["prediction"].to_numpy(), np.asarray(expected), rtol=1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([source.name, out.name])  # no temp file left


@pytest.mark.parametrize("out_fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_outputs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dir: Path, frame: pd.DataFrame, out_fmt: str
) -> None:
    source = _write(frame, tmp_path / "in.parquet")
    out = tmp_path / f"out.{out_fmt}"
    code, err = _predict(
        capsys,
        "-m",
        str(model_dir),
        "-i",
        str(source),
        "-o",
        str(out),
        "--batch-size",
        "16",
        "--id-column",
        "row_id",
    )
    assert code == 0, err
    got = _read(out)
    assert list(got.columns) == ["row_id", "prediction"] and len(got) == ROWS  # one header, no blank lines
    assert got["row_id"].tolist() == frame["row_id"].tolist()
    expected = keel.pyfunc.load_model(str(model_dir)).predict(frame[FEATURES])
    np.testing.assert_allclose(got["prediction"].to_numpy(), np.asarray(expected), rtol=1e-6)


def test_a_registered_model_scored_by_the_keel_command(
    db_url: str, tmp_path: Path, frame: pd.DataFrame
) -> None:
    model, X = _fit()
    with running_server(db_url, f"file://{tmp_path}/artifacts") as server:
        keel.set_tracking_uri(server.uri)
        with keel.start_run():
            info = keel.sklearn.log_model(
                model,
                "model",
                signature=infer_signature(X, model.predict(X)),
                registered_model_name="batch-iris",
            )
        source = _write(frame, tmp_path / "in.csv")
        out = tmp_path / "scored.parquet"
        argv = ["--tracking-uri", server.uri, "models", "predict", "-m", "models:/batch-iris/1"]
        argv += ["--input", str(source), "--output", str(out), "--batch-size", "25", "--id-column", "row_id"]
        done = subprocess.run([*KEEL, *argv], capture_output=True, text=True, timeout=120)
        expected = keel.pyfunc.load_model(info.model_uri).predict(frame[FEATURES])
    assert done.returncode == 0, done.stderr
    # the tqdm bar, then the summary
    assert "rows" in done.stderr and f"{ROWS} predictions in 5 chunks" in done.stderr
    got = pd.read_parquet(out)
    assert got["row_id"].tolist() == frame["row_id"].tolist()
    np.testing.assert_allclose(got["prediction"].to_numpy(), np.asarray(expected), rtol=1e-6)


def _bad_inputs(tmp: Path, frame: pd.DataFrame) -> dict[str, tuple[list[str], str]]:
    """name -> (arguments after -m, what the error line says)."""
    later_bad = frame.astype({"f2": object})
    later_bad.loc[57, "f2"] = "not a number"  # chunk 6 of 11: chunks before it were already written
    (tmp / "garbage.parquet").write_bytes(b"this is not parquet")
    (tmp / "broken.jsonl").write_text('{"f0": 1.0, "f1": 2.0}\n{"f0": \n')
    (tmp / "in.txt").write_text("f0,f1\n1,2\n")
    good = _write(frame, tmp / "good.csv")
    return {
        "missing column": (
            [str(_write(frame.drop(columns=["f1"]), tmp / "nof1.csv"))],
            "missing input column 'f1'",
        ),
        "bad value in a later chunk": ([str(_write(later_bad, tmp / "later.csv"))], "input column 'f2'"),
        "unreadable parquet": ([str(tmp / "garbage.parquet")], "cannot read the input"),
        "malformed json lines": ([str(tmp / "broken.jsonl")], "cannot read the input"),
        "unknown input format": ([str(tmp / "in.txt")], "cannot tell the format of the input"),
        "no such input": ([str(tmp / "absent.csv")], "no such file"),
        "missing id column": ([str(good), "--id-column", "nope"], "the id column 'nope' is not in the input"),
        "bad batch size": ([str(good), "--batch-size", "0"], "batch size must be at least 1"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing column",
        "bad value in a later chunk",
        "unreadable parquet",
        "malformed json lines",
        "unknown input format",
        "no such input",
        "missing id column",
        "bad batch size",
    ],
)
@pytest.mark.parametrize("out_fmt", ["parquet", "csv"])
def test_bad_inputs_fail_with_one_line_and_leave_no_output(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    model_dir: Path,
    frame: pd.DataFrame,
    case: str,
    out_fmt: str,
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    source, says = _bad_inputs(inputs, frame)[case]
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    code, err = _predict(
        capsys, "-m", str(model_dir), "--output", str(out_dir / f"out.{out_fmt}"), "--batch-size", "10",
        "--input", *source,
    )  # fmt: skip
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], err
    assert list(out_dir.iterdir()) == []  # nothing written, not even a partial file


def test_unknown_output_format_and_missing_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dir: Path, frame: pd.DataFrame
) -> None:
    source = str(_write(frame, tmp_path / "in.csv"))
    code, err = _predict(capsys, "-m", str(model_dir), "-i", source, "-o", str(tmp_path / "out.xlsx"))
    assert code != 0 and "cannot tell the format of the output" in err and ".parquet" in err
    code, err = _predict(
        capsys, "-m", str(model_dir), "-i", source, "-o", str(tmp_path / "nowhere" / "o.csv")
    )
    assert code != 0 and "does not exist" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv"]


def test_a_failing_process_prints_one_line_not_a_traceback(
    tmp_path: Path, model_dir: Path, frame: pd.DataFrame
) -> None:
    source = _write(frame.drop(columns=["f3"]), tmp_path / "in.jsonl")
    argv = ["models", "predict", "-m", str(model_dir), "-i", str(source), "-o", str(tmp_path / "o.parquet")]
    done = subprocess.run([*KEEL, *argv, "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "missing input column 'f3'" in done.stderr
    assert not (tmp_path / "o.parquet").exists()


def _big_csv(path: Path, megabytes: int) -> int:
    """A CSV of about ``megabytes`` MB written quickly: one random block, repeated. Returns rows."""
    block = _features(50_000, seed=2).to_csv(index=False, float_format="%.6f")
    header, _, body = block.partition("\n")
    blocks = max(1, megabytes * 1_000_000 // len(body))
    with open(path, "w", encoding="utf-8") as f:
        f.write(header + "\n")
        for _ in range(blocks):
            f.write(body)
    return blocks * 50_000


def _peak_rss_mb(argv: list[str]) -> tuple[int, float, str]:
    """Runs the command; its exit code, its own peak resident memory in MB, its stderr."""
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as child:
        _, status, usage = os.wait4(child.pid, 0)  # this child's rusage, not every child's
        stderr = child.stderr.read() if child.stderr else ""
        child.returncode = os.waitstatus_to_exitcode(status)
    return child.returncode, usage.ru_maxrss / 1024, stderr  # ru_maxrss: KB on Linux


@pytest.mark.slow
def test_memory_stays_flat_on_a_large_csv(tmp_path: Path, model_dir: Path, frame: pd.DataFrame) -> None:
    small = _write(frame[FEATURES], tmp_path / "small.csv")
    big = tmp_path / "big.csv"
    started = time.monotonic()
    rows = _big_csv(big, 200)
    size_mb = big.stat().st_size / 1e6
    assert size_mb > 150

    def score(source: Path) -> tuple[float, str]:
        argv = [*KEEL, "models", "predict", "-m", str(model_dir), "-i", str(source)]
        code, peak, err = _peak_rss_mb([*argv, "-o", str(tmp_path / "out.parquet"), "--batch-size", "10000"])
        assert code == 0, err
        return peak, err

    baseline, _ = score(small)  # the interpreter, pandas, pyarrow, sklearn and the model
    peak, err = score(big)
    assert f"{rows} predictions" in err
    growth = peak - baseline
    print(f"peak RSS {peak:.0f} MB, {baseline:.0f} MB on {ROWS} rows, input {size_mb:.0f} MB")
    # a read of the whole file would add well over its size; chunks of 10,000 rows add a few MB
    assert growth < size_mb / 4, f"peak RSS {peak:.0f} MB vs {baseline:.0f} MB for a {size_mb:.0f} MB input"
    assert len(pd.read_parquet(tmp_path / "out.parquet", columns=["prediction"])) == rows
    assert time.monotonic() - started < 60


@pytest.mark.parametrize("out_fmt", ["parquet", "csv", "jsonl"])
def test_an_input_without_rows_gives_an_empty_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_dir: Path, out_fmt: str
) -> None:
    source = tmp_path / "empty.csv"
    source.write_text(",".join(["row_id", *FEATURES]) + "\n")
    out = tmp_path / f"out.{out_fmt}"
    code, err = _predict(
        capsys, "-m", str(model_dir), "-i", str(source), "-o", str(out), "--id-column", "row_id"
    )
    assert code == 0, err
    assert "0 predictions in 0 chunks" in err
    if out_fmt == "jsonl":
        assert out.read_text() == ""
    else:
        assert list(_read(out).columns) == ["row_id", "prediction"] and len(_read(out)) == 0
