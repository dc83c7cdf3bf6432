"""The documents of a fleet's index in the database: the log each instance's LanceDB
replica follows (neve.rag.replica). Every document written is numbered from one counter
row, taken locked, so numbers commit in order: a replica that read up to N missed none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert, select

from neve.store.db import Store
from neve.store.tables import RagChunk, RagDocument, RagSequence

Change = tuple[str, dict[str, Any] | None, list[tuple[dict[str, Any], bytes]]]


class SharedDocuments:
    def __init__(self, store: Store) -> None:
        self.store = store

    def write(self, changes: list[Change]) -> None:
        if not changes:
            return
        latest = {doc_id: (document, chunks) for doc_id, document, chunks in changes}
        with self.store.writing() as session:
            counter = session.get_one(RagSequence, 1, with_for_update=True)
            first = counter.seq + 1
            counter.seq += len(latest)
            ids = list(latest)
            session.execute(delete(RagChunk).where(RagChunk.doc_id.in_(ids)))
            session.execute(delete(RagDocument).where(RagDocument.doc_id.in_(ids)))
            session.execute(insert(RagDocument), [
                {"doc_id": doc_id, "seq": first + i, "row": document}
                for i, (doc_id, (document, _)) in enumerate(latest.items())
            ])  # fmt: skip
            rows = [
                {"id": chunk["id"], "doc_id": doc_id, "row": chunk, "vector": vector}
                for doc_id, (_, chunks) in latest.items()
                for chunk, vector in chunks
            ]
            if rows:
                session.execute(insert(RagChunk), rows)

    def read(self, after: int, limit: int) -> list[tuple[int, Change]]:
        with self.store.reading() as session:
            documents = session.execute(
                select(RagDocument).where(RagDocument.seq > after)
                .order_by(RagDocument.seq).limit(limit)
            ).scalars().all()  # fmt: skip
            chunks: dict[str, list[tuple[dict[str, Any], bytes]]] = {}
            live = [d.doc_id for d in documents if d.row is not None]
            if live:
                for chunk in session.execute(
                    select(RagChunk).where(RagChunk.doc_id.in_(live))
                ).scalars():
                    chunks.setdefault(chunk.doc_id, []).append((chunk.row, chunk.vector))
            return [(d.seq, (d.doc_id, d.row, chunks.get(d.doc_id, []))) for d in documents]

    def latest(self) -> int:
        with self.store.reading() as session:
            return session.get_one(RagSequence, 1).seq

    def known(self) -> set[str]:
        with self.store.reading() as session:
            return set(session.execute(select(RagDocument.doc_id)).scalars())
