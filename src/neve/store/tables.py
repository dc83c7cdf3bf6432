"""The tables. Migrations (store/migrations) create them; a test checks the two agree."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[dt.datetime]):
    """Aware UTC datetimes in and out: SQLite keeps no zone, so reads get UTC put back."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime: store aware UTC times")
        return value.astimezone(dt.UTC) if value is not None else None

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now)


class Group(Base):
    __tablename__ = "groups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)


class Membership(Base):
    __tablename__ = "user_groups"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    group_id: Mapped[int] = mapped_column(
        ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
    )


class ApiKey(Base):
    """A key is stored as its SHA-256 only; `prefix` lets people tell keys apart."""

    __tablename__ = "api_keys"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    rpm: Mapped[int | None] = mapped_column(Integer)
    tpm: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    username: Mapped[str] = mapped_column(String(200), index=True)
    title: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now)
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now)


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text)
    reasoning: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    citations: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now)


class Feedback(Base):
    """The old ST_FEEDBACK columns (RUN_ID, TIMESTAMP, USER_PROMPT, ASSISTANT_RESPONSE,
    SCORE, COMMENT) under the same names, and what links a row to its answer."""

    __tablename__ = "feedback"
    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    timestamp: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now, index=True)
    user_prompt: Mapped[str | None] = mapped_column(Text)
    assistant_response: Mapped[str | None] = mapped_column(Text)
    score: Mapped[int] = mapped_column(Integer)
    comment: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(String(200))
    username: Mapped[str | None] = mapped_column(String(200), index=True)
    conversation_id: Mapped[str | None] = mapped_column(String(36))
    message_id: Mapped[str | None] = mapped_column(String(64))  # or a stored response's id
    # When the row reached Snowflake's table (neve.store.outbox); not one of its columns.
    exported_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)


class RequestLog(Base):
    __tablename__ = "request_log"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    time: Mapped[dt.datetime] = mapped_column(UtcDateTime, index=True)
    username: Mapped[str | None] = mapped_column(String(200))
    key_id: Mapped[str | None] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(200))
    model: Mapped[str | None] = mapped_column(String(200))
    prompt_tokens: Mapped[int | None] = mapped_column(Integer)
    completion_tokens: Mapped[int | None] = mapped_column(Integer)
    ttft_ms: Mapped[float | None] = mapped_column(Float)
    latency_ms: Mapped[float] = mapped_column(Float)
    status: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    exported_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime, index=True)


class StoredResponse(Base):
    """A response of the Responses API kept for its user (`store`): the response as it was
    sent, and the input items it answered (not those of the responses it continues)."""

    __tablename__ = "responses"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    username: Mapped[str] = mapped_column(String(200), index=True)
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime, default=now)
    previous_response_id: Mapped[str | None] = mapped_column(String(64))
    input: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    response: Mapped[dict[str, Any]] = mapped_column(JSON)


# -- what a fleet of hub instances shares (setting `instances` above 1) -------------------


class RateSpend(Base):
    """What a key spent in one second (since the epoch): the sliding minute of its rpm and
    tpm limits, shared by every instance. Seconds that left the minute are deleted as the
    key is checked."""

    __tablename__ = "rate_spend"
    key: Mapped[str] = mapped_column(String(240), primary_key=True)
    second: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)
    tokens: Mapped[int] = mapped_column(Integer)


class RelayBatch(Base):
    """A relay batch by its retry key: claimed by the instance that runs it (`owner`, its
    claim renewed at `renewed`), then its answer, kept until `expires`."""

    __tablename__ = "relay_batches"
    key: Mapped[str] = mapped_column(String(240), primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    renewed: Mapped[float] = mapped_column(Float)
    expires: Mapped[float] = mapped_column(Float, index=True)
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RagDocument(Base):
    """A document as the index holds it, shared by every instance; each instance's LanceDB
    tables are a replica brought up to `seq`. A removed document stays as a row without
    its `row`, so replicas learn of it."""

    __tablename__ = "rag_documents"
    doc_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    row: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class RagChunk(Base):
    __tablename__ = "rag_chunks"
    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    doc_id: Mapped[str] = mapped_column(
        ForeignKey("rag_documents.doc_id", ondelete="CASCADE"), index=True
    )
    row: Mapped[dict[str, Any]] = mapped_column(JSON)
    vector: Mapped[bytes] = mapped_column(LargeBinary)  # float32, the embedder's dimensions


class RagSequence(Base):
    """One row: the last change's number. Writers take it with the row locked, so changes
    commit in the order of their numbers and a replica that read up to N missed none."""

    __tablename__ = "rag_sequence"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
