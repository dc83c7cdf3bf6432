"""POST /relay and /relay/embed: Snowflake service functions over the hub."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from neve.api.gather import unless_client_leaves
from neve.relay import Batch, parse_batch

router = APIRouter(prefix="/relay")

QUERY_ID = "sf-external-function-current-query-id"
BATCH_ID = "sf-external-function-query-batch-id"


async def _batch(request: Request, arity: tuple[int, ...]) -> Batch:
    return parse_batch(
        await request.body(),
        max_rows=request.app.state.settings.relay_max_rows,
        arity=arity,
        query_id=request.headers.get(QUERY_ID),
        batch_id=request.headers.get(BATCH_ID),
    )


@router.post("")
async def complete(request: Request) -> JSONResponse:
    """Rows of (prompt) or (prompt, options) to completions; NULL prompts give NULL."""
    batch = await _batch(request, (1, 2))
    # Snowflake may give up on a slow batch: its rows then stop generating at once.
    answer = await unless_client_leaves(request.receive, request.app.state.relay.complete(batch))
    request.app.state.metrics.relay_rows.inc(len(batch.rows))
    return JSONResponse(answer)


@router.post("/embed")
async def embed(request: Request) -> JSONResponse:
    """Rows of (text) to embedding vectors, as EMBED_TEXT gives them."""
    batch = await _batch(request, (1,))
    answer = await request.app.state.relay.embed(batch)
    request.app.state.metrics.relay_rows.inc(len(batch.rows))
    return JSONResponse(answer)
