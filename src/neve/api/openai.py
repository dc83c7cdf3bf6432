"""The OpenAI-compatible routes. Engines return chunk streams; here they become SSE, or
are gathered into one response."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from neve.api.errors import engine_error_body
from neve.api.gather import gather_chat, gather_completion
from neve.api.protocol import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    CompletionChunk,
    CompletionRequest,
    ModelList,
    ModelObject,
    SamplingFields,
    Usage,
)
from neve.engine.base import EngineError

router = APIRouter(prefix="/v1")
log = logging.getLogger("neve.api")


@router.get("/models")
async def models(request: Request) -> ModelList:
    created = request.app.state.started
    chat = [
        ModelObject(id=m.id, created=created, owned_by=m.owned_by, max_model_len=m.max_model_len)
        for m in request.app.state.engine.models()
    ]
    embedding = ModelObject(id=request.app.state.embedder.name, created=created, owned_by="neve")
    return ModelList(data=[*chat, embedding])


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    started = time.perf_counter()
    chunks = await request.app.state.engine.chat(body)
    if body.stream:
        return _sse(chunks, body, "chat", started)
    reply = await gather_chat(chunks)
    _log_done("chat", body, reply.usage, started)
    return JSONResponse(reply.model_dump())


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    started = time.perf_counter()
    chunks = await request.app.state.engine.complete(body)
    if body.stream:
        return _sse(chunks, body, "completion", started)
    reply = await gather_completion(chunks)
    _log_done("completion", body, reply.usage, started)
    return JSONResponse(reply.model_dump())


def _sse(
    chunks: AsyncIterator[BaseModel], body: SamplingFields, route: str, started: float
) -> StreamingResponse:
    return StreamingResponse(
        _events(chunks, body, route, started),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _events(
    chunks: AsyncIterator[BaseModel], body: SamplingFields, route: str, started: float
) -> AsyncIterator[str]:
    include_usage = body.include_usage
    usage: Usage | None = None
    try:
        async for chunk in chunks:
            assert isinstance(chunk, ChatCompletionChunk | CompletionChunk)
            if not chunk.choices:  # the engine's closing usage chunk
                usage = chunk.usage
                if include_usage:
                    yield f"data: {chunk.model_dump_json()}\n\n"
                continue
            exclude = None if include_usage else {"usage"}
            yield f"data: {chunk.model_dump_json(exclude=exclude)}\n\n"
    except EngineError as exc:
        yield f"data: {json.dumps(engine_error_body(exc))}\n\n"
    finally:
        # Closing the engine's stream cancels its sequences: a client that went away
        # frees its slot now, not when generation would have ended.
        await chunks.aclose()  # type: ignore[attr-defined]
        _log_done(route, body, usage, started)
    yield "data: [DONE]\n\n"


def _log_done(route: str, body: SamplingFields, usage: Usage | None, started: float) -> None:
    log.info(
        "request done",
        extra={
            "route": route,
            "model": body.model,
            "stream": body.stream,
            "prompt_tokens": usage.prompt_tokens if usage else None,
            "completion_tokens": usage.completion_tokens if usage else None,
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
            "completed": usage is not None,
        },
    )
