"""POST /v1/rerank's wire types: the shape vLLM's and llama.cpp's servers answer, which
Cohere's and Jina's clients and Open WebUI's external reranker send and read."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field

from neve.protocol.openai import INTEGRAL, Text


class RerankDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    text: Text


class RerankRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = None
    query: Annotated[Text, Field(min_length=1)]
    documents: Annotated[list[Text | RerankDocument], Field(min_length=1)]
    top_n: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    return_documents: bool = True

    def texts(self) -> list[str]:
        return [d if isinstance(d, str) else d.text for d in self.documents]


class RerankResult(BaseModel):
    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class RerankResponse(BaseModel):
    id: str
    object: str = "list"
    model: str
    results: list[RerankResult]  # best first
    usage: RerankUsage
