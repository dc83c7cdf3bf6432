"""Anthropic's Messages API (Claude Code, Anthropic's SDKs): each request is translated at
the edge into a chat request and answered through the chat path (answer.py), so keys,
rate limits, token counting, metrics, the request log, the `rag` models, reasoning,
tools and upstreams apply as they do to chat; the answer, whole or streamed, is
translated back. Errors on these routes take Anthropic's shape (api/errors.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from neve.api import spec
from neve.api.answer import chat_reply
from neve.api.state import state_of
from neve.api.translated import chat_events, event_stream
from neve.errors import BadRequest
from neve.protocol import anthropic
from neve.protocol.openai import ChatCompletion, ChatCompletionChunk

router = APIRouter(prefix="/v1")


@router.post(
    "/messages", response_model=None, responses=spec.answers(anthropic.Message, events=True)
)
async def messages(
    body: anthropic.MessagesRequest, request: Request
) -> JSONResponse | StreamingResponse:
    reply = await chat_reply(request, body.chat())
    if isinstance(reply, StreamingResponse):
        return event_stream(_events(reply.body_iterator, body.model))  # type: ignore[arg-type]
    whole = ChatCompletion.model_validate_json(bytes(reply.body))
    return JSONResponse(anthropic.message(whole))


@router.post("/messages/count_tokens")
async def count_tokens(
    body: anthropic.CountTokensRequest, request: Request
) -> anthropic.TokenCount:
    engine = state_of(request).engine
    count = getattr(engine, "count_tokens", None)
    if count is None:
        raise BadRequest(
            f"counting tokens is not supported by the {state_of(request).settings.engine} "
            "engine (llamacpp counts them)",
            code="unsupported",
        )
    return anthropic.TokenCount(input_tokens=await count(body.to_chat(max_tokens=1)))


async def _events(source: AsyncIterator[str | bytes], model: str) -> AsyncIterator[str]:
    """The chat path's server-sent events (OpenAI's, keep-alive comments, an error event)
    as Anthropic's stream."""
    wire = anthropic.MessageEvents(model)
    failed = False
    for out in wire.start():
        yield out
    async with aclosing(chat_events(source)) as events:
        async for data in events:
            if isinstance(data, str):
                yield data
            elif "error" in data:
                failed = True
                yield anthropic.event("error", anthropic.stream_error(data["error"]))
            else:
                for out in wire.chunk(ChatCompletionChunk.model_validate(data)):
                    yield out
    if not failed:
        for out in wire.end():
            yield out
