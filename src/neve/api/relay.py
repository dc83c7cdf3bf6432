"""POST /relay and /relay/embed: Snowflake service functions over the hub."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from neve.api.disconnect import unless_client_leaves
from neve.api.grounding import search_documents
from neve.api.request_log import outcome_of
from neve.api.state import state_of
from neve.errors import BadRequest, NotFound
from neve.protocol.openai import Usage
from neve.rag.service import citation
from neve.snowflake import ai
from neve.snowflake.relay import Batch, BatchReport, RowOptions, parse_batch

router = APIRouter(prefix="/relay")


def _batch_spec(
    arguments: list[dict[str, Any]], required: int, result: dict[str, Any]
) -> dict[str, Any]:
    """The OpenAPI of a batch route: the body is parsed by hand (Snowflake wants 400 for
    any malformed batch), so FastAPI cannot see its shape."""
    row = {"type": "array", "prefixItems": [{"type": "integer"}, *arguments],
           "minItems": 1 + required, "maxItems": 1 + len(arguments), "items": False}  # fmt: skip
    rows = {"type": "array", "items": row, "description": "[row_index, arguments...]; "
            "row indices are distinct"}  # fmt: skip
    answer = {"type": "array", "items": {"anyOf": [{"type": "integer"}, result]},
              "minItems": 2, "maxItems": 2, "description": "[row_index, result]"}  # fmt: skip
    return {
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["data"], "properties": {"data": rows}}}}},
        "responses": {"200": {"description": "one row per input row, same indices",
            "content": {"application/json": {"schema": {"type": "object", "required": ["data"],
                "properties": {"data": {"type": "array", "items": answer}}}}}}},
    }  # fmt: skip


_TEXT = {"type": ["string", "null"]}
_MESSAGES = {"type": "array", "minItems": 1, "items": {"type": "object", "required": ["role"],
             "properties": {"role": {"enum": ["system", "developer", "user", "assistant", "tool"]},
                            "content": {"type": ["string", "null"]}}}}  # fmt: skip
_OPTIONS = {"anyOf": [RowOptions.model_json_schema(), {"type": "string"}, {"type": "null"}],
            "description": "COMPLETE's options: an object, or text holding one"}  # fmt: skip
# What a row should hold. A row that holds something else answers NULL (or, with
# relay_on_row_error=fail, fails the batch naming the row), as a SQL function's would.
COMPLETE_SPEC = _batch_spec([{"anyOf": [_TEXT, _MESSAGES]}, _OPTIONS], 1, _TEXT)
EMBED_SPEC = _batch_spec([_TEXT], 1, {"type": ["array", "null"], "items": {"type": "number"}})

QUERY_ID = "sf-external-function-current-query-id"
BATCH_ID = "sf-external-function-query-batch-id"


async def _batch(request: Request, arity: tuple[int, ...]) -> Batch:
    return parse_batch(
        await request.body(),
        max_rows=state_of(request).settings.relay_max_rows,
        arity=arity,
        query_id=request.headers.get(QUERY_ID),
        batch_id=request.headers.get(BATCH_ID),
    )


@contextlib.contextmanager
def _accounted(request: Request) -> Iterator[BatchReport]:
    """A batch's report, whose tokens count against the caller's limits and land in the
    request log however the batch ends."""
    report = BatchReport()
    try:
        yield report
    finally:
        outcome_of(request).used(Usage.of(report.prompt_tokens, report.completion_tokens))


@router.post("", openapi_extra=COMPLETE_SPEC)
async def complete(request: Request) -> JSONResponse:
    """Rows of (prompt) or (prompt, options) to completions; NULL prompts give NULL."""
    batch = await _batch(request, (1, 2))
    with _accounted(request) as report:
        # Snowflake may give up on a slow batch: its rows then stop generating at once.
        answer = await unless_client_leaves(
            request.receive, state_of(request).relay.complete(batch, report)
        )
    state_of(request).metrics.relay_rows.inc(len(batch.rows))
    return JSONResponse(answer)


_ANY = {"description": "text, an array or an object, as the function takes"}
_OBJECT = {"type": ["object", "null"]}
# Each AI function's arguments after the row index, and its result (neve.snowflake.ai).
AI_SPECS = {
    "classify": _batch_spec([_TEXT, _ANY, _ANY], 2, _OBJECT),
    "filter": _batch_spec([_TEXT], 1, {"type": ["boolean", "null"]}),
    "extract": _batch_spec([_TEXT, _ANY], 2, _OBJECT),
    "sentiment": _batch_spec([_TEXT, _ANY], 1, _OBJECT),
    "summarize": _batch_spec([_TEXT], 1, _TEXT),
    "translate": _batch_spec([_TEXT, _TEXT, _TEXT], 3, _TEXT),
    "similarity": _batch_spec([_TEXT, _TEXT], 2, {"type": ["number", "null"]}),
    "agg": _batch_spec([_ANY, _TEXT], 2, _TEXT),
}


def _ai_route(name: str) -> None:
    async def answer(request: Request) -> JSONResponse:
        batch = await _batch(request, ai.ARITY[name])
        with _accounted(request) as report:
            answered = await unless_client_leaves(
                request.receive, state_of(request).relay.ai(name, batch, report)
            )
        state_of(request).metrics.relay_rows.inc(len(batch.rows))
        return JSONResponse(answered)

    answer.__doc__ = f"Rows to AI_{name.upper()}'s answers (Cortex's form); NULL in, NULL out."
    router.add_api_route(f"/ai/{name}", answer, methods=["POST"], name=f"ai_{name}",
                         openapi_extra=AI_SPECS[name])  # fmt: skip


for _name in ai.ARITY:
    _ai_route(_name)


_HIT = {"type": "object", "properties": {k: {} for k in
        ("document", "path", "title", "section", "page", "text", "score")}}  # fmt: skip
_K = {"type": ["integer", "null"], "minimum": 1, "maximum": 100}
SEARCH_SPEC = _batch_spec([_TEXT, _ANY, _K], 1,
                          {"type": ["array", "null"], "items": _HIT})  # fmt: skip


@router.post("/search_docs", openapi_extra=SEARCH_SPEC)
async def search_docs(request: Request) -> JSONResponse:
    """Rows of (query[, filters[, k]]) to the passages the caller may see, each with its
    citation (document, path, title, section, page, text, score)."""
    batch = await _batch(request, (1, 2, 3))
    relay = state_of(request).relay
    results: list[list[Any]] = []
    with _accounted(request) as report:
        for index, query, *rest in batch.rows:
            results.append([index, None])  # NULL in (or a row that fails), NULL out
            filters, k = [*rest, None, None][:2]
            if not isinstance(query, str) or not query.strip():
                continue
            try:
                filters = ai.parsed(filters, "the filters")
                if filters is not None and not isinstance(filters, dict):
                    raise BadRequest("the filters must be an object")
                if k is not None and (isinstance(k, bool) or not isinstance(k, int)
                                      or not 1 <= k <= 100):  # fmt: skip
                    raise BadRequest("k must be an integer from 1 to 100")
                hits = await search_documents(request, query, "search", top_k=k,
                                              filters=filters or None)  # fmt: skip
            except BadRequest as exc:  # the row's own, or a filter the index refuses
                relay.row_failed(report, index, exc.message)
                continue
            results[-1][1] = [citation(h) for h in hits]
    state_of(request).metrics.relay_rows.inc(len(batch.rows))
    return JSONResponse({"data": results})


RAY_NODES_SPEC = _batch_spec([], 0, {"type": "array", "items": {"type": "object"}})


@router.post("/ray_nodes", openapi_extra=RAY_NODES_SPEC)
async def ray_nodes(request: Request) -> JSONResponse:
    """Rows of () to the Ray cluster's nodes (id, address, alive, head, resources): what
    `neve deploy spcs up` waits on and `status` shows, with the engine ray."""
    batch = await _batch(request, (0,))
    nodes = getattr(state_of(request).engine, "nodes", None)
    if nodes is None:  # no cluster behind this hub: nothing at this address
        raise NotFound("the hub's engine is not ray: it has no Ray nodes")
    found = await asyncio.to_thread(nodes)
    return JSONResponse({"data": [[index, found] for index, *_ in batch.rows]})


@router.post("/embed", openapi_extra=EMBED_SPEC)
async def embed(request: Request) -> JSONResponse:
    """Rows of (text) to embedding vectors, as EMBED_TEXT gives them."""
    batch = await _batch(request, (1,))
    with _accounted(request) as report:
        answer = await state_of(request).relay.embed(batch, report)
    state_of(request).metrics.relay_rows.inc(len(batch.rows))
    return JSONResponse(answer)
