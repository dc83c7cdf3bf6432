"""What engines answer with, and gathering it into one OpenAI response (for requests that
do not stream, and for the relay's rows).

An engine answers with a stream of chunks: OpenAI's own types when it builds them from
tokens, or an upstream's server-sent events passed through untouched (RawChunk). An
upstream asked for a whole answer may give that instead, as the dict it wrote."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from neve.protocol.openai import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatLogprobs,
    ChunkChoice,
    Completion,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    FunctionCall,
    ToolCall,
    Usage,
)


@dataclass(frozen=True)
class RawChunk:
    """Whole server-sent events as an upstream wrote them (`data: {...}\n\n`, its
    `data: [DONE]` included), passed on untouched."""

    data: bytes

    def events(self) -> list[dict[str, Any]]:
        return [
            json.loads(line[6:])
            for line in self.data.decode().splitlines()
            if line.startswith("data: {")
        ]

    @property
    def done(self) -> bool:
        """Whether the stream has ended: chat's [DONE], or the Responses API's last event."""
        return any(end in self.data for end in ENDS)

    @property
    def usage(self) -> Usage | None:
        # Only the closing chunk (the Responses API's: its response) carries usage; parse
        # just that one.
        if b'"usage":{' not in self.data and b'"usage": {' not in self.data:
            return None
        found = [u for e in self.events() if (u := e.get("usage") or _response_usage(e))]
        return Usage.read(found[-1]) if found else None


# How a stream ends: chat's [DONE], or the Responses API's final response event.
ENDS = (b"data: [DONE]", b'"response.completed"', b'"response.incomplete"', b'"response.failed"')


def _response_usage(event: dict[str, Any]) -> Any:
    response = event.get("response")
    return response.get("usage") if isinstance(response, dict) else None


ChatStream = AsyncGenerator[ChatCompletionChunk | RawChunk, None]
CompletionStream = AsyncGenerator[CompletionChunk | RawChunk, None]
# An engine answers with a stream, or (an upstream asked for a whole answer) the whole
# response as the upstream wrote it.
ChatReply = ChatStream | dict[str, Any]
CompletionReply = CompletionStream | dict[str, Any]


C = TypeVar("C", ChunkChoice, CompletionChoice)


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
    choices = []
    for i, pieces in sorted(g.pieces.items()):
        calls = _tool_calls(pieces)
        content = "".join(p.delta.content or "" for p in pieces)
        message = AssistantMessage(
            content=content or (None if calls else ""),
            reasoning_content="".join(p.delta.reasoning_content or "" for p in pieces) or None,
            tool_calls=calls or None,
        )
        logprobs = [lp for p in pieces if p.logprobs for lp in p.logprobs.content or []]
        choices.append(
            ChatChoice(
                index=i,
                message=message,
                logprobs=ChatLogprobs(content=logprobs) if logprobs else None,
                finish_reason=g.finish.get(i),
            )
        )
    return ChatCompletion(
        id=g.first.id, created=g.first.created, model=g.first.model, usage=g.usage, choices=choices
    )


def _tool_calls(pieces: list[ChunkChoice]) -> list[ToolCall]:
    """The calls a choice's deltas make: each call's id, name and type come once, its
    arguments in pieces (OpenAI streams them so)."""
    calls: dict[int, dict[str, str]] = {}
    for piece in pieces:
        for delta in piece.delta.tool_calls or []:
            call = calls.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
            call["id"] = delta.id or call["id"]
            if delta.function is not None:
                call["name"] += delta.function.name or ""
                call["arguments"] += delta.function.arguments or ""
    return [
        ToolCall(id=c["id"], function=FunctionCall(name=c["name"], arguments=c["arguments"]))
        for _, c in sorted(calls.items())
    ]


async def gather_completion(chunks: CompletionStream) -> Completion:
    g: _Gathered[CompletionChoice] = await _gather(chunks)
    choices = []
    for i, pieces in sorted(g.pieces.items()):
        parts = [p.logprobs for p in pieces if p.logprobs]
        logprobs = None
        if parts:
            logprobs = CompletionLogprobs()
            for part in parts:
                logprobs.tokens += part.tokens
                logprobs.token_logprobs += part.token_logprobs
                logprobs.top_logprobs += part.top_logprobs
                logprobs.text_offset += part.text_offset
        text = "".join(p.text for p in pieces)
        choices.append(
            CompletionChoice(index=i, text=text, logprobs=logprobs, finish_reason=g.finish.get(i))
        )
    return Completion(
        id=g.first.id, created=g.first.created, model=g.first.model, usage=g.usage, choices=choices
    )
