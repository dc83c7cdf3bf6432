"""`complete()`, `embed()`, Cortex's AI functions and `search_docs()` in DuckDB, answered
by a running hub.

Each function is vectorized over Arrow: DuckDB hands over a whole vector of rows (2,048
at most) and it goes to the hub as one /relay batch, so the engine decodes them together.
DuckDB cannot overload a Python function's name, so a function with optional arguments
is a macro with one overload per form over one function; arguments that are lists or
structs reach it as JSON. `ai_agg` is an aggregate macro over `list()`, `search_docs` a
table macro over the passages' list.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
from duckdb.func import FunctionNullHandling, PythonUDFType

from neve.client import NeveClient

EMBEDDING_DIMENSIONS = 384


def _options(text: str) -> object:
    """The macro passes options through to_json: a STRUCT arrives as a JSON object, a
    VARCHAR of JSON as a JSON string holding it. Either way the relay gets the object;
    text that is not JSON goes as it is, for the relay to refuse by row."""
    value = json.loads(text)
    if isinstance(value, str):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def register(con: duckdb.DuckDBPyConnection, client: NeveClient | None = None) -> None:
    """Add complete(prompt), complete(prompt, options) and embed(text) to `con`, answered
    by `client`'s hub (default: the one NEVE_URL or the settings name).

    `options` is a STRUCT or a JSON string with model, temperature, top_p, max_tokens,
    system (COMPLETE's options in Cortex)."""
    client = client or NeveClient.from_environment()

    def neve_complete(prompts: pa.Array, options: pa.Array) -> pa.Array:
        rows = [
            [i, p] if o is None else [i, p, _options(o)]
            for i, (p, o) in enumerate(zip(prompts.to_pylist(), options.to_pylist(), strict=True))
        ]
        return pa.array(client.relay(rows), type=pa.string())

    def neve_embed(texts: pa.Array) -> pa.Array:
        rows = [[i, t] for i, t in enumerate(texts.to_pylist())]
        vector = pa.list_(pa.float32(), EMBEDDING_DIMENSIONS)
        return pa.array(client.relay(rows, embed=True), type=vector)

    con.create_function(
        "neve_complete",
        neve_complete,
        ["VARCHAR", "VARCHAR"],
        "VARCHAR",
        type=PythonUDFType.ARROW,
        null_handling=FunctionNullHandling.SPECIAL,  # NULL options: the one-argument form
        side_effects=True,  # sampling: equal prompts need not give equal answers
    )
    con.sql(
        "CREATE OR REPLACE TEMP MACRO complete(prompt) AS neve_complete(prompt, NULL), "
        "(prompt, options) AS neve_complete(prompt, to_json(options))"
    )
    con.create_function(
        "embed",
        neve_embed,
        ["VARCHAR"],
        f"FLOAT[{EMBEDDING_DIMENSIONS}]",
        type=PythonUDFType.ARROW,
    )
    _register_ai(con, client)


_LABELS = pa.struct([("labels", pa.list_(pa.string()))])
_ASPECT = pa.struct([("name", pa.string()), ("sentiment", pa.string())])
_SENTIMENTS = pa.struct([("categories", pa.list_(_ASPECT))])
_HITS = pa.list_(pa.struct([
    ("document", pa.string()), ("path", pa.string()), ("title", pa.string()),
    ("section", pa.string()), ("page", pa.int32()), ("text", pa.string()),
    ("score", pa.float64()),
]))  # fmt: skip


@dataclass(frozen=True)
class _Ai:
    """An AI function: its one Python function's argument types (JSON ones are parsed
    before they go to the hub), its result in DuckDB and Arrow, and the macro's forms as
    (parameters, the expression they stand for, `{f}` standing for that function)."""

    types: list[str]
    returns: str
    arrow: pa.DataType
    forms: list[tuple[str, str]]


_AI = {
    "classify": _Ai(["VARCHAR", "JSON", "JSON"], "STRUCT(labels VARCHAR[])", _LABELS, [
        ("t, categories", "{f}(t, to_json(categories), NULL)"),
        ("t, categories, options", "{f}(t, to_json(categories), to_json(options))")]),
    "filter": _Ai(["VARCHAR"], "BOOLEAN", pa.bool_(), [("t", "{f}(t)")]),
    # Answered as text (Arrow has no JSON type DuckDB takes back), made JSON by the macro.
    "extract": _Ai(["VARCHAR", "JSON"], "VARCHAR", pa.string(),
                   [("t, response_format", "{f}(t, to_json(response_format))::JSON")]),
    "sentiment": _Ai(["VARCHAR", "JSON"],
                     "STRUCT(categories STRUCT(name VARCHAR, sentiment VARCHAR)[])", _SENTIMENTS,
                     [("t", "{f}(t, NULL)"), ("t, categories", "{f}(t, to_json(categories))")]),
    "summarize": _Ai(["VARCHAR"], "VARCHAR", pa.string(), [("t", "{f}(t)")]),
    "translate": _Ai(["VARCHAR", "VARCHAR", "VARCHAR"], "VARCHAR", pa.string(),
                     [("t, source, target", "{f}(t, source, target)")]),
    "similarity": _Ai(["VARCHAR", "VARCHAR"], "DOUBLE", pa.float64(), [("a, b", "{f}(a, b)")]),
    # An aggregate: the group's values as one list.
    "agg": _Ai(["JSON", "VARCHAR"], "VARCHAR", pa.string(),
               [("t, instruction", "{f}(to_json(list(t)), instruction)")]),
}  # fmt: skip
_HIT_TYPE = ("STRUCT(document VARCHAR, path VARCHAR, title VARCHAR, section VARCHAR, "
             "page INTEGER, text VARCHAR, score DOUBLE)[]")  # fmt: skip


def _taking(count: int, function: Callable[..., pa.Array]) -> Callable[..., pa.Array]:
    """`function` with `count` named parameters: DuckDB counts a UDF's parameters."""
    forms: dict[int, Callable[..., pa.Array]] = {
        1: lambda a: function(a),
        2: lambda a, b: function(a, b),
        3: lambda a, b, c: function(a, b, c),
    }
    return forms[count]


def _json_in(value: object) -> object:
    """A JSON argument as the relay takes it: parsed (NULL stays None)."""
    return None if value is None else json.loads(str(value))


def _register_ai(con: duckdb.DuckDBPyConnection, client: NeveClient) -> None:
    for name, spec in _AI.items():

        def answer(*columns: pa.Array, name: str = name, spec: _Ai = spec) -> pa.Array:
            parsed = [[_json_in(v) for v in c.to_pylist()] if t == "JSON" else c.to_pylist()
                      for c, t in zip(columns, spec.types, strict=True)]  # fmt: skip
            rows = [[i, *row] for i, row in enumerate(zip(*parsed, strict=True))]
            results = client.relay(rows, function=f"ai/{name}")
            if name == "extract":
                results = [None if r is None else json.dumps(r) for r in results]
            return pa.array(results, type=spec.arrow)

        call = f"neve_ai_{name}"
        con.create_function(
            call, _taking(len(spec.types), answer), list[Any](spec.types),
            spec.returns, type=PythonUDFType.ARROW,
            null_handling=FunctionNullHandling.SPECIAL,  # the relay answers NULL for NULL
            side_effects=True,  # sampling: equal rows need not give equal answers
        )  # fmt: skip
        forms = ", ".join(f"({params}) AS {expr.format(f=call)}" for params, expr in spec.forms)
        con.sql(f"CREATE OR REPLACE TEMP MACRO ai_{name}{forms}")

    def search(queries: pa.Array, filters: pa.Array, ks: pa.Array) -> pa.Array:
        given = zip(queries.to_pylist(), filters.to_pylist(), ks.to_pylist(), strict=True)
        rows = [[i, q, _json_in(f), k] for i, (q, f, k) in enumerate(given)]
        return pa.array(client.relay(rows, function="search_docs"), type=_HITS)

    con.create_function(
        "neve_search_docs", search, ["VARCHAR", "JSON", "INTEGER"], _HIT_TYPE,
        type=PythonUDFType.ARROW, null_handling=FunctionNullHandling.SPECIAL, side_effects=True,
    )  # fmt: skip
    con.sql(
        "CREATE OR REPLACE TEMP MACRO search_docs(query, filters := NULL, k := NULL) AS TABLE "
        "SELECT unnest(neve_search_docs(query, to_json(filters), k), recursive := true)"
    )
