"""Feedback rows: written once each (a retried run_id returns the stored row), read with
filters for the API, the monitoring page and exports."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from neve.errors import NotFound
from neve.store.db import Store
from neve.store.tables import Conversation, Feedback, Message, StoredResponse, now

COLUMNS = [c.name for c in Feedback.__table__.columns if c.name != "exported_at"]


@dataclass(frozen=True)
class FeedbackFilter:
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    score: int | None = None
    model: str | None = None
    user: str | None = None
    conversation_id: str | None = None


class NotYours(NotFound):
    """A message or conversation the caller cannot see (or that does not exist)."""


def add_feedback(
    store: Store, values: dict[str, Any], user: str | None
) -> tuple[dict[str, Any], bool]:
    """Store one row; returns it and whether it is new. A message_id fills the prompt and
    response from the stored conversation when the caller did not send them."""
    run_id = values.get("run_id") or str(uuid.uuid4())
    try:
        return _insert(store, run_id, values, user)
    except IntegrityError:
        # The same run_id stored by a concurrent request since we looked: that row stands.
        with store.reading() as session:
            existing = session.get(Feedback, run_id)
        if existing is None:
            raise
        return as_dict(existing), False


def _insert(
    store: Store, run_id: str, values: dict[str, Any], user: str | None
) -> tuple[dict[str, Any], bool]:
    with store.writing() as session:
        existing = session.get(Feedback, run_id)
        if existing is not None:
            return as_dict(existing), False
        row = Feedback(
            run_id=run_id,
            timestamp=now(),
            user_prompt=values.get("prompt"),
            assistant_response=values.get("response"),
            score=values["score"],
            comment=values.get("comment"),
            model=values.get("model"),
            username=user,
            conversation_id=values.get("conversation_id"),
            message_id=values.get("message_id"),
        )
        if row.message_id:
            _fill_from_message(session, row, user)
        session.add(row)
        return as_dict(row), True


def _fill_from_message(session: Session, row: Feedback, user: str | None) -> None:
    found = session.execute(
        select(Message, Conversation.username)
        .join(Conversation)
        .where(Message.id == row.message_id)
    ).first()
    if found is None:
        _fill_from_response(session, row, user)
        return
    if user is not None and found[1] != user:
        raise NotYours(f"no message {row.message_id!r}")
    message = found[0]
    row.conversation_id = row.conversation_id or message.conversation_id
    row.assistant_response = row.assistant_response or message.content
    row.model = row.model or message.model
    if row.user_prompt is None:
        row.user_prompt = session.scalar(
            select(Message.content)
            .where(Message.conversation_id == message.conversation_id)
            .where(Message.position < message.position, Message.role == "user")
            .order_by(Message.position.desc())
            .limit(1)
        )


def _fill_from_response(session: Session, row: Feedback, user: str | None) -> None:
    """A response of the Responses API, stored: its last user text and its output text."""
    stored = session.get(StoredResponse, row.message_id)
    if stored is None or (user is not None and stored.username != user):
        raise NotYours(f"no message or response {row.message_id!r}")
    answer = stored.response
    row.model = row.model or answer.get("model")
    if row.assistant_response is None:
        row.assistant_response = "".join(
            part.get("text", "")
            for item in answer.get("output", []) if item.get("type") == "message"
            for part in item.get("content", [])
        )  # fmt: skip
    if row.user_prompt is None:
        asked = [i for i in stored.input if i.get("role") == "user"]
        if asked:
            content = asked[-1].get("content")
            row.user_prompt = content if isinstance(content, str) else "".join(
                p.get("text", "") for p in content or [])  # fmt: skip


def find_feedback(
    store: Store,
    where: FeedbackFilter,
    *,
    limit: int | None = None,
    offset: int = 0,
    newest_first: bool = False,
) -> list[dict[str, Any]]:
    """Matching rows, oldest first unless asked otherwise."""
    order: list[Any] = [Feedback.timestamp, Feedback.run_id]
    if newest_first:
        order = [column.desc() for column in order]
    with store.reading() as session:
        query = _filtered(select(Feedback), where).order_by(*order)
        query = query.offset(offset).limit(limit)
        return [as_dict(row) for row in session.scalars(query)]


def _filtered(query: Select[Any], where: FeedbackFilter) -> Select[Any]:
    if where.since is not None:
        query = query.where(Feedback.timestamp >= where.since)
    if where.until is not None:
        query = query.where(Feedback.timestamp < where.until)
    if where.score is not None:
        query = query.where(Feedback.score == where.score)
    if where.model is not None:
        query = query.where(Feedback.model == where.model)
    if where.user is not None:
        query = query.where(Feedback.username == where.user)
    if where.conversation_id is not None:
        query = query.where(Feedback.conversation_id == where.conversation_id)
    return query


def arrow_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows as a typed table, so even an empty export has its columns."""
    text = pa.string()
    schema = pa.schema(
        [("run_id", text), ("timestamp", pa.timestamp("us", tz="UTC")), ("user_prompt", text),
         ("assistant_response", text), ("score", pa.int64()), ("comment", text), ("model", text),
         ("username", text), ("conversation_id", text), ("message_id", text)]
    )  # fmt: skip
    assert schema.names == COLUMNS
    return pa.Table.from_pylist(rows, schema=schema)


def as_dict(row: Feedback) -> dict[str, Any]:
    return {name: getattr(row, name) for name in COLUMNS}
