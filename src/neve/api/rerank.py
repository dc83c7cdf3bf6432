"""POST /v1/rerank (also /rerank, and /v2/rerank for Cohere's v2 client): the hub's
reranker (`rag_reranker`: a local cross-encoder, or an upstream's) over
the documents given, best first."""

from __future__ import annotations

import asyncio
import uuid

from fastapi import APIRouter, Request

from neve.api.request_log import outcome_of
from neve.api.state import state_of
from neve.errors import BadRequest, NotFound
from neve.protocol.openai import Usage
from neve.protocol.rerank import (
    RerankDocument,
    RerankRequest,
    RerankResponse,
    RerankResult,
    RerankUsage,
)

router = APIRouter()


@router.post("/v1/rerank")
@router.post("/rerank", include_in_schema=False)
@router.post("/v2/rerank", include_in_schema=False)
async def rerank(body: RerankRequest, request: Request) -> RerankResponse:
    state = state_of(request)
    reranker = await asyncio.to_thread(lambda: state.rag.reranker)
    if reranker is None:
        raise NotFound("no reranker is set (setting rag_reranker: a cross-encoder's folder, "
                       "a Hugging Face id or an upstream's URL)")  # fmt: skip
    texts = body.texts()
    most = state.settings.rerank_max_documents
    if len(texts) > most:
        raise BadRequest(
            f"documents: {len(texts)} given, at most {most} (setting rerank_max_documents)",
            param="documents",
        )
    scored = await asyncio.to_thread(reranker.score, body.query, texts)
    scores, tokens = scored.values, scored.tokens
    outcome_of(request).used(Usage.of(tokens))
    order = sorted(range(len(texts)), key=lambda i: -scores[i])[: body.top_n]
    return RerankResponse(
        id=f"rerank-{uuid.uuid4().hex}",
        model=reranker.name,
        results=[
            RerankResult(
                index=i,
                relevance_score=scores[i],
                document=RerankDocument(text=texts[i]) if body.return_documents else None,
            )
            for i in order
        ],
        usage=RerankUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
