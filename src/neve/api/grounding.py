"""Grounding a chat in the documents: the `rag` and `rag:<model>` chat models, the search
they run under the caller's access (what they may not see leaves no trace), and the
fixed answer when nothing relevant is found."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from neve.api.auth import caller
from neve.api.state import state_of
from neve.engine.replies import ChatStream
from neve.protocol.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChunkChoice,
    Delta,
    Usage,
    new_id,
    now,
)
from neve.rag.index import Access, Hit
from neve.rag.service import citation
from neve.store.keys import Identity

RAG_MODEL = "rag"
DEFAULT_SYSTEM = "You are a helpful assistant."


def access_of(identity: Identity) -> Access:
    return Access(everything=identity.is_admin, groups=identity.groups)


def is_rag_model(model: str | None) -> bool:
    return model is not None and (model == RAG_MODEL or model.startswith(RAG_MODEL + ":"))


async def search_documents(request: Request, question: str, kind: str, **options: Any) -> list[Hit]:
    rag = state_of(request).rag
    hits = await asyncio.to_thread(
        rag.search, question, access=access_of(caller(request)), **options
    )
    state_of(request).metrics.rag_queries.labels(kind).inc()
    return hits


async def ground(
    request: Request, body: ChatCompletionRequest, **options: Any
) -> tuple[ChatCompletionRequest, list[dict[str, Any]], str | None]:
    """The request with its last user message replaced by the grounding prompt, the
    citations, and the fixed answer to give instead when nothing relevant was found."""
    model = body.model.split(":", 1)[1] if body.model and ":" in body.model else None
    users = [i for i, m in enumerate(body.messages) if m.role == "user"]
    if not users:
        return body.model_copy(update={"model": model}), [], None
    question = body.messages[users[-1]].text()
    hits = await search_documents(request, question, "answer", **options)
    rag = state_of(request).rag
    messages = list(body.messages)
    if not any(m.role in ("system", "developer") for m in messages):
        messages.insert(0, ChatMessage(role="system", content=DEFAULT_SYSTEM))
        users[-1] += 1
    messages[users[-1]] = ChatMessage(role="user", content=rag.prompt(question, hits))
    grounded = body.model_copy(update={"model": model, "messages": messages})
    fixed = None if hits else rag.settings.rag_no_answer
    return grounded, [citation(h) for h in hits], fixed


async def fixed_answer(text: str, model: str) -> ChatStream:
    """A stream saying `text`, shaped as an engine's (the model was not asked)."""
    ident, created = new_id("chatcmpl"), now()
    for delta, reason in ((Delta(role="assistant", content=text), None), (Delta(), "stop")):
        yield ChatCompletionChunk(
            id=ident, created=created, model=model,
            choices=[ChunkChoice(index=0, delta=delta, finish_reason=reason)],
        )  # fmt: skip
    yield ChatCompletionChunk(id=ident, created=created, model=model, choices=[], usage=Usage())
