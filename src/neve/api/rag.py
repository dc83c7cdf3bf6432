"""The documents' own routes: POST /v1/rag/search (ranked passages, no generation) and
POST /v1/rag/query (a grounded answer to one question). The chat models `rag` and
`rag:<model>` ground /v1/chat/completions the same way (grounding.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from neve.api import spec
from neve.api.answer import chat_reply
from neve.api.grounding import DEFAULT_SYSTEM, RAG_MODEL, search_documents
from neve.protocol.neve import RagQueryRequest, RagSearchRequest, SearchHit, SearchResults
from neve.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    ChatMessage,
)
from neve.rag.service import citation

router = APIRouter(prefix="/v1/rag")


@router.post("/search", response_model=None)
async def search(body: RagSearchRequest, request: Request) -> SearchResults:
    hits = await search_documents(
        request, body.query, "search", top_k=body.top_k, mode=body.mode,
        filters=body.filters, min_score=body.score_threshold,
    )  # fmt: skip
    return SearchResults(data=[SearchHit(**citation(h), similarity=h.similarity) for h in hits])


@router.post("/query", response_model=None, responses=spec.answers(ChatCompletion))
async def query(body: RagQueryRequest, request: Request) -> JSONResponse | StreamingResponse:
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
    return await chat_reply(request, chat, top_k=body.top_k, mode=body.mode, filters=body.filters)
