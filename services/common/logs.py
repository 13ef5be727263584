"""Structured logging: one JSON object per line, carrying the request id of the current call."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import time

from keel_server.common.errors import clip

# A log line never carries more than this of a message or a traceback (a caller's 10 MB value
# quoted in an exception would otherwise become a 10 MB line).
MAX_LOG_FIELD_CHARS = 4096

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("keel_request_id", default="")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": clip(record.getMessage(), MAX_LOG_FIELD_CHARS),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key in ("method", "code", "duration_ms", "service", "port"):
            if hasattr(record, key):
                entry[key] = getattr(record, key)
        if record.exc_info:
            entry["exc"] = clip(self.formatException(record.exc_info), MAX_LOG_FIELD_CHARS)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return clip(super().format(record), 2 * MAX_LOG_FIELD_CHARS)


def configure(level: str = "INFO", as_json: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter() if as_json else TextFormatter()
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
