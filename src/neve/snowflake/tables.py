"""Feedback and the request log as tables in the user's Snowflake database: their DDL and
the one statement that appends rows to them. Appending is a MERGE on each row's key, so
sending a batch twice (a retry after a lost answer, a restart before the local store
marked it sent) lands each row once."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Table:
    """A Snowflake table fed from the local store's table `source`, keyed by `key`."""

    source: str
    columns: tuple[tuple[str, str], ...]  # (name, Snowflake type), the local names upper-cased
    key: str

    def create(self, name: str) -> str:
        columns = ",\n".join(f"  {column} {kind}" for column, kind in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {name} (\n{columns},\n  PRIMARY KEY ({self.key})\n)"

    def merge(self, name: str, rows: int) -> str:
        """Append `rows` rows (bound as %s, row after row) whose keys are not there yet."""
        names = [column for column, _ in self.columns]
        cast = ", ".join(
            f"column{i}::{kind} AS {column}" for i, (column, kind) in enumerate(self.columns, 1)
        )
        values = ", ".join(["(" + ", ".join(["%s"] * len(names)) + ")"] * rows)
        return (
            f"MERGE INTO {name} AS t USING (SELECT {cast} FROM VALUES {values}) AS s\n"
            f"  ON t.{self.key} = s.{self.key}\n"
            f"  WHEN NOT MATCHED THEN INSERT ({', '.join(names)})\n"
            f"  VALUES ({', '.join(f's.{n}' for n in names)})"
        )

    def bound(self, rows: list[dict[str, Any]]) -> list[Any]:
        """The rows' values in column order, as the connector binds them (times as ISO
        text with their zone, so no session setting shifts them)."""
        return [_value(row[column.lower()]) for row in rows for column, _ in self.columns]


def _value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value)
    return value


# ST_FEEDBACK's columns (RUN_ID, TIMESTAMP, USER_PROMPT, ASSISTANT_RESPONSE, SCORE,
# COMMENT) first, under their old names, then what links a row to its answer.
FEEDBACK = Table(
    source="feedback",
    columns=(
        ("RUN_ID", "VARCHAR"), ("TIMESTAMP", "TIMESTAMP_TZ"), ("USER_PROMPT", "VARCHAR"),
        ("ASSISTANT_RESPONSE", "VARCHAR"), ("SCORE", "NUMBER"), ("COMMENT", "VARCHAR"),
        ("MODEL", "VARCHAR"), ("USERNAME", "VARCHAR"), ("CONVERSATION_ID", "VARCHAR"),
        ("MESSAGE_ID", "VARCHAR"),
    ),
    key="RUN_ID",
)  # fmt: skip

REQUEST_LOG = Table(
    source="request_log",
    columns=(
        ("ID", "NUMBER"), ("TIME", "TIMESTAMP_TZ"), ("USERNAME", "VARCHAR"),
        ("KEY_ID", "VARCHAR"), ("ROUTE", "VARCHAR"), ("MODEL", "VARCHAR"),
        ("PROMPT_TOKENS", "NUMBER"), ("COMPLETION_TOKENS", "NUMBER"), ("TTFT_MS", "FLOAT"),
        ("LATENCY_MS", "FLOAT"), ("STATUS", "NUMBER"), ("ERROR", "VARCHAR"),
    ),
    key="ID",
)  # fmt: skip

TABLES = (FEEDBACK, REQUEST_LOG)
