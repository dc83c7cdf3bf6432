"""OpenAI's Responses API (Codex CLI, the Agents SDK): each request, with the stored
responses it continues, is translated at the edge into a chat request and answered through
the chat path (answer.py), so keys, rate limits, token counting, metrics, the request log,
the `rag` models, reasoning, structured output, tools and upstreams apply as they do to
chat; the answer, whole or streamed, is translated back and, unless `store` is false, kept
for its user: fetched, listed, deleted and continued only by them."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse

from neve.api import spec
from neve.api.answer import chat_reply, model_of, passed_on
from neve.api.auth import caller
from neve.api.grounding import is_rag_model
from neve.api.state import state_of
from neve.api.translated import chat_events, event_stream
from neve.errors import BadRequest, NeveError
from neve.protocol import responses as wire
from neve.protocol.openai import ChatCompletion, ChatCompletionChunk, ChatCompletionRequest
from neve.store import responses as stored

log = logging.getLogger("neve.api")
router = APIRouter(prefix="/v1/responses")
ResponseId = Annotated[str, Path(min_length=1)]


@router.post("", response_model=None, responses=spec.answers(wire.ResponseObject, events=True))
async def create(body: wire.ResponsesRequest, request: Request) -> JSONResponse | StreamingResponse:
    body.refused()
    store, user = state_of(request).store, caller(request).user
    history: list[dict[str, Any]] = []
    if body.previous_response_id is not None:
        limit = state_of(request).settings.responses_max_chain
        history = await asyncio.to_thread(
            stored.context, store, user, body.previous_response_id, limit=limit
        )
    chat = body.chat(history)
    keep = _keeper(request, body) if body.store else None
    passed = await _through_upstream(request, body, history, chat, keep)
    if passed is not None:
        return passed
    head = wire.shell(body, wire.new_id("resp"), time.time(), model_of(request, chat))
    reply = await chat_reply(request, chat)
    if isinstance(reply, StreamingResponse):
        return event_stream(_events(reply.body_iterator, head, keep))  # type: ignore[arg-type]
    sent = json.loads(bytes(reply.body))
    answer = wire.response(head, ChatCompletion.model_validate(sent))
    if "citations" in sent:  # a `rag` model's
        answer["citations"] = sent["citations"]
    if keep is not None:
        await keep(answer)
    return JSONResponse(answer)


@router.get("/{response_id}")
async def get(response_id: ResponseId, request: Request) -> wire.ResponseObject:
    found = await asyncio.to_thread(
        stored.get, state_of(request).store, caller(request).user, response_id
    )
    return wire.ResponseObject.model_validate(found)


@router.delete("/{response_id}")
async def delete(response_id: ResponseId, request: Request) -> wire.DeletedResponse:
    await asyncio.to_thread(
        stored.remove, state_of(request).store, caller(request).user, response_id
    )
    return wire.DeletedResponse(id=response_id)


@router.get("/{response_id}/input_items")
async def input_items(
    response_id: ResponseId,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    order: Literal["asc", "desc"] = "desc",
    after: Annotated[str | None, Query(min_length=1)] = None,
) -> wire.InputItemList:
    """The items the response was asked with (those of the responses it continued
    included), newest first unless `order=asc`; `after` an item's id pages on."""
    chain = state_of(request).settings.responses_max_chain
    items = await asyncio.to_thread(
        stored.input_items, state_of(request).store, caller(request).user, response_id,
        limit=chain,
    )  # fmt: skip
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise BadRequest(f"after: no item {after!r} in this response's input", param="after")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return wire.InputItemList(
        data=page,
        first_id=page[0].get("id") if page else None,
        last_id=page[-1].get("id") if page else None,
        has_more=len(items) > limit,
    )


