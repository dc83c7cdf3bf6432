"""The document index: LanceDB under the data directory, holding chunk vectors, a full-text
(BM25) index over chunk text, and one row per document with its status.

Search runs a vector and a text query, each with the caller's access rule applied before
ranking (a prefilter, so a restricted chunk never takes a place in the candidates), and
fuses the two over pages (neve/rag/fusion.py): several chunks of one page count once, as
the answer needs different passages, not one passage's neighbours."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa

from neve.errors import BadRequest
from neve.rag.fusion import Weights, fuse, place

Mode = Literal["hybrid", "vector", "text"]
FILTER_KEYS = ("document", "path", "path_prefix", "title", "kind", "page")
MAX_PAGE = 2**31 - 1  # pages are stored as 32-bit integers
EQUAL = Weights()  # vector and text alike, no opening ranking
CHUNK_COLUMNS = ["id", "doc_id", "path", "title", "section", "page", "position", "text"]
REFERRAL = -1  # the position of a page's chunk of link texts (neve/rag/referrals.py)


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
        listed = ", ".join(quote(g) for g in sorted(self.groups))
        return f"({public} OR array_has_any(groups, [{listed}]))"


class FilterError(BadRequest):
    """A search filter that is not one of FILTER_KEYS, or of the wrong type."""

    def __init__(self, message: str) -> None:
        super().__init__(f"filters: {message}", param="filters")


def quote(value: str) -> str:
    """A text literal for LanceDB's SQL filters."""
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
            parts.append(f"path LIKE {quote(escaped + '%')} ESCAPE '\\'")
        else:
            column = {"document": "doc_id"}.get(key, key)
            parts.append(f"{column} = {quote(value)}")
    return " AND ".join(parts) or None


def _both(*clauses: str | None) -> str | None:
    present = [c for c in clauses if c]
    return " AND ".join(f"({c})" for c in present) or None


