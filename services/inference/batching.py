"""Server-side micro-batching: concurrent small column requests to one deployment are merged
into one model call.

A request waits at most ``max_delay_s`` for others; a batch holds at most ``max_rows`` rows.
Each request is signature-checked on its own before it joins (so a bad request fails alone),
the batch is predicted once, and the output is cut back into per-request slices by row count.
A model whose output does not have one row per input row is answered request by request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from keel_server.inference.model import ServedModel

log = logging.getLogger("keel.inference")


class MicroBatcher:
    def __init__(self, name: str, max_rows: int, max_delay_s: float) -> None:
        self.name = name
        self.max_rows = max_rows
        self.max_delay_s = max_delay_s
        self._items: deque[tuple[ServedModel, pd.DataFrame, Future[Any]]] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"keel-batch-{name}", daemon=True)
        self._thread.start()

    def submit(self, model: ServedModel, frame: pd.DataFrame) -> Future[Any]:
        """Queues an already signature-checked frame; the future holds this request's slice."""
        future: Future[Any] = Future()
        with self._cond:
            if self._closed:
                future.set_exception(RuntimeError("the deployment is being deleted"))
                return future
            self._items.append((model, frame, future))
            self._cond.notify()
        return future

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)
        # Anything left is answered, never dropped.
        while self._items:
            model, frame, future = self._items.popleft()
            _predict_alone(model, frame, future)

    def _take_batch(self) -> list[tuple[ServedModel, pd.DataFrame, Future[Any]]]:
        with self._cond:
            while not self._items and not self._closed:
                self._cond.wait()
            if self._closed:
                return []
            deadline = time.monotonic() + self.max_delay_s
            rows = 0
            batch: list[tuple[ServedModel, pd.DataFrame, Future[Any]]] = []
            while True:
                while self._items and rows < self.max_rows:
                    item = self._items[0]
                    if batch and rows + len(item[1]) > self.max_rows:
                        break
                    self._items.popleft()
                    batch.append(item)
                    rows += len(item[1])
                remaining = deadline - time.monotonic()
                if rows >= self.max_rows or remaining <= 0 or self._closed:
                    return batch
                if self._items:  # the next one does not fit
                    return batch
                self._cond.wait(remaining)

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            if not batch:
                if self._closed:
                    return
                continue
            # A swap may put two model versions in one window: batch per model.
            by_model: dict[int, list[tuple[ServedModel, pd.DataFrame, Future[Any]]]] = {}
            for item in batch:
                by_model.setdefault(id(item[0]), []).append(item)
            for items in by_model.values():
                _predict_batch(items)


def _predict_alone(model: ServedModel, frame: pd.DataFrame, future: Future[Any]) -> None:
    try:
        future.set_result(model.predict(frame))
    except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
        future.set_exception(exc)


def _predict_batch(items: list[tuple[ServedModel, pd.DataFrame, Future[Any]]]) -> None:
    import pandas as pd

    from keel.models.utils import is_dataframe, is_series

    if len(items) == 1:
        _predict_alone(*items[0])
        return
    model = items[0][0]
    try:
        merged = pd.concat([frame for _, frame, _ in items], ignore_index=True)
        output = model.predict(merged)
    except BaseException:  # noqa: BLE001 - one bad apple: answer each alone with its own error
        for item in items:
            _predict_alone(*item)
        return
    if not (hasattr(output, "__len__") and len(output) == len(merged)) or isinstance(output, dict):
        for item in items:
            _predict_alone(*item)
        return
    start = 0
    for _, frame, future in items:
        end = start + len(frame)
        if is_dataframe(output) or is_series(output):
            part = output.iloc[start:end].reset_index(drop=True)
        else:
            part = output[start:end]
        future.set_result(part)
        start = end
