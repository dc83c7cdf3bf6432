"""Conversation history, per user: the UI keeps its chats here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from neve.api.auth import caller
from neve.api.state import state_of
from neve.protocol.neve import (
    ConversationIn,
    ConversationList,
    ConversationOut,
    MessageIn,
    MessageOut,
)
from neve.store import conversations

router = APIRouter(prefix="/v1/conversations")
ConversationId = Annotated[str, Path(min_length=1)]


@router.post("", status_code=201)
def create(body: ConversationIn, request: Request) -> ConversationOut:
    row = conversations.create(state_of(request).store, caller(request).user, body.title)
    return ConversationOut(**row)


@router.get("")
def list_conversations(
    request: Request, limit: Annotated[int, Query(ge=1, le=1000)] = 100
) -> ConversationList:
    rows = conversations.list_for(state_of(request).store, caller(request).user, limit)
    return ConversationList(data=[ConversationOut(**r) for r in rows])


@router.get("/{conversation_id}")
def get(conversation_id: ConversationId, request: Request) -> ConversationOut:
    row = conversations.get(state_of(request).store, caller(request).user, conversation_id)
    return ConversationOut(**row)


@router.delete("/{conversation_id}", status_code=204)
def delete(conversation_id: ConversationId, request: Request) -> Response:
    conversations.remove(state_of(request).store, caller(request).user, conversation_id)
    return Response(status_code=204)


@router.post("/{conversation_id}/messages", status_code=201)
def add_message(conversation_id: ConversationId, body: MessageIn, request: Request) -> MessageOut:
    row = conversations.add_message(
        state_of(request).store, caller(request).user, conversation_id, body.model_dump()
    )
    return MessageOut(**row)
