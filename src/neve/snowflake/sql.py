"""Snowflake SQL for calling a neve service from queries (Snowpark Container Services)."""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r'^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*){0,2}$|^"[^"]+"$')


def _identifier(kind: str, value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{kind} {value!r} is not a Snowflake identifier")
    return value


def function_ddl(*, service: str, endpoint: str, prefix: str, max_batch_rows: int) -> str:
    """CREATE FUNCTION statements for COMPLETE's two forms and for embeddings."""
    service = _identifier("service", service)
    endpoint = _identifier("endpoint", endpoint)
    complete = _identifier("function prefix", f"{prefix}_complete")
    embed = _identifier("function prefix", f"{prefix}_embed")
    if max_batch_rows < 1:
        raise ValueError("max_batch_rows must be at least 1")

    def create(name: str, args: str, returns: str, path: str) -> str:
        return (
            f"CREATE OR REPLACE FUNCTION {name}({args})\n"
            f"  RETURNS {returns}\n"
            f"  SERVICE = {service}\n"
            f"  ENDPOINT = {endpoint}\n"
            f"  MAX_BATCH_ROWS = {max_batch_rows}\n"
            f"  AS '{path}';\n"
        )

    return "\n".join(
        [
            "-- The model as a SQL function, served by neve. Rows go to the service in batches",
            "-- of up to MAX_BATCH_ROWS, which neve generates together.",
            create(complete, "prompt VARCHAR", "VARCHAR", "/relay"),
            "-- options: OBJECT_CONSTRUCT('temperature', 0.2, 'max_tokens', 200, 'system', '...')",
            create(complete, "prompt VARCHAR, options OBJECT", "VARCHAR", "/relay"),
            create(embed, "text VARCHAR", "ARRAY", "/relay/embed"),
            f"-- SELECT {complete}('Summarize: ' || body) FROM tickets;",
        ]
    )
