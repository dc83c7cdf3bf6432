"""`complete()` and `embed()` in DuckDB, answered by a running hub.

Each function is vectorized over Arrow: DuckDB hands over a whole vector of rows (2,048
at most) and it goes to the hub as one /relay batch, so the engine decodes them together.
DuckDB cannot overload a Python function's name, so `complete` is a macro with two
overloads over one function.
"""

from __future__ import annotations

import json

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
