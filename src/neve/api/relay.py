"""POST /relay and /relay/embed: Snowflake service functions over the hub."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from neve.api.disconnect import unless_client_leaves
from neve.api.request_log import outcome_of
from neve.api.state import state_of
from neve.protocol.openai import Usage
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


@router.post("/embed", openapi_extra=EMBED_SPEC)
async def embed(request: Request) -> JSONResponse:
    """Rows of (text) to embedding vectors, as EMBED_TEXT gives them."""
    batch = await _batch(request, (1,))
    with _accounted(request) as report:
        answer = await state_of(request).relay.embed(batch, report)
    state_of(request).metrics.relay_rows.inc(len(batch.rows))
    return JSONResponse(answer)
