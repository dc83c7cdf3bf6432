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
    """One function: a service function answered by the relay at `path`, or, with a
    `body`, a SQL table function over one (SEARCH_DOCS over its rows' array)."""

    name: str
    args: str
    returns: str
    path: str
    body: str | None = None

    @property
    def signature(self) -> str:
        """Its argument types, as GRANT and DROP name an overload."""
        types = [arg.split()[1] for arg in self.args.split(", ") if arg]
        return f"{self.name}({', '.join(types)})"

    def create(self, service: str, endpoint: str, options: Mapping[str, object]) -> str:
        if self.body is not None:
            return (f"CREATE OR REPLACE FUNCTION {self.name}({self.args})\n"
                    f"  RETURNS {self.returns}\n  AS $$\n{self.body}\n$$")  # fmt: skip
        lines = [f"CREATE OR REPLACE FUNCTION {self.name}({self.args})",
                 f"  RETURNS {self.returns}", f"  SERVICE = {service}",
                 f"  ENDPOINT = {endpoint}",
                 *(f"  {key} = {value}" for key, value in options.items()),
                 f"  AS '{self.path}'"]  # fmt: skip
        return "\n".join(lines)


# Cortex's AI functions as service functions: (name, arguments, result), each form one
# function (Snowflake overloads by arguments). Named with the prefix: an unqualified
# AI_CLASSIFY is Cortex's own. AI_AGG takes the group's values as an array (ARRAY_AGG):
# a service function cannot be an aggregate.
AI_FUNCTIONS = [
    ("classify", "input VARCHAR, categories ARRAY", "OBJECT"),
    ("classify", "input VARCHAR, categories ARRAY, options OBJECT", "OBJECT"),
    ("filter", "input VARCHAR", "BOOLEAN"),
    ("extract", "text VARCHAR, response_format VARIANT", "OBJECT"),
    ("sentiment", "text VARCHAR", "OBJECT"),
    ("sentiment", "text VARCHAR, categories ARRAY", "OBJECT"),
    ("summarize", "text VARCHAR", "VARCHAR"),
    ("translate", "text VARCHAR, source_language VARCHAR, target_language VARCHAR", "VARCHAR"),
    ("similarity", "input1 VARCHAR, input2 VARCHAR", "FLOAT"),
    ("agg", "vals ARRAY, instruction VARCHAR", "VARCHAR"),
]
# SEARCH_DOCS(query [, filters, k]) as rows: the passages of the relay's array, flattened.
SEARCH_COLUMNS = ("document VARCHAR, path VARCHAR, title VARCHAR, section VARCHAR, "
                  "page NUMBER, text VARCHAR, score FLOAT")  # fmt: skip
_SEARCH_BODY = """SELECT value:document::VARCHAR, value:path::VARCHAR, value:title::VARCHAR,
       value:section::VARCHAR, value:page::NUMBER, value:text::VARCHAR, value:score::FLOAT
FROM TABLE(FLATTEN(input => {rows}({args})))"""


def functions(prefix: str) -> list[Function]:
    """The functions named `<prefix>_complete`, `<prefix>_embed`, `<prefix>_ai_<name>`
    and `<prefix>_search_docs` (the suffixes in the prefix's case)."""

    def named(suffix: str) -> str:
        return _identifier(
            "function prefix", prefix + (suffix.upper() if prefix.isupper() else suffix)
        )

    suffixes = ("_complete", "_embed", "_search_docs_rows", "_search_docs")
    complete, embed, rows, search = (named(s) for s in suffixes)
    whole = "query VARCHAR, filters OBJECT, k NUMBER"
    found = [
        Function(complete, "prompt VARCHAR", "VARCHAR", "/relay"),
        Function(complete, "prompt VARCHAR, options OBJECT", "VARCHAR", "/relay"),
        Function(embed, "text VARCHAR", "ARRAY", "/relay/embed"),
        *(Function(named(f"_ai_{name}"), args, returns, f"/relay/ai/{name}")
          for name, args, returns in AI_FUNCTIONS),
        Function(rows, whole, "ARRAY", "/relay/search_docs"),
    ]  # fmt: skip
    for args, passed in (("query VARCHAR", "query, NULL, NULL"), (whole, "query, filters, k")):
        body = _SEARCH_BODY.format(rows=rows, args=passed)
        found.append(Function(search, args, f"TABLE ({SEARCH_COLUMNS})", "", body))
    return found


def function_ddl(*, service: str, endpoint: str, prefix: str, max_batch_rows: int) -> str:
    """CREATE FUNCTION statements for COMPLETE's two forms and for embeddings."""
    service = _identifier("service", service)
    endpoint = _identifier("endpoint", endpoint)
    if max_batch_rows < 1:
        raise ValueError("max_batch_rows must be at least 1")
    complete, options_form, embed, *others = functions(prefix)
    batch = {"MAX_BATCH_ROWS": max_batch_rows}
    return "\n".join(
        [
            "-- The model as a SQL function, served by neve. Rows go to the service in batches",
            "-- of up to MAX_BATCH_ROWS, which neve generates together.",
            complete.create(service, endpoint, batch) + ";\n",
            "-- options: OBJECT_CONSTRUCT('temperature', 0.2, 'max_tokens', 200, 'system', '...')",
            options_form.create(service, endpoint, batch) + ";\n",
            embed.create(service, endpoint, batch) + ";\n",
            "-- Cortex's AI functions over this model, and the documents' passages as rows.",
            *(fn.create(service, endpoint, batch) + ";\n" for fn in others),
            f"-- SELECT {complete.name}('Summarize: ' || body) FROM tickets;",
        ]
    )
