"""Structured logging for the services: one line per record, `key=value` (or JSON), carrying the service,
the RPC, the request id and the run id from contextvars, so `grep run_id=r-...` follows a run everywhere."""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import Any

rpc_var: contextvars.ContextVar[str] = contextvars.ContextVar("rpc", default="")
request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
run_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("run_id", default="")

_CONTEXT = (("rpc", rpc_var), ("request_id", request_id_var), ("run_id", run_id_var))
_STANDARD = (
    set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "service"} | {n for n, _ in _CONTEXT}
)


def bind_run_id(run_id: str) -> None:
    """Tag the rest of this call's log lines with the run id."""
    run_id_var.set(run_id)


@contextlib.contextmanager
def run_context(run_id: str) -> Iterator[None]:
    token = run_id_var.set(run_id)
    try:
        yield
    finally:
        run_id_var.reset(token)


class _ContextFilter(logging.Filter):
    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        for name, var in _CONTEXT:
            if not getattr(record, name, ""):
                setattr(record, name, var.get())
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    out: dict[str, Any] = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        + f".{int(record.msecs):03d}Z",
        "level": record.levelname,
        "service": getattr(record, "service", ""),
        "logger": record.name,
        "msg": record.getMessage(),
    }
    for name, _ in _CONTEXT:
        if getattr(record, name, ""):
            out[name] = getattr(record, name)
    for key, value in record.__dict__.items():
        if key not in _STANDARD and key not in out and not key.startswith("_"):
            out[key] = value
    if record.exc_info:
        out["exc"] = logging.Formatter().formatException(record.exc_info)
    return out


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        parts = []
        for key, value in _fields(record).items():
            text = str(value)
            if key == "exc":
                continue
            if not text or any(c in text for c in " =\"'") or key == "msg":
                text = json.dumps(text)
            parts.append(f"{key}={text}")
        line = " ".join(parts)
        if record.exc_info:
            line += "\n" + logging.Formatter().formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(_fields(record), default=str)


def setup_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once per process: stderr, one structured line per record."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    handler.addFilter(_ContextFilter(service))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
