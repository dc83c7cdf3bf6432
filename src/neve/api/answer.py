"""Answering a chat or completion request: the engine's reply becomes server-sent events
or one gathered response, with its metrics, request-log outcome and log line. Both the
OpenAI routes and the RAG routes answer through here."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from neve.api.disconnect import unless_client_leaves
from neve.api.errors import error_event
from neve.api.grounding import fixed_answer, ground, is_rag_model
from neve.api.keepalive import KEEPALIVE, opened, paced
from neve.api.metrics import Metrics
from neve.api.request_log import Outcome, outcome_of
from neve.api.state import state_of
from neve.engine.replies import (
    ChatReply,
    ChatStream,
    CompletionReply,
    CompletionStream,
    RawChunk,
    gather_chat,
    gather_completion,
)
from neve.errors import NeveError, unexpected
from neve.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    SamplingFields,
    Usage,
    new_id,
    now,
)

log = logging.getLogger("neve.api")


async def chat_reply(
    request: Request, body: ChatCompletionRequest, **rag_options: Any
) -> JSONResponse | StreamingResponse:
    """A chat answer; for model `rag` or `rag:<model>`, grounded in the documents, with
    their citations (a field of the response, or of a first chunk with no choices)."""
    started = time.perf_counter()
    extra: dict[str, Any] | None = None
    if is_rag_model(body.model):
        body, citations, fixed = await ground(request, body, **rag_options)
        extra = {"citations": citations}
        if fixed is not None:
            answer = fixed_answer(fixed, model_of(request, body))
            return await _respond(request, answer, body, "chat", started, gather_chat, extra)
    engine = state_of(request).engine
    reply = await opened(engine.chat(body), _keepalive(request, body))
    return await _respond(request, reply, body, "chat", started, gather_chat, extra)


async def completion_reply(
    request: Request, body: CompletionRequest
) -> JSONResponse | StreamingResponse:
    started = time.perf_counter()
    engine = state_of(request).engine
    reply = await opened(engine.complete(body), _keepalive(request, body))
    return await _respond(request, reply, body, "completion", started, gather_completion)


async def passed_on(
    request: Request,
    reply: dict[str, Any] | AsyncGenerator[RawChunk, None],
    body: SamplingFields,
    route: str,
    started: float,
) -> JSONResponse | StreamingResponse:
    """An upstream's own answer in another protocol (its whole JSON, or its events),
    passed on as it wrote it, with the chat path's metrics, request-log outcome and log
    line; `body` is the request in chat's terms."""
    return await _respond(request, reply, body, route, started, gather_chat)


def _keepalive(request: Request, body: SamplingFields) -> float:
    """Seconds between keep-alives of a stream that waits (0: none; whole answers get
    none, having no bytes to send before they end)."""
    return state_of(request).settings.stream_keepalive if body.stream else 0


async def _respond(
    request: Request,
    reply: ChatReply | CompletionReply | asyncio.Task[Any],
    body: SamplingFields,
    route: str,
    started: float,
    gather: Callable[[Any], Awaitable[ChatCompletion | Completion]],
    extra: dict[str, Any] | None = None,
) -> JSONResponse | StreamingResponse:
    metrics = state_of(request).metrics
    model = model_of(request, body)
    outcome = outcome_of(request)
    outcome.model = model
    if isinstance(reply, dict):  # an upstream's whole answer, passed on as it wrote it
        usage = _usage_of(reply)
        outcome.used(usage)
        reasons = [c["finish_reason"] for c in reply.get("choices", []) if c.get("finish_reason")]
        metrics.finished(model, started, usage, reasons)
        _log_done(route, body, usage, started)
        return JSONResponse({**reply, **(extra or {})})
    if isinstance(reply, asyncio.Task):  # a stream still opening: start with keep-alives
        observed = _when_open(reply, lambda r: metrics.observe(r, model, started, outcome))
    else:
        observed = metrics.observe(reply, model, started, outcome)
    if body.stream:
        events = _events(
            observed, body, route, started, metrics, outcome, _keepalive(request, body), extra
        )
        return StreamingResponse(
            events,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    whole = await unless_client_leaves(request.receive, gather(observed))
    _log_done(route, body, whole.usage, started)
    return JSONResponse({**whole.model_dump(), **(extra or {})})


def model_of(request: Request, body: SamplingFields) -> str:
    """The model the request names, or the engine's first when it names none."""
    return body.model or next((m.id for m in state_of(request).engine.models()), "")


def _usage_of(reply: dict[str, Any]) -> Usage | None:
    usage = reply.get("usage")
    return Usage.read(usage) if isinstance(usage, dict) else None


async def _when_open(
    task: asyncio.Task[Any], observe: Callable[[Any], AsyncGenerator[Any, None]]
) -> AsyncGenerator[Any, None]:
    """The stream `task` opens, once it has; its failure becomes the stream's."""
    chunks = observe(await task)
    try:
        async for chunk in chunks:
            yield chunk
    finally:
        await chunks.aclose()


async def _events(
    chunks: ChatStream | CompletionStream,
    body: SamplingFields,
    route: str,
    started: float,
    metrics: Metrics,
    outcome: Outcome,
    keepalive: float,
    extra: dict[str, Any] | None = None,
) -> AsyncIterator[str | bytes]:
    if extra:  # a chunk with no choices, as the usage chunk: clients pass over it
        head = {"id": new_id("chatcmpl"), "object": "chat.completion.chunk", "created": now(),
                "model": body.model or "", "choices": [], **extra}  # fmt: skip
        yield f"data: {json.dumps(head)}\n\n"
    include_usage = body.include_usage
    usage: Usage | None = None
    done = False  # an upstream's stream brings its own [DONE]
    arriving = paced(chunks, keepalive)
    try:
        async for chunk in arriving:
            if chunk is None:  # nothing for `keepalive` seconds
                yield KEEPALIVE
                continue
            if isinstance(chunk, RawChunk):  # an upstream's events, in the client's terms
                usage = chunk.usage or usage
                done = done or chunk.done
                yield chunk.data
                continue
            if not chunk.choices:  # the engine's closing usage chunk
                usage = chunk.usage
                if include_usage:
                    yield f"data: {chunk.model_dump_json()}\n\n"
                continue
            # Engines report usage so far on every chunk (for the tally of an answer cut
            # short); clients see it on the closing chunk alone, as OpenAI sends it.
            data = chunk.model_dump_json(exclude={"usage"})
            if include_usage:
                data = data[:-1] + ',"usage":null}'
            yield f"data: {data}\n\n"
    except Exception as exc:
        error = exc if isinstance(exc, NeveError) else unexpected(exc)
        if error is not exc:
            log.error("stream failed", exc_info=exc)
        metrics.errors.labels(str(error.status)).inc()  # the response itself said 200
        outcome.error = error.message
        yield error_event(error)
    finally:
        # Closing the engine's stream cancels its sequences: a client that went away
        # frees its slot now, not when generation would have ended.
        await arriving.aclose()
        await chunks.aclose()
        _log_done(route, body, usage, started)
    if not done:
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
