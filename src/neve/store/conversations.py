"""Conversations and their messages, each visible to the user who owns it only."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from neve.store.db import Store
from neve.store.feedback import NotYours
from neve.store.tables import Conversation, Message, now


def create(store: Store, user: str, title: str) -> dict[str, Any]:
    at = now()
    row = Conversation(id=str(uuid.uuid4()), username=user, title=title, created_at=at,
                       updated_at=at)  # fmt: skip
    with store.writing() as session:
        session.add(row)
    return _conversation(row)


def list_for(store: Store, user: str, limit: int) -> list[dict[str, Any]]:
    with store.reading() as session:
        rows = session.scalars(
            select(Conversation)
            .where(Conversation.username == user)
            .order_by(Conversation.updated_at.desc())
            .limit(limit)
        )
        return [_conversation(c) for c in rows]


def get(store: Store, user: str, conversation_id: str) -> dict[str, Any]:
    with store.reading() as session:
        conversation = _owned(session, user, conversation_id)
        messages = session.scalars(
            select(Message)
            .where(Message.conversation_id == conversation_id)
            .order_by(Message.position)
        )
        return {**_conversation(conversation), "messages": [_message(m) for m in messages]}


def remove(store: Store, user: str, conversation_id: str) -> None:
    with store.writing() as session:
        _owned(session, user, conversation_id)
        # Explicit, since SQLite enforces ON DELETE CASCADE only per connection setting.
        session.execute(delete(Message).where(Message.conversation_id == conversation_id))
        session.execute(delete(Conversation).where(Conversation.id == conversation_id))


def add_message(
    store: Store, user: str, conversation_id: str, values: dict[str, Any]
) -> dict[str, Any]:
    with store.writing() as session:
        conversation = _owned(session, user, conversation_id)
        last = session.scalar(
            select(func.max(Message.position)).where(Message.conversation_id == conversation_id)
        )
        at = now()
        row = Message(
            id=str(uuid.uuid4()),
            conversation_id=conversation_id,
            position=(last or 0) + 1,
            created_at=at,
            **values,
        )
        session.add(row)
        conversation.updated_at = at
        return _message(row)


def _owned(session: Session, user: str, conversation_id: str) -> Conversation:
    conversation = session.get(Conversation, conversation_id)
    if conversation is None or conversation.username != user:
        raise NotYours(f"no conversation {conversation_id!r}")
    return conversation


def _conversation(c: Conversation) -> dict[str, Any]:
    return {"id": c.id, "title": c.title, "created_at": c.created_at, "updated_at": c.updated_at}


def _message(m: Message) -> dict[str, Any]:
    return {
        "id": m.id,
        "role": m.role,
        "content": m.content,
        "reasoning": m.reasoning,
        "model": m.model,
        "citations": m.citations,
        "created_at": m.created_at,
    }