@dataclass(frozen=True)
class Ann:
    """The approximate vector index (IVF_HNSW_SQ): built from `min_rows` chunks, with one
    IVF partition (each its own HNSW graph) per `partition_rows` chunks, rebuilt when the
    table has doubled its partitions' worth, and every partition probed by a search.

    Why (benchmarks/retrieval_scale.py at 1M chunks): LanceDB's defaults, sqrt(rows)
    partitions and 20 probes, gave recall@10 0.69, as the probes stay fixed while the
    partitions grow; one graph of 1M rows searched with ef 400 gave 0.68; sixteen graphs of
    62k rows, all probed, gave 0.99. `ef` is each graph's search breadth, `refine` the
    candidates re-ranked exactly, as a multiple of those asked for. At 1M (same benchmark,
    100 queries): ef 400 and refine 2 gave recall@10 0.985; ef 250 and refine 1, 0.965
    for about a fifth less search time; ef 200, 0.94; ef 300 without refining, 0.94 (the
    8-bit vectors' error). Eight graphs of 125k rows instead, refine 1: 0.96 at ef 400,
    0.88 at 200. The graphs keep their size as the table grows, so one ef serves every size."""

    min_rows: int = 100_000
    partition_rows: int = 65_536
    ef: int = 250
    refine: int = 1

    def partitions(self, rows: int) -> int:
        return max(1, -(-rows // self.partition_rows))


DEFAULT_ANN = Ann()
VECTOR_INDEX = "vector_p"  # the index's name: vector_p<partitions>
ALL_PARTITIONS = 1 << 20  # probes: LanceDB searches the partitions there are


def _partitions(index_name: str) -> int | None:
    """The partitions of a vector index neve built, from its name."""
    digits = index_name.removeprefix(VECTOR_INDEX)
    return int(digits) if index_name.startswith(VECTOR_INDEX) and digits.isdigit() else None


class Index:
    def __init__(self, path: Path, dimensions: int, *, ann: Ann = DEFAULT_ANN) -> None:
        import lancedb

        path.mkdir(parents=True, exist_ok=True)
        # Every read sees the newest version: `neve ingest` in another process shows at once.
        self.db = lancedb.connect(str(path), read_consistency_interval=dt.timedelta(0))
        self.dimensions = dimensions
        self.ann = ann
        self._pool = ThreadPoolExecutor(3, thread_name_prefix="neve-search")
        self._indexed: set[str] = set()  # columns with an index: "text", "vector"
        self._indexed_checked = -1e9
        self._opening_vectors: tuple[int, tuple[dict[str, int], np.ndarray]] | None = None
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
        if "links" not in self.documents.schema.names:  # an index from before links
            self.documents.add_columns({"links": "CAST(NULL AS STRING)"})

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
        listed = ", ".join(quote(d["doc_id"]) for d, _, _ in batch)
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
        listed = ", ".join(quote(i) for i in ids)
        with self._write:
            self.chunks.delete(f"doc_id IN ({listed})")
            self.documents.delete(f"doc_id IN ({listed})")
        return len(ids)

    def referrals(self, doc_ids: list[str] | None = None) -> dict[str, str]:
        """The text of each page's referral chunk (of those named, else of all)."""
        where = f"position = {REFERRAL}"
        if doc_ids is not None:
            where += f" AND doc_id IN ({', '.join(quote(d) for d in doc_ids) or 'NULL'})"
        rows = self.chunks.search().where(where).select(["doc_id", "text"]).limit(None)
        return {r["doc_id"]: r["text"] for r in rows.to_arrow().to_pylist()}

    def put_referrals(
        self, doc_ids: list[str], rows: list[dict[str, Any]], vectors: np.ndarray | None
    ) -> None:
        """Replace the referral chunks of `doc_ids` with `rows` (some of them, or none)."""
        listed = ", ".join(quote(d) for d in doc_ids)
        with self._write:
            self.chunks.delete(f"position = {REFERRAL} AND doc_id IN ({listed})")
            if rows and vectors is not None:
                added = [{**r, "vector": v} for r, v in zip(rows, vectors.tolist(), strict=True)]
                self.chunks.add(pa.Table.from_pylist(added, schema=self.chunks.schema))

    def finish(self) -> None:
        """After a run of writes: index new text, build the vector index once the table
        is large enough, and compact."""
        from lancedb.index import FTS, HnswSq

        with self._write:
            rows = self.chunks.count_rows()
            if not rows:
                return
            self._indexed_checked = -1e9
            if not self._has_index("text"):
                self.chunks.create_index("text", config=FTS(), replace=True)
            # Compaction and new rows into the indexes first: LanceDB's optimize right after
            # an HNSW build lowered its recall@10 (0.99 to 0.96 at 100k, 0.99 to 0.58 at 1M).
            self.chunks.optimize()
            if rows >= self.ann.min_rows:
                found = [i.name for i in self.chunks.list_indices() if "vector" in i.columns]
                built = _partitions(found[0]) if found else None
                wanted = self.ann.partitions(rows)
                if built is None or wanted >= 2 * built:  # none, another make's, or outgrown
                    for name in found:
                        self.chunks.drop_index(name)
                    self.chunks.create_index(
                        "vector",
                        config=HnswSq(distance_type="cosine", num_partitions=wanted),
                        name=f"{VECTOR_INDEX}{wanted}",
                        replace=True,
                    )
            self._indexed_checked = -1e9

    # -- reading ---------------------------------------------------------------------

    def list_documents(self, access: Access) -> list[dict[str, Any]]:
        query = self.documents.search()
        clause = access.clause()
        if clause:
            query = query.where(clause)
        rows: list[dict[str, Any]] = query.limit(None).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["path"])

    def document(self, doc_id: str, access: Access) -> dict[str, Any] | None:
        clause = _both(f"doc_id = {quote(doc_id)}", access.clause())
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
        weights: Weights = EQUAL,
        per_page: int = 1,
        min_similarity: float | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        """The best `top_k` chunks the caller may see. A chunk whose cosine similarity to the
        question is below `min_similarity` does not count (in text mode too: a shared word
        alone is not relevance); `min_score` applies to the mode's own score."""
        where = _both(access.clause(), filter_clause(filters or {}))
        pool = max(candidates, top_k * 4)
        if mode == "hybrid":
            # The rankings run at once: each waits mostly in LanceDB, outside the GIL.
            by_vector = self._pool.submit(self._vector, vector, pool, where)
            by_text = self._pool.submit(self._text, text, vector, pool, where)
            rankings = [by_vector.result(), by_text.result()]
        elif mode == "vector":
            rankings = [self._vector(vector, pool, where)]
        else:
            rankings = [self._text(text, vector, pool, where)]
        if min_similarity is not None:
            rankings = [
                [
                    (row, s)
                    for row, s in r
                    if row["similarity"] is not None and row["similarity"] >= min_similarity
                ]
                for r in rankings
            ]
        if mode == "hybrid":
            opening = self._opening_similarity(rankings, vector) if weights.opening else None
            ranked = fuse(rankings[0], rankings[1], weights, per_page, opening)
        else:  # the mode's own score, its best `per_page` chunks of each page
            taken: Counter[tuple[str, int | None]] = Counter()
            ranked = []
            for row, score in rankings[0]:
                taken[place(row)] += 1
                if taken[place(row)] <= per_page:
                    ranked.append((row, score))
        kept = [(row, s) for row, s in ranked if min_score is None or s >= min_score][:top_k]
        return [
            Hit(**{k: row[k] for k in CHUNK_COLUMNS}, score=score, similarity=row["similarity"])
            for row, score in self._passages(kept, vector, where)
        ]

    def _passages(
        self,
        ranked: list[tuple[dict[str, Any], float]],
        vector: np.ndarray | None,
        where: str | None,
    ) -> list[tuple[dict[str, Any], float]]:
        """The results with a page's best passage in place of its referral chunk, which
        found the page but is not a passage of it (once per page: a passage of the page
        already listed stands)."""
        pages = [row["doc_id"] for row, _ in ranked if row["position"] == REFERRAL]
        if not pages:
            return ranked
        listed = ", ".join(quote(d) for d in pages)
        clause = _both(f"doc_id IN ({listed}) AND position >= 0", where)
        assert clause is not None
        found = (
            self.chunks.search().where(clause)
            .select([*CHUNK_COLUMNS, "vector"]).limit(None).to_arrow()
        )  # fmt: skip
        best: dict[str, dict[str, Any]] = {}
        for row in _near(found, vector):  # without a vector, a page's first passage
            held = best.get(row["doc_id"])
            if held is None or (row["similarity"] or 0.0) > (held["similarity"] or 0.0):
                best[row["doc_id"]] = row
        shown: set[str] = {row["id"] for row, _ in ranked}
        out = []
        for row, score in ranked:
            if row["position"] == REFERRAL:
                row = best.get(row["doc_id"], row)
                if row["id"] in shown and row["position"] != REFERRAL:
                    continue
            out.append((row, score))
        return out

    def _vector(
        self, vector: np.ndarray | None, limit: int, where: str | None
    ) -> list[tuple[dict[str, Any], float]]:
        assert vector is not None
        from lancedb.query import LanceVectorQueryBuilder

        query = self.chunks.search(vector, vector_column_name="vector")
        assert isinstance(query, LanceVectorQueryBuilder)
        query = query.distance_type("cosine")
        if self._has_index("vector"):
            query = query.nprobes(ALL_PARTITIONS).ef(self.ann.ef).refine_factor(self.ann.refine)
        if where:
            query = query.where(where, prefilter=True)
        rows = query.select([*CHUNK_COLUMNS, "_distance"]).limit(limit).to_arrow().to_pylist()
        for r in rows:
            r["similarity"] = 1.0 - float(r["_distance"])
        return [(r, r["similarity"]) for r in rows]

    def _opening_similarity(
        self, rankings: list[list[tuple[dict[str, Any], float]]], vector: np.ndarray | None
    ) -> dict[str, float]:
        """How well each candidate document's opening chunk matches the question."""
        assert vector is not None
        docs, matrix = self._openings()
        found = list({row["doc_id"] for ranking in rankings for row, _ in ranking} & docs.keys())
        similarity = matrix[[docs[d] for d in found]] @ vector
        return dict(zip(found, similarity.tolist(), strict=True))

    def _openings(self) -> tuple[dict[str, int], np.ndarray]:
        """Each document's opening-chunk vector (its row in the matrix by document), held in
        memory, a query less per search, and read again when the table changes."""
        version = self.chunks.version
        if self._opening_vectors is None or self._opening_vectors[0] != version:
            found = (
                self.chunks.search().where("position = 0")
                .select(["doc_id", "vector"]).limit(None).to_arrow()
            )  # fmt: skip
            flat = found["vector"].combine_chunks().flatten().to_numpy()
            matrix = flat.reshape(found.num_rows, self.dimensions)
            docs = {d: i for i, d in enumerate(found["doc_id"].to_pylist())}
            self._opening_vectors = (version, (docs, matrix))
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
        # Quotes would make a phrase query, which the index (built without positions)
        # refuses: a question quoting an error message is words like any other.
        text = text.replace('"', " ")
        if not text.strip() or not self._has_index("text"):
            return []
        query = self.chunks.search(text, query_type="fts", fts_columns="text")
        if where:
            query = query.where(where, prefilter=True)
        found = query.select([*CHUNK_COLUMNS, "vector", "_score"]).limit(limit).to_arrow()
        return [(r, float(r["_score"])) for r in _near(found, vector)]


def _near(found: pa.Table, vector: np.ndarray | None) -> list[dict[str, Any]]:
    """The rows without their vectors, each with its cosine similarity to `vector` (both
    unit length), or None without one."""
    rows = found.drop_columns(["vector"]).to_pylist()
    if vector is None or not rows:
        similarities: list[float | None] = [None] * len(rows)
    else:
        stored = found["vector"].combine_chunks().flatten().to_numpy()
        similarities = (stored.reshape(len(rows), -1) @ vector).tolist()
    for row, similarity in zip(rows, similarities, strict=True):
        row["similarity"] = similarity
    return rows


DOCUMENT_SCHEMA = pa.schema(
    [("doc_id", pa.string()), ("path", pa.string()), ("title", pa.string()),
     ("kind", pa.string()), ("sha256", pa.string()), ("size", pa.int64()),
     ("status", pa.string()), ("error", pa.string()), ("pages", pa.int32()),
     ("chunks", pa.int32()), ("groups", pa.list_(pa.string())),
     ("indexed_at", pa.timestamp("us", tz="UTC")),
     ("links", pa.string())]  # JSON: [[target path, text], ...] (neve/rag/referrals.py)
)  # fmt: skip
