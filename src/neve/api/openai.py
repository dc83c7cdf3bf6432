"""The OpenAI-compatible routes. Engines return chunk streams; here they become SSE, or
are gathered into one response."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel

from neve.api.errors import engine_error_body
from neve.api.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionRequest,
    ModelList,
    ModelObject,
    SamplingFields,
    Usage,
)
from neve.engine.base import EngineError

router = APIRouter(prefix="/v1")
C = TypeVar("C", ChunkChoice, CompletionChoice)
log = logging.getLogger("neve.api")


@router.get("/models")
async def models(request: Request) -> ModelList:
    created = request.app.state.started
    return ModelList(
        data=[
            ModelObject(
                id=m.id, created=created, owned_by=m.owned_by, max_model_len=m.max_model_len
            )
            for m in request.app.state.engine.models()
        ]
    )


@router.post("/chat/completions", response_model=None)
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    started = time.perf_counter()
    chunks = await request.app.state.engine.chat(body)
    if body.stream:
        return _sse(chunks, body, "chat", started)
    return JSONResponse((await _gather_chat(chunks, body, started)).model_dump())


@router.post("/completions", response_model=None)
async def completions(
    body: CompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    started = time.perf_counter()
    chunks = await request.app.state.engine.complete(body)
    if body.stream:
        return _sse(chunks, body, "completion", started)
    return JSONResponse((await _gather_completion(chunks, body, started)).model_dump())


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


@dataclass
class _Gathered(Generic[C]):
    """A whole stream: its first chunk, each choice's pieces in order, and the usage."""

    first: ChatCompletionChunk | CompletionChunk
    pieces: dict[int, list[C]] = field(default_factory=dict)
    finish: dict[int, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)


async def _gather(chunks: AsyncIterator[Any]) -> _Gathered[Any]:
    gathered: _Gathered[Any] | None = None
    async for chunk in chunks:
        gathered = gathered or _Gathered(first=chunk)
        if chunk.usage is not None:
            gathered.usage = chunk.usage
        for choice in chunk.choices:
            gathered.pieces.setdefault(choice.index, []).append(choice)
            if choice.finish_reason:
                gathered.finish[choice.index] = choice.finish_reason
    assert gathered is not None, "an engine stream always ends with its usage chunk"
    return gathered


async def _gather_chat(
    chunks: AsyncIterator[ChatCompletionChunk], body: ChatCompletionRequest, started: float
) -> ChatCompletion:
    g: _Gathered[ChunkChoice] = await _gather(chunks)
    _log_done("chat", body, g.usage, started)
    return ChatCompletion(
        id=g.first.id,
        created=g.first.created,
        model=g.first.model,
        usage=g.usage,
        choices=[
            ChatChoice(
                index=i,
                message=AssistantMessage(
                    content="".join(p.delta.content or "" for p in pieces),
                    reasoning_content="".join(p.delta.reasoning_content or "" for p in pieces)
                    or None,
                ),
                finish_reason=g.finish.get(i),
            )
            for i, pieces in sorted(g.pieces.items())
        ],
    )


async def _gather_completion(
    chunks: AsyncIterator[CompletionChunk], body: CompletionRequest, started: float
) -> Completion:
    g: _Gathered[CompletionChoice] = await _gather(chunks)
    _log_done("completion", body, g.usage, started)
    return Completion(
        id=g.first.id,
        created=g.first.created,
        model=g.first.model,
        usage=g.usage,
        choices=[
            CompletionChoice(
                index=i, text="".join(p.text for p in pieces), finish_reason=g.finish.get(i)
            )
            for i, pieces in sorted(g.pieces.items())
        ],
    )


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
