"""Single-machine batch scoring: ``keel models predict --input data.csv --output out.parquet``.

The input is read in chunks of ``batch_size`` rows (pandas ``read_csv(chunksize=)``, pyarrow
``ParquetFile.iter_batches``, ``read_json(lines=True, chunksize=)``) and each chunk's predictions
are written before the next chunk is read, so memory stays flat whatever the input's size. The
model is loaded once through ``keel.pyfunc.load_model`` (signature enforcement applies to every
chunk). The output is written to a hidden temporary name next to it and renamed at the end: a
failed run leaves no partial output behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from keel.exceptions import InvalidArgument

if TYPE_CHECKING:
    import pandas as pd

# file extension -> format name (inputs and outputs alike)
FORMATS = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
DEFAULT_BATCH_SIZE = 10_000
PREDICTION_COLUMN = "prediction"


@dataclass(frozen=True)
class BatchResult:
    rows: int
    chunks: int
    output: Path


def file_format(path: str | Path, role: str) -> str:
    """The format of ``path`` from its extension, or InvalidArgument naming the ones known."""
    suffix = Path(path).suffix.lower()
    fmt = FORMATS.get(suffix)
    if fmt is None:
        known = ", ".join(sorted(FORMATS))
        raise InvalidArgument(
            f"cannot tell the format of the {role} {str(path)!r} from its extension {suffix or '(none)'!r}: "
            f"use one of {known}",
            reason="UNKNOWN_FILE_FORMAT",
        )
    return fmt


def predict_file(
    model_uri: str,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    id_column: str | None = None,
    progress: bool = True,
) -> BatchResult:
    """Score ``input_path`` chunk by chunk with the model at ``model_uri`` into ``output_path``."""
    if batch_size < 1:
        raise InvalidArgument(f"batch size must be at least 1, got {batch_size}", reason="INVALID_BATCH_SIZE")
    source, target = Path(input_path), Path(output_path)
    in_format, out_format = file_format(source, "input"), file_format(target, "output")
    if not source.is_file():
        raise InvalidArgument(
            f"cannot read the input {str(source)!r}: no such file", reason="INPUT_NOT_FOUND"
        )
    if not target.parent.is_dir():
        raise InvalidArgument(
            f"cannot write the output {str(target)!r}: the folder {str(target.parent)!r} does not exist",
            reason="OUTPUT_FOLDER_NOT_FOUND",
        )

    from tqdm import tqdm

    from keel import pyfunc

    model = pyfunc.load_model(model_uri)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    rows = chunks = 0
    try:
        with (
            _Writer(partial, out_format) as writer,
            tqdm(
                total=_row_count(source, in_format),
                unit="rows",
                file=sys.stderr,
                disable=not progress,
                desc="predict",
            ) as bar,
        ):
            for chunk in _read_chunks(source, in_format, batch_size):
                if chunk.empty:  # a header-only CSV: models refuse zero rows
                    continue
                writer.write(_score(model, chunk, id_column))
                rows += len(chunk)
                chunks += 1
                bar.update(len(chunk))
            if chunks == 0:  # an empty input still gives a readable, empty output
                writer.write_empty(id_column)
        os.replace(partial, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return BatchResult(rows=rows, chunks=chunks, output=target)


def _row_count(path: Path, fmt: str) -> int | None:
    """Rows in the input when its metadata says so cheaply (parquet), else None (bar without total)."""
    if fmt != "parquet":
        return None
    import pyarrow.parquet as pq

    try:
        return int(pq.ParquetFile(path).metadata.num_rows)
    except Exception:  # unreadable: the reader below says why, in the same words as for a bad chunk
        return None


def _read_chunks(path: Path, fmt: str, batch_size: int) -> Iterator[pd.DataFrame]:
    """The input's chunks; an error while reading becomes InvalidArgument naming the file."""
    import pandas as pd

    def chunks() -> Iterator[pd.DataFrame]:
        if fmt == "csv":
            with pd.read_csv(path, chunksize=batch_size) as reader:
                yield from reader
        elif fmt == "jsonl":
            with pd.read_json(path, lines=True, chunksize=batch_size) as reader:
                yield from reader
        else:
            import pyarrow.parquet as pq

            with pq.ParquetFile(path) as parquet:
                for batch in parquet.iter_batches(batch_size=batch_size):
                    yield batch.to_pandas()

    iterator = chunks()
    while True:
        try:
            chunk = next(iterator)
        except StopIteration:
            return
        except pd.errors.EmptyDataError:
            return  # a CSV with nothing in it, not even a header: no rows
        except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
            # pyarrow's ArrowInvalid is a ValueError, ArrowIOError an OSError
            detail = " ".join(str(exc).split()) or type(exc).__name__
            raise InvalidArgument(
                f"cannot read the input {str(path)!r} as {fmt}: {detail}", reason="UNREADABLE_INPUT"
            ) from exc
        yield chunk


