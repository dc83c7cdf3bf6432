"""Answers grounded in the documents: POST /v1/rag/query, chat model `rag:<model>` (or
`rag`) in /v1/chat/completions, and POST /v1/rag/search (ranked passages, no generation).
Every retrieval runs under the caller's access: what they may not see leaves no trace."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from neve.api import spec
from neve.api.auth import caller
from neve.api.errors import error_response
from neve.api.neve_protocol import (
    RagQueryRequest,
    RagSearchRequest,
    SearchHit,
    SearchResults,
)
from neve.api.protocol import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    ChatStream,
    ChunkChoice,
    Delta,
    Usage,
    new_id,
    now,
)
from neve.rag.index import Access, FilterError, Hit
from neve.rag.service import Rag, citation
from neve.store.keys import Identity

router = APIRouter(prefix="/v1/rag")

RAG_MODEL = "rag"
DEFAULT_SYSTEM = "You are a helpful assistant."


def access_of(identity: Identity) -> Access:
    return Access(everything=identity.is_admin, groups=identity.groups)


def is_rag_model(model: str | None) -> bool:
    return model is not None and (model == RAG_MODEL or model.startswith(RAG_MODEL + ":"))


async def _search(request: Request, question: str, kind: str, **options: Any) -> list[Hit]:
    rag: Rag = request.app.state.rag
    hits = await asyncio.to_thread(
        rag.search, question, access=access_of(caller(request)), **options
    )
    request.app.state.metrics.rag_queries.labels(kind).inc()
    return hits


@router.post("/search", response_model=None)
async def search(body: RagSearchRequest, request: Request) -> SearchResults | JSONResponse:
    try:
        hits = await _search(
            request, body.query, "search", top_k=body.top_k, mode=body.mode,
            filters=body.filters, min_score=body.score_threshold,
        )  # fmt: skip
    except FilterError as exc:
        return error_response(400, f"filters: {exc}", code="invalid_request", param="filters")
    return SearchResults(data=[SearchHit(**citation(h), similarity=h.similarity) for h in hits])


@router.post("/query", response_model=None, responses=spec.answers(ChatCompletion))
async def query(body: RagQueryRequest, request: Request) -> JSONResponse | StreamingResponse:
    from neve.api.openai import chat_reply

    chat = ChatCompletionRequest(
        model=f"{RAG_MODEL}:{body.model}" if body.model else RAG_MODEL,
        messages=[
            ChatMessage(role="system", content=DEFAULT_SYSTEM),
            ChatMessage(role="user", content=body.question),
        ],
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        stream=body.stream,
    )
    try:
        return await chat_reply(
            request, chat, top_k=body.top_k, mode=body.mode, filters=body.filters
        )
    except FilterError as exc:
        return error_response(400, f"filters: {exc}", code="invalid_request", param="filters")


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
    hits = await _search(request, question, "answer", **options)
    rag: Rag = request.app.state.rag
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
