"""The index of a fleet of hub instances: the documents and their chunks live in a shared
log (the database), and each instance's LanceDB tables are a replica of it.

Writes go to the log first, then come back through `pull`, the one way the replica
changes; every instance pulls every `rag_sync_interval` seconds, so a document written
through one instance is searched by all within that delay, and survives any of them. The
replica keeps the number of the last change it applied beside its tables: a new or wiped
instance rebuilds from the log, with the stored vectors (nothing is embedded again)."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from neve.rag.index import DEFAULT_ANN, Access, Ann, Index, quote

# (doc_id, the document's row or None when it was removed, its chunks with their vectors)
Change = tuple[str, dict[str, Any] | None, list[tuple[dict[str, Any], bytes]]]
PAGE = 64  # documents applied to the replica at once
MARK = "replica.seq"  # beside the tables: the last change applied


class DocumentLog(Protocol):
    def write(self, changes: list[Change]) -> None:
        """Stored at once, each document numbered after every change before it."""

    def read(self, after: int, limit: int) -> list[tuple[int, Change]]:
        """The documents changed after change `after`, in order, at most `limit`."""

    def latest(self) -> int: ...

    def known(self) -> set[str]:
        """The ids of the documents the log holds (removed ones included)."""


class ReplicatedIndex(Index):
    def __init__(
        self,
        path: Path,
        dimensions: int,
        log: DocumentLog,
        *,
        ann: Ann = DEFAULT_ANN,
        adopt: Path | None = None,
    ) -> None:
        """`adopt`: the index this instance kept before it joined a fleet, if any."""
        super().__init__(path, dimensions, ann=ann)
        self.log = log
        self._adopt_from = adopt
        self._mark = path / MARK
        self._pulling = threading.Lock()
        self.seq: int | None = int(self._mark.read_text()) if self._mark.exists() else None

    def replace_documents(
        self, batch: list[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None]]
    ) -> None:
        if batch:
            self.log.write([_change(d, chunks, vectors) for d, chunks, vectors in batch])
            self.pull()

    def remove(self, doc_ids: Iterable[str]) -> int:
        ids = list(doc_ids)
        if ids:
            self.log.write([(i, None, []) for i in ids])
            self.pull()
        return len(ids)

    def pull(self) -> int:
        """Apply what the log holds past this replica's mark; the documents applied."""
        with self._pulling:
            if self.seq is None or self.seq > self.log.latest():  # new, or another database
                super().remove(d["doc_id"] for d in self.list_documents(Access(everything=True)))
                self._adopt()
            applied = 0
            assert self.seq is not None
            while changes := self.log.read(self.seq, PAGE):
                removed = [doc_id for _, (doc_id, document, _) in changes if document is None]
                super().remove(removed)
                super().replace_documents([_batch_entry(document, chunks)
                                           for _, (_, document, chunks) in changes
                                           if document is not None])  # fmt: skip
                self.seq = changes[-1][0]
                self._mark.write_text(str(self.seq))
                applied += len(changes)
            return applied

    def _adopt(self) -> None:
        """The documents of the index this hub kept before it joined a fleet go into the
        log, so turning a fleet on loses none of them."""
        self.seq = 0
        folder = self._adopt_from
        if folder is None or not (folder / "documents.lance").exists():
            return
        before = Index(folder, self.dimensions)
        known = self.log.known()
        own = [d for d in before.list_documents(Access(everything=True))
               if d["doc_id"] not in known]  # fmt: skip
        for start in range(0, len(own), PAGE):
            page = own[start : start + PAGE]
            listed = ", ".join(quote(d["doc_id"]) for d in page)
            # Referral chunks are not the log's: each replica makes its own from the links.
            found = before.chunks.search().where(f"doc_id IN ({listed}) AND position >= 0")
            rows = found.limit(None).to_arrow()
            by_doc: dict[str, list[dict[str, Any]]] = {}
            for row in rows.to_pylist():
                by_doc.setdefault(row["doc_id"], []).append(row)
            self.log.write([
                _change(d, chunks, np.array([c.pop("vector") for c in chunks], dtype=np.float32))
                for d in page for chunks in (by_doc.get(d["doc_id"], []),)
            ])  # fmt: skip


def _change(
    document: dict[str, Any], chunks: list[dict[str, Any]], vectors: np.ndarray | None
) -> Change:
    row = {**document, "indexed_at": document["indexed_at"].isoformat()}
    pairs = [] if vectors is None or not chunks else [
        ({k: v for k, v in c.items() if k not in ("vector", "groups")},
         np.asarray(vector, dtype=np.float32).tobytes())
        for c, vector in zip(chunks, vectors, strict=True)
    ]  # fmt: skip
    return document["doc_id"], row, pairs


def _batch_entry(
    document: dict[str, Any], chunks: list[tuple[dict[str, Any], bytes]]
) -> tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None]:
    row = {**document, "indexed_at": dt.datetime.fromisoformat(document["indexed_at"])}
    if not chunks:
        return row, [], None
    vectors = np.stack([np.frombuffer(vector, dtype=np.float32) for _, vector in chunks])
    return row, [c for c, _ in chunks], vectors
