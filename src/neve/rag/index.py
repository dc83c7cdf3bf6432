"""The document index: LanceDB under the data directory, holding chunk vectors, a full-text
(BM25) index over chunk text, and one row per document with its status.

Search runs a vector and a text query, each with the caller's access rule applied before
ranking (a prefilter, so a restricted chunk never takes a place in the candidates), and
fuses the two by weighted reciprocal rank. Several chunks of one page then count once:
the answer needs different passages, not one passage's neighbours."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

Mode = Literal["hybrid", "vector", "text"]
FILTER_KEYS = ("document", "path", "path_prefix", "title", "kind", "page")
MAX_PAGE = 2**31 - 1  # pages are stored as 32-bit integers
CHUNK_COLUMNS = ["id", "doc_id", "path", "title", "section", "page", "position", "text"]


@dataclass(frozen=True)
class Hit:
    id: str
    doc_id: str
    path: str
    title: str
    section: str
    page: int | None
    position: int
    text: str
    score: float  # the mode's own: cosine (vector), BM25 (text), fused rank (hybrid)
    similarity: float | None  # cosine to the question, whatever the mode


@dataclass(frozen=True)
class Access:
    """Which chunks a caller may see: all (an admin), or public ones and those sharing a
    group with theirs."""

    everything: bool
    groups: frozenset[str] = frozenset()

    def clause(self) -> str | None:
        if self.everything:
            return None
        public = "array_length(groups) = 0"
        if not self.groups:
            return public
        listed = ", ".join(_quote(g) for g in sorted(self.groups))
        return f"({public} OR array_has_any(groups, [{listed}]))"


class FilterError(ValueError):
    """A search filter that is not one of FILTER_KEYS, or of the wrong type."""


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def filter_clause(filters: dict[str, Any]) -> str | None:
    """Metadata filters as SQL over known columns only, every value a quoted literal."""
    parts = []
    for key, value in filters.items():
        if key not in FILTER_KEYS:
            raise FilterError(f"unknown filter {key!r}; use {', '.join(FILTER_KEYS)}")
        if key == "page":
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_PAGE:
                raise FilterError(f"filter 'page' must be an integer from 0 to {MAX_PAGE}")
            parts.append(f"page = {value}")
            continue
        if not isinstance(value, str):
            raise FilterError(f"filter {key!r} must be a string")
        if key == "path_prefix":
            escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            parts.append(f"path LIKE {_quote(escaped + '%')} ESCAPE '\\'")
        else:
            column = {"document": "doc_id"}.get(key, key)
            parts.append(f"{column} = {_quote(value)}")
    return " AND ".join(parts) or None


def _both(*clauses: str | None) -> str | None:
    present = [c for c in clauses if c]
    return " AND ".join(f"({c})" for c in present) or None


class Index:
    def __init__(
        self,
        path: Path,
        dimensions: int,
        *,
        ann_min_rows: int = 100_000,
        ann_ef: int = 400,
        ann_refine: int = 2,
    ) -> None:
        import lancedb

        path.mkdir(parents=True, exist_ok=True)
        # Every read sees the newest version: `neve ingest` in another process shows at once.
        self.db = lancedb.connect(str(path), read_consistency_interval=dt.timedelta(0))
        self.dimensions = dimensions
        self.ann_min_rows = ann_min_rows
        self.ann_ef = ann_ef
        self.ann_refine = ann_refine
        self._pool = ThreadPoolExecutor(3, thread_name_prefix="neve-search")
        self._indexed: set[str] = set()  # columns with an index: "text", "vector"
        self._indexed_checked = -1e9
        self._opening_vectors: (
            tuple[int, tuple[list[str], list[frozenset[str]], np.ndarray]] | None
        ) = None
        self._write = threading.Lock()
        names = set(self.db.list_tables().tables)
        self.chunks = (
            self.db.open_table("chunks")
            if "chunks" in names
            else self.db.create_table("chunks", schema=self._chunk_schema())
        )
        self.documents = (
            self.db.open_table("documents")
            if "documents" in names
            else self.db.create_table("documents", schema=DOCUMENT_SCHEMA)
        )

    def _chunk_schema(self) -> pa.Schema:
        return pa.schema(
            [("id", pa.string()), ("doc_id", pa.string()), ("path", pa.string()),
             ("title", pa.string()), ("section", pa.string()), ("page", pa.int32()),
             ("position", pa.int32()), ("kind", pa.string()), ("text", pa.string()),
             ("groups", pa.list_(pa.string())),
             ("vector", pa.list_(pa.float32(), self.dimensions))]
        )  # fmt: skip

    # -- writing ---------------------------------------------------------------------

    def replace_documents(
        self, batch: list[tuple[dict[str, Any], list[dict[str, Any]], np.ndarray | None]]
    ) -> None:
        """Put each document's chunks in place of any it had, and its row (with its status).
        One write per table for the whole batch: LanceDB commits are the slow part."""
        if not batch:
            return
        listed = ", ".join(_quote(d["doc_id"]) for d, _, _ in batch)
        rows = [
            {**c, "groups": document["groups"], "vector": v}
            for document, chunks, vectors in batch
            if chunks and vectors is not None
            for c, v in zip(chunks, vectors.tolist(), strict=True)
        ]
        with self._write:
            self.chunks.delete(f"doc_id IN ({listed})")
            if rows:
                self.chunks.add(pa.Table.from_pylist(rows, schema=self.chunks.schema))
            self.documents.delete(f"doc_id IN ({listed})")
            self.documents.add(
                pa.Table.from_pylist([d for d, _, _ in batch], schema=DOCUMENT_SCHEMA)
            )

    def remove(self, doc_ids: Iterable[str]) -> int:
        ids = list(doc_ids)
        if not ids:
            return 0
        listed = ", ".join(_quote(i) for i in ids)
        with self._write:
            self.chunks.delete(f"doc_id IN ({listed})")
            self.documents.delete(f"doc_id IN ({listed})")
        return len(ids)

    def finish(self) -> None:
        """After a run of writes: index new text, build the vector index once the table
        is large enough, and compact."""
        from lancedb.index import FTS

        with self._write:
            rows = self.chunks.count_rows()
            if not rows:
                return
            self._indexed_checked = -1e9
            if not self._has_index("text"):
                self.chunks.create_index("text", config=FTS(), replace=True)
            if rows >= self.ann_min_rows and not self._has_index("vector"):
                self.chunks.create_index(
                    metric="cosine", vector_column_name="vector", index_type="IVF_HNSW_SQ"
                )
            self._indexed_checked = -1e9
            self.chunks.optimize()

    # -- reading ---------------------------------------------------------------------

    def list_documents(self, access: Access) -> list[dict[str, Any]]:
        query = self.documents.search()
        clause = access.clause()
        if clause:
            query = query.where(clause)
        rows: list[dict[str, Any]] = query.limit(None).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["path"])

    def document(self, doc_id: str, access: Access) -> dict[str, Any] | None:
        clause = _both(f"doc_id = {_quote(doc_id)}", access.clause())
        assert clause is not None
        rows = self.documents.search().where(clause).limit(1).to_arrow().to_pylist()
        return rows[0] if rows else None

    def search(
        self,
        *,
        text: str,
        vector: np.ndarray | None,
        mode: Mode,
        top_k: int,
        access: Access,
        filters: dict[str, Any] | None = None,
        candidates: int = 50,
        weights: tuple[float, float] = (1.0, 1.0),
        opening_weight: float = 0.0,
        rrf_k: int = 60,
        per_page: int = 1,
        min_similarity: float | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The best `top_k` chunks the caller may see. A chunk whose cosine similarity to the
        question is below `min_similarity` does not count (in text mode too: a shared word
        alone is not relevance); `min_score` applies to the mode's own score."""
        where = _both(access.clause(), filter_clause(filters or {}))
        pool = max(candidates, top_k * 4)
        ranked: list[tuple[dict[str, Any], float]]
        if mode == "vector":
            ranked = self._vector(vector, pool, where)
        elif mode == "text":
            ranked = self._text(text, vector, pool, where)
        else:
            # The rankings run at once: each waits mostly in LanceDB, outside the GIL.
            by_vector = self._pool.submit(self._vector, vector, pool, where)
            by_text = self._pool.submit(self._text, text, vector, pool, where)
            ranked = _fuse([by_vector.result(), by_text.result()], weights, rrf_k)
            if opening_weight and vector is not None:
                ranked = self._boost_by_opening(ranked, vector, access, pool, opening_weight, rrf_k)
        hits: list[Hit] = []
        per: dict[tuple[str, int | None], int] = {}
        for row, score in ranked:
            if min_score is not None and score < min_score:
                continue
            similarity = row["similarity"]
            if min_similarity is not None and (similarity is None or similarity < min_similarity):
                continue
            place = (row["doc_id"], row["page"])
            if per.get(place, 0) >= per_page:
                continue
            per[place] = per.get(place, 0) + 1
            hits.append(
                Hit(**{k: row[k] for k in CHUNK_COLUMNS}, score=score, similarity=similarity)
            )
            if len(hits) == top_k:
                break
        return hits

    def _vector(
        self, vector: np.ndarray | None, limit: int, where: str | None
    ) -> list[tuple[dict[str, Any], float]]:
        assert vector is not None
        from lancedb.query import LanceVectorQueryBuilder

        query = self.chunks.search(vector, vector_column_name="vector")
        assert isinstance(query, LanceVectorQueryBuilder)
        query = query.distance_type("cosine")
        if self._has_index("vector"):
            # HNSW's defaults gave recall@10 0.71 at 100k; a wider search and an exact
            # re-rank of twice the candidates give 0.97 for 4 ms more (retrieval_scale.py).
            query = query.ef(self.ann_ef).refine_factor(self.ann_refine)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select(CHUNK_COLUMNS).limit(limit).to_arrow().to_pylist()
        for r in rows:
            r["similarity"] = 1.0 - float(r["_distance"])
        return [(r, r["similarity"]) for r in rows]

    def _boost_by_opening(
        self,
        ranked: list[tuple[dict[str, Any], float]],
        vector: np.ndarray,
        access: Access,
        limit: int,
        weight: float,
        k: int,
    ) -> list[tuple[dict[str, Any], float]]:
        """A third ranking, of the documents the caller may see by how well their opening
        chunk matches the question: a page whose title and first lines are about the
        question is more likely the answer's. Documents the caller may not see take no
        place in it, so they move no score."""
        doc_ids, groups, matrix = self._openings()
        if not doc_ids:
            return ranked
        similarity = matrix @ vector
        if not access.everything:
            visible = np.array([not g or bool(g & access.groups) for g in groups])
            similarity = np.where(visible, similarity, -np.inf)
        best = np.argsort(-similarity)[:limit]
        rank = {doc_ids[i]: r for r, i in enumerate(best, start=1) if similarity[i] > -np.inf}
        boosted = [
            (row, score + (weight / (k + rank[row["doc_id"]]) if row["doc_id"] in rank else 0))
            for row, score in ranked
        ]
        return sorted(boosted, key=lambda p: -p[1])

    def _openings(self) -> tuple[list[str], list[frozenset[str]], np.ndarray]:
        """Each document's opening-chunk vector and groups, held in memory (a query less per
        search) and read again when the table changes."""
        version = self.chunks.version
        if self._opening_vectors is None or self._opening_vectors[0] != version:
            found = (
                self.chunks.search().where("position = 0")
                .select(["doc_id", "groups", "vector"]).limit(None).to_arrow()
            )  # fmt: skip
            flat = found["vector"].combine_chunks().flatten().to_numpy()
            matrix = flat.reshape(found.num_rows, self.dimensions)
            groups = [frozenset(g) for g in found["groups"].to_pylist()]
            self._opening_vectors = (version, (found["doc_id"].to_pylist(), groups, matrix))
        return self._opening_vectors[1]

    def _has_index(self, column: str) -> bool:
        """Whether `column` is indexed. Once it is, it stays; until then it is looked for
        again every 2 s, as `neve ingest` in another process may build the index."""
        now = time.monotonic()
        if column not in self._indexed and now - self._indexed_checked > 2:
            self._indexed = {c for i in self.chunks.list_indices() for c in i.columns}
            self._indexed_checked = now
        return column in self._indexed

    def _text(
        self, text: str, vector: np.ndarray | None, limit: int, where: str | None
    ) -> list[tuple[dict[str, Any], float]]:
        if not text.strip() or not self._has_index("text"):
            return []
        query = self.chunks.search(text, query_type="fts", fts_columns="text")
        if where:
            query = query.where(where, prefilter=True)
        found = query.select([*CHUNK_COLUMNS, "vector", "_score"]).limit(limit).to_arrow()
        rows = found.drop_columns(["vector"]).to_pylist()
        if vector is not None and rows:
            stored = found["vector"].combine_chunks().flatten().to_numpy()
            similarity = stored.reshape(len(rows), -1) @ vector  # both unit length
            for r, sim in zip(rows, similarity.tolist(), strict=True):
                r["similarity"] = sim
        else:
            for r in rows:
                r["similarity"] = None
        return [(r, float(r["_score"])) for r in rows]


def _fuse(
    lists: list[list[tuple[dict[str, Any], float]]], weights: tuple[float, float], k: int
) -> list[tuple[dict[str, Any], float]]:
    """Weighted reciprocal rank fusion: score = sum of weight / (k + rank)."""
    scores: dict[str, float] = {}
    rows: dict[str, dict[str, Any]] = {}
    for ranked, weight in zip(lists, weights, strict=True):
        for rank, (row, _) in enumerate(ranked, start=1):
            scores[row["id"]] = scores.get(row["id"], 0.0) + weight / (k + rank)
            rows.setdefault(row["id"], row)
    return sorted(((rows[i], s) for i, s in scores.items()), key=lambda p: -p[1])


DOCUMENT_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("path", pa.string()), ("title", pa.string()),
     ("kind", pa.string()), ("sha256", pa.string()), ("size", pa.int64()),
     ("status", pa.string()), ("error", pa.string()), ("pages", pa.int32()),
     ("chunks", pa.int32()), ("groups", pa.list_(pa.string())),
     ("indexed_at", pa.timestamp("us", tz="UTC"))]
)  # fmt: skip
