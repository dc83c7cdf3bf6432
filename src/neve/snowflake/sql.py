"""Snowflake SQL for calling a neve service from queries (Snowpark Container Services):
the service functions, defined once for `neve snowflake sql` and `neve deploy spcs`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_IDENTIFIER = re.compile(r'^[A-Za-z_][\w$]*(\.[A-Za-z_][\w$]*){0,2}$|^"[^"]+"$')


def _identifier(kind: str, value: str) -> str:
    if not _IDENTIFIER.match(value):
        raise ValueError(f"{kind} {value!r} is not a Snowflake identifier")
    return value


@dataclass(frozen=True)
class Function:
    """One service function: the model's COMPLETE (two forms) or EMBED."""

    name: str
    args: str
    returns: str
    path: str

    @property
    def signature(self) -> str:
        """Its argument types, as GRANT and DROP name an overload."""
        return f"{self.name}({', '.join(arg.split()[1] for arg in self.args.split(', '))})"

    def create(self, service: str, endpoint: str, options: Mapping[str, object]) -> str:
        lines = [f"CREATE OR REPLACE FUNCTION {self.name}({self.args})",
                 f"  RETURNS {self.returns}", f"  SERVICE = {service}",
                 f"  ENDPOINT = {endpoint}",
                 *(f"  {key} = {value}" for key, value in options.items()),
                 f"  AS '{self.path}'"]  # fmt: skip
        return "\n".join(lines)


def functions(prefix: str) -> list[Function]:
    """The functions named `<prefix>_complete` and `<prefix>_embed` (the suffixes in the
    prefix's case)."""
    suffixes = ("_COMPLETE", "_EMBED") if prefix.isupper() else ("_complete", "_embed")
    complete, embed = (_identifier("function prefix", prefix + s) for s in suffixes)
    return [
        Function(complete, "prompt VARCHAR", "VARCHAR", "/relay"),
        Function(complete, "prompt VARCHAR, options OBJECT", "VARCHAR", "/relay"),
        Function(embed, "text VARCHAR", "ARRAY", "/relay/embed"),
    ]


def function_ddl(*, service: str, endpoint: str, prefix: str, max_batch_rows: int) -> str:
    """CREATE FUNCTION statements for COMPLETE's two forms and for embeddings."""
    service = _identifier("service", service)
    endpoint = _identifier("endpoint", endpoint)
    if max_batch_rows < 1:
        raise ValueError("max_batch_rows must be at least 1")
    complete, options_form, embed = functions(prefix)
    batch = {"MAX_BATCH_ROWS": max_batch_rows}
    return "\n".join(
        [
            "-- The model as a SQL function, served by neve. Rows go to the service in batches",
            "-- of up to MAX_BATCH_ROWS, which neve generates together.",
            complete.create(service, endpoint, batch) + ";\n",
            "-- options: OBJECT_CONSTRUCT('temperature', 0.2, 'max_tokens', 200, 'system', '...')",
            options_form.create(service, endpoint, batch) + ";\n",
            embed.create(service, endpoint, batch) + ";\n",
            f"-- SELECT {complete.name}('Summarize: ' || body) FROM tickets;",
        ]
    )
