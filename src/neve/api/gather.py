"""Gathering an engine's chunk stream into one OpenAI response (non-streaming requests,
and the relay's rows)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from neve.api.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatReply,
    ChatStream,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionStream,
    RawChunk,
    Usage,
)

C = TypeVar("C", ChunkChoice, CompletionChoice)
T = TypeVar("T")
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


@dataclass
class _Gathered(Generic[C]):
    """A whole stream: its first chunk, each choice's pieces in order, and the usage."""

    first: ChatCompletionChunk | CompletionChunk
    pieces: dict[int, list[C]] = field(default_factory=dict)
    finish: dict[int, Any] = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)


async def _typed(chunks: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """Our chunks as they are; an upstream's events parsed into the same types."""
    async for item in chunks:
        if not isinstance(item, RawChunk):
            yield item
            continue
        for data in item.events():
            chat = data.get("object") == "chat.completion.chunk"
            yield (ChatCompletionChunk if chat else CompletionChunk).model_validate(data)


async def _gather(chunks: AsyncIterator[Any], spent: Usage | None = None) -> _Gathered[Any]:
    """The whole stream; `spent`, when given, follows the usage the chunks report as they
    come (engines report it as they go), so a gathering cancelled part-way knows its cost."""
    gathered: _Gathered[Any] | None = None
    async for chunk in _typed(chunks):
        gathered = gathered or _Gathered(first=chunk)
        if chunk.usage is not None:
            gathered.usage = chunk.usage
            if spent is not None:
                spent.set(chunk.usage)
        for choice in chunk.choices:
            gathered.pieces.setdefault(choice.index, []).append(choice)
            if choice.finish_reason:
                gathered.finish[choice.index] = choice.finish_reason
    assert gathered is not None, "an engine stream always ends with its usage chunk"
    return gathered


class ClientGone(Exception):
    """The client disconnected before its whole answer was ready."""


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so freeing its sequences) if the client
    disconnects first. The body has been read, so the next ASGI message is the
    disconnect."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone


async def chat_result(reply: ChatReply, spent: Usage) -> ChatCompletion:
    """The whole answer to a chat request, however the engine gave it; `spent` holds the
    tokens it cost, also when cancelled part-way."""
    if isinstance(reply, dict):
        whole = ChatCompletion.model_validate(reply)
        spent.set(whole.usage)
        return whole
    return await gather_chat(reply, spent)


async def gather_chat(chunks: ChatStream, spent: Usage | None = None) -> ChatCompletion:
    g: _Gathered[ChunkChoice] = await _gather(chunks, spent)
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


async def gather_completion(chunks: CompletionStream) -> Completion:
    g: _Gathered[CompletionChoice] = await _gather(chunks)
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
