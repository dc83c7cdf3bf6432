"""Wire types of neve's own routes (feedback, conversations, documents, search,
monitoring), apart from OpenAI's in openai.py."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from neve.protocol.openai import INTEGRAL, JsonInt
from neve.rag.index import FILTER_KEYS, MAX_PAGE


class Me(BaseModel):
    user: str
    role: Literal["admin", "user"]
    groups: list[str]
    key_id: str | None = Field(description="the key used; none for a keyless or proxy caller")


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    score: JsonInt = Field(description="1 (thumbs up) or -1 (thumbs down) unless configured")
    comment: str | None = Field(None, max_length=10_000)
    prompt: str | None = Field(None, description="the question (filled from message_id)")
    response: str | None = Field(None, description="the answer (filled from message_id)")
    model: str | None = Field(None, max_length=200)
    conversation_id: str | None = Field(None, min_length=1, max_length=36)
    message_id: str | None = Field(
        None, min_length=1, max_length=36, description="the answer's message"
    )
    run_id: str | None = Field(
        None, min_length=1, max_length=64, description="an id of your own: a retry stores once"
    )


class FeedbackRow(BaseModel):
    run_id: str
    timestamp: dt.datetime
    user_prompt: str | None
    assistant_response: str | None
    score: int
    comment: str | None
    model: str | None
    username: str | None
    conversation_id: str | None
    message_id: str | None


class FeedbackList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FeedbackRow]


class ConversationIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    title: str = Field("New chat", min_length=1, max_length=200)


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: Literal["system", "user", "assistant"]
    content: str
    reasoning: str | None = None
    model: str | None = Field(None, max_length=200)
    citations: list[dict[str, Any]] | None = None


class MessageOut(BaseModel):
    id: str
    role: str
    content: str
    reasoning: str | None
    model: str | None
    citations: list[dict[str, Any]] | None
    created_at: dt.datetime


class ConversationOut(BaseModel):
    id: str
    title: str
    created_at: dt.datetime
    updated_at: dt.datetime
    messages: list[MessageOut] | None = None


class ConversationList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ConversationOut]


SearchMode = Literal["hybrid", "vector", "text"]
# Checked by the index (FilterError names a wrong key or type); described here as it checks.
Filters = Annotated[
    dict[str, str | JsonInt],
    WithJsonSchema({"type": "object", "additionalProperties": False, "properties": {
        **{k: {"type": "string"} for k in FILTER_KEYS if k != "page"},
        "page": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE}}}),
]  # fmt: skip


class RagSearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    query: str = Field(min_length=1, max_length=4000)
    top_k: Annotated[int, Field(ge=1, le=100), INTEGRAL] | None = None
    mode: SearchMode | None = None
    filters: Filters = Field(
        default_factory=dict, description="document, path, path_prefix, title, kind, page"
    )
    score_threshold: float | None = Field(None, description="least score of the mode's own")


class SearchHit(BaseModel):
    document: str
    path: str
    title: str
    section: str
    page: int | None
    text: str
    score: float
    similarity: float | None


class SearchResults(BaseModel):
    object: Literal["list"] = "list"
    data: list[SearchHit]


class RagQueryRequest(BaseModel):
    """A question answered from the documents; the answer comes as a chat completion (or
    its stream) with `citations`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    question: str = Field(min_length=1, max_length=4000)
    top_k: Annotated[int, Field(ge=1, le=20), INTEGRAL] | None = None
    mode: SearchMode | None = None
    filters: Filters = Field(default_factory=dict)
    model: str | None = None
    stream: bool = False
    temperature: float = Field(0.2, ge=0, le=2)
    max_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None


class DocumentOut(BaseModel):
    id: str
    path: str
    title: str
    kind: str
    status: Literal["indexed", "failed"]
    error: str | None
    pages: int
    chunks: int
    groups: list[str]
    size: int
    indexed_at: dt.datetime


class DocumentDetails(DocumentOut):
    referred_as: list[str] = Field(
        description="texts of the links to it from other documents, most used first"
    )


class DocumentList(BaseModel):
    object: Literal["list"] = "list"
    data: list[DocumentOut]