def _score(model: Any, chunk: pd.DataFrame, id_column: str | None) -> pd.DataFrame:
    """The chunk's predictions as a frame, after its id column when one is named."""
    import pandas as pd

    features = chunk
    if id_column is not None:
        if id_column not in chunk.columns:
            raise InvalidArgument(
                f"the id column {id_column!r} is not in the input (columns: {list(chunk.columns)})",
                reason="ID_COLUMN_NOT_FOUND",
            )
        features = chunk.drop(columns=[id_column])
    predictions = _as_frame(model.predict(features))
    if len(predictions) != len(chunk):
        raise InvalidArgument(
            f"the model returned {len(predictions)} predictions for {len(chunk)} rows",
            reason="PREDICTION_COUNT",
        )
    predictions.index = chunk.index
    if id_column is None:
        return predictions.reset_index(drop=True)
    if id_column in predictions.columns:
        predictions = predictions.rename(columns={id_column: f"{PREDICTION_COLUMN}_{id_column}"})
    return pd.concat([chunk[[id_column]], predictions], axis=1).reset_index(drop=True)


def _as_frame(predictions: Any) -> pd.DataFrame:
    """Predictions of any pyfunc shape as columns: one ``prediction`` column for a vector,
    ``prediction_0..n`` for a matrix, the model's own names for a frame or a dict of columns."""
    import numpy as np
    import pandas as pd

    if isinstance(predictions, pd.DataFrame):
        return predictions.rename(columns=str)
    if isinstance(predictions, pd.Series):
        return predictions.to_frame(PREDICTION_COLUMN)
    if isinstance(predictions, dict):
        return pd.DataFrame({str(k): _column(v) for k, v in predictions.items()})
    array = np.asarray(predictions)
    if array.ndim == 2:
        return pd.DataFrame(array, columns=[f"{PREDICTION_COLUMN}_{i}" for i in range(array.shape[1])])
    return pd.DataFrame({PREDICTION_COLUMN: _column(array)})


def _column(values: Any) -> Any:
    """A column value: 1-D as is, higher ranks as one list per row (a parquet list column)."""
    import numpy as np

    array = np.asarray(values)
    return list(array) if array.ndim > 1 else array


class _Writer:
    """Appends frames to one output file: parquet row groups, CSV or JSON lines."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path = path
        self.fmt = fmt
        self._file: IO[str] | None = None
        self._parquet: Any = None  # pyarrow.parquet.ParquetWriter, opened on the first frame
        self._schema: Any = None  # its pyarrow schema: the first frame's column types

    def __enter__(self) -> _Writer:
        if self.fmt != "parquet":
            self._file = open(self.path, "w", encoding="utf-8", newline="")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._parquet is not None:
            self._parquet.close()
        if self._file is not None:
            self._file.close()

    def write(self, frame: pd.DataFrame) -> None:
        if self.fmt == "csv":
            assert self._file is not None
            frame.to_csv(self._file, header=self._file.tell() == 0, index=False)
        elif self.fmt == "jsonl":
            assert self._file is not None
            if len(frame):
                self._file.write(frame.to_json(orient="records", lines=True).rstrip("\n") + "\n")
        else:
            self._write_parquet(frame)

    def write_empty(self, id_column: str | None) -> None:
        import pandas as pd

        columns = [id_column, PREDICTION_COLUMN] if id_column else [PREDICTION_COLUMN]
        self.write(pd.DataFrame({c: pd.Series([], dtype="float64") for c in columns}))

    def _write_parquet(self, frame: pd.DataFrame) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self._parquet is None:
            table = pa.Table.from_pandas(frame, preserve_index=False)
            self._schema = table.schema
            self._parquet = pq.ParquetWriter(self.path, table.schema)
        else:
            # later chunks take the first one's types (one parquet file has one schema)
            schema = self._schema
            try:
                table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError, KeyError) as exc:
                raise InvalidArgument(
                    f"the predictions of a later chunk do not fit the output's columns {schema.names}: {exc}",
                    reason="PREDICTION_SCHEMA_CHANGED",
                ) from exc
        self._parquet.write_table(table)
