"""Rows still to be copied out of the store (to Snowflake's tables): read oldest first,
then marked once the copy has landed. A copy that fails marks nothing, so its rows are
read again next time; the copy itself must make a second landing harmless."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update

from neve.store.db import Store
from neve.store.tables import Feedback, RequestLog, now

# Each source table: its model, its key, and the column that orders it.
SOURCES: dict[str, tuple[Any, Any, Any]] = {
    "feedback": (Feedback, Feedback.run_id, Feedback.timestamp),
    "request_log": (RequestLog, RequestLog.id, RequestLog.id),
}


def pending(store: Store, source: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` rows not yet marked, oldest first, as column → value."""
    model, _, order = SOURCES[source]
    columns = [c for c in model.__table__.columns if c.name != "exported_at"]
    with store.reading() as session:
        rows = session.execute(
            select(*columns).where(model.exported_at.is_(None)).order_by(order).limit(limit)
        )
        return [dict(row._mapping) for row in rows]


def mark(store: Store, source: str, keys: list[Any]) -> None:
    model, key, _ = SOURCES[source]
    with store.writing() as session:
        session.execute(update(model).where(key.in_(keys)).values(exported_at=now()))


def backlog(store: Store, source: str) -> int:
    """Rows not yet marked."""
    model, key, _ = SOURCES[source]
    with store.reading() as session:
        return session.scalar(select(func.count(key)).where(model.exported_at.is_(None))) or 0
