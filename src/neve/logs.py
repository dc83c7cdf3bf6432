"""Structured logs: one JSON object a line on stderr, quiet (warnings) by default."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _Stderr(logging.StreamHandler):
    """Writes to sys.stderr as it is when a record comes, not as it was when logging was
    configured: whatever swapped stderr since (a test runner's capture) may have closed
    that stream."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def first_line(exc: BaseException) -> str:
    """An error as one log field: its message's first line, else its type."""
    text = str(exc)
    return text.splitlines()[0] if text.strip() else type(exc).__name__


def configure(level: str) -> None:
    handler = _Stderr()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Libraries that install their own plain-text handlers log through ours instead.
    for name in ("huggingface_hub", "uvicorn", "uvicorn.error"):
        lib = logging.getLogger(name)
        lib.handlers[:] = []
        lib.propagate = True
    # Snowflake's connector warns of every cloud it does not run in (IMDS, proxies, its
    # telemetry); what fails reaches neve as an exception, which neve logs itself.
    logging.getLogger("snowflake.connector").setLevel(max(root.level, logging.ERROR))
