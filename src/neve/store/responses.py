"""Responses of the Responses API, each visible to the user who made it only: kept when a
request asks to `store` it, so a later request can continue it (`previous_response_id`)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from neve.store.db import Store
from neve.store.feedback import NotYours
from neve.store.tables import StoredResponse, now


def save(store: Store, user: str, response: dict[str, Any], items: list[dict[str, Any]]) -> None:
    """Keep `response` and the input `items` it answered (each given an id if it has none,
    so the input can be listed as OpenAI lists it)."""
    items = [{"id": f"in_{uuid.uuid4().hex[:29]}", **item} for item in items]
    row = StoredResponse(id=response["id"], username=user, created_at=now(),
                         previous_response_id=response.get("previous_response_id"),
                         input=items, response=response)  # fmt: skip
    with store.writing() as session:
        session.add(row)


def get(store: Store, user: str, response_id: str) -> dict[str, Any]:
    with store.reading() as session:
        return dict(_owned(session, user, response_id).response)


def remove(store: Store, user: str, response_id: str) -> None:
    with store.writing() as session:
        _owned(session, user, response_id)
        session.execute(delete(StoredResponse).where(StoredResponse.id == response_id))


def context(store: Store, user: str, response_id: str, *, limit: int) -> list[dict[str, Any]]:
    """The items a continuation of `response_id` starts from, oldest first: each response
    of the chain's input, then its output. A chain longer than `limit` responses, or one
    whose earlier response was deleted, is refused: continuing it would drop context."""
    chain: list[StoredResponse] = []
    with store.reading() as session:
        at: str | None = response_id
        while at is not None:
            if len(chain) == limit:
                raise NotYours(
                    f"response {response_id!r} continues more than {limit} responses "
                    "(setting responses_max_chain)"
                )
            row = _owned(session, user, at) if not chain else session.get(StoredResponse, at)
            if row is None or row.username != user:
                raise NotYours(f"response {chain[-1].id!r} continues {at!r}, which was deleted")
            chain.append(row)
            at = row.previous_response_id
    items: list[dict[str, Any]] = []
    for row in reversed(chain):
        items += [*row.input, *row.response.get("output", [])]
    return items


def input_items(store: Store, user: str, response_id: str, *, limit: int) -> list[dict[str, Any]]:
    """What `response_id` was asked with, oldest first: the context it continued, then
    its own input."""
    with store.reading() as session:
        row = _owned(session, user, response_id)
        previous, own = row.previous_response_id, list(row.input)
    earlier = context(store, user, previous, limit=limit) if previous else []
    return [*earlier, *own]


def _owned(session: Session, user: str, response_id: str) -> StoredResponse:
    row = session.get(StoredResponse, response_id)
    if row is None or row.username != user:
        raise NotYours(f"no response {response_id!r}")
    return row