async def _through_upstream(
    request: Request,
    body: wire.ResponsesRequest,
    history: list[dict[str, Any]],
    chat: ChatCompletionRequest,
    keep: Any,
) -> JSONResponse | StreamingResponse | None:
    """The request passed on to an upstream that serves the Responses API itself (None
    where the engine has no upstream that does, or the model is a `rag` one). Its state
    stays here: the upstream gets the whole conversation and `store` false, and the hub
    keeps the response, so each user's responses stay theirs whatever the upstream."""
    respond = getattr(state_of(request).engine, "respond", None)
    if respond is None or is_rag_model(chat.model):
        return None
    sent = body.model_dump(mode="json", exclude_unset=True, by_alias=True)
    sent.pop("previous_response_id", None)
    # Item ids are this hub's, unknown upstream: what it needs is each item's content.
    items = [*history, *body.items()]
    sent.update(input=[{k: v for k, v in i.items() if k != "id"} for i in items], store=False)
    started = time.perf_counter()
    reply = await respond(chat.model, sent)
    if reply is None:
        return None
    answer = await passed_on(request, reply, chat, "responses", started)
    ours = {"previous_response_id": body.previous_response_id, "store": body.store}
    if isinstance(answer, StreamingResponse):
        relayed = _relayed(answer.body_iterator, ours, keep)  # type: ignore[arg-type]
        return event_stream(relayed)
    whole = {**json.loads(bytes(answer.body)), **ours}
    if keep is not None and whole.get("object") == "response":
        await keep(whole)
    return JSONResponse(whole)


async def _relayed(
    source: AsyncIterator[str | bytes], ours: dict[str, Any], keep: Any
) -> AsyncIterator[bytes]:
    """An upstream's Responses events as it wrote them, but for the response objects of
    the lifecycle events (three or four a stream), which get this hub's state; the final
    one is stored before it is sent."""
    async with aclosing(source):  # type: ignore[type-var]
        async for piece in source:
            data = piece.encode() if isinstance(piece, str) else piece
            if b'"response":{' not in data and b'"response": {' not in data:
                yield data
                continue
            for block in data.split(b"\n\n"):
                if block.strip():
                    yield await _with_our_state(block, ours, keep) + b"\n\n"


async def _with_our_state(block: bytes, ours: dict[str, Any], keep: Any) -> bytes:
    lines = block.split(b"\n")
    for n, line in enumerate(lines):
        if not line.startswith(b"data: {"):
            continue
        event = json.loads(line[6:])
        response = event.get("response")
        if not isinstance(response, dict):
            return block
        response.update(ours)
        if keep is not None and response.get("status") in FINAL:
            await _keep_streamed(keep, response)
        lines[n] = b"data: " + json.dumps(event).encode()
    return b"\n".join(lines)


FINAL = ("completed", "incomplete", "failed")


def _keeper(request: Request, body: wire.ResponsesRequest) -> Any:
    """What stores a finished response for its caller, with the input it answered."""
    store, user, items = state_of(request).store, caller(request).user, body.items()

    async def keep(answer: dict[str, Any]) -> None:
        await asyncio.to_thread(stored.save, store, user, answer, items)

    return keep


async def _events(
    source: AsyncIterator[str | bytes], head: dict[str, Any], keep: Any
) -> AsyncIterator[str]:
    """The chat path's server-sent events as the Responses stream; the response, once
    whole (or failed), is stored before its last event is sent."""
    events = wire.ResponseEvents(head)
    for out in events.start():
        yield out
    closing: list[str] = []
    async with aclosing(chat_events(source)) as chat:
        async for data in chat:
            if isinstance(data, str):
                yield data
            elif "error" in data:
                closing = events.fail(data["error"])
            elif "citations" in data:
                head["citations"] = data["citations"]
            else:
                for out in events.chunk(ChatCompletionChunk.model_validate(data)):
                    yield out
    if not closing:
        closing = events.end()
    if keep is not None and events.final is not None:
        await _keep_streamed(keep, events.final)
    for out in closing:
        yield out


async def _keep_streamed(keep: Any, response: dict[str, Any]) -> None:
    """Store a streamed response: the client has most of it by now, so where the store
    fails the answer still ends; only continuing it is lost, and that is logged."""
    try:
        await keep(response)
    except NeveError as exc:
        log.error("response not stored", extra={"id": response.get("id"), "error": exc.message})
