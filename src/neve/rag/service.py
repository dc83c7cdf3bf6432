"""Retrieval-augmented answering: the question embedded, the index searched under the
caller's access, and the prompt that grounds the model in what was found."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from neve.config import Settings
from neve.rag.embedder import Embedder
from neve.rag.fusion import Weights
from neve.rag.index import Access, Ann, Hit, Index, Mode
from neve.rag.ingest import Chunking, Ingester
from neve.rag.referrals import Referrals
from neve.rag.replica import DocumentLog, ReplicatedIndex
from neve.rag.reranker import Reranker, RerankerUnavailable, configured_reranker

SNIPPET_CHARS = 600


def configured_embedder(settings: Settings) -> Embedder:
    """The embedder the settings describe (the hub's, and `neve ingest`'s)."""
    return Embedder(
        settings.embedding_model,
        batch_size=settings.embedding_batch_size,
        backend=settings.embedding_backend,
        cache_dir=settings.models_path / "onnx",
    )


class Rag:
    def __init__(
        self,
        settings: Settings,
        embedder: Embedder,
        index: Index | None = None,
        log: DocumentLog | None = None,
    ) -> None:
        """With a `log` (a fleet's shared documents), the index is a replica of it."""
        self.settings = settings
        self.embedder = embedder
        self._index = index
        self._log = log
        self._lock = threading.Lock()
        self._reranker: Reranker | None = None
        self._pair_seconds: float | None = None  # the reranker's pace at the last search

    @property
    def index(self) -> Index:
        """Opened on first use: it needs the embedding model's dimensions."""
        with self._lock:
            if self._index is None:
                s = self.settings
                ann = Ann(
                    s.rag_ann_min_rows, s.rag_ann_partition_rows, s.rag_ann_ef, s.rag_ann_refine
                )
                dimensions = self.embedder.dimensions
                self._index = (
                    Index(s.rag_path, dimensions, ann=ann)
                    if self._log is None
                    else ReplicatedIndex(
                        replica_path(s), dimensions, self._log, ann=ann, adopt=s.rag_path
                    )
                )
            return self._index

    def sync(self) -> int:
        """A replica brought up to its log (the documents applied); 0 without a log."""
        index = self.index
        if not isinstance(index, ReplicatedIndex):
            return 0
        applied = index.pull()
        if applied:
            self.ingester().refer()
            index.finish()
        return applied

    def remove(self, doc_ids: list[str]) -> int:
        """Documents out of the index, and the texts of their links out of the pages they
        pointed to."""
        removed = self.index.remove(doc_ids)
        if removed:
            self.ingester().refer()
        return removed

    def ingester(self) -> Ingester:
        s = self.settings
        chunking = Chunking(s.rag_chunk_tokens, s.rag_chunk_overlap)
        referrals = (
            Referrals(s.rag_link_text_tokens, s.rag_link_text_generic) if s.rag_link_texts else None
        )
        return Ingester(self.index, self.embedder, chunking, s.rag_folder_groups, referrals)

    @property
    def reranker(self) -> Reranker | None:
        """The reranker `rag_reranker` names (None when off), made on first use."""
        with self._lock:
            if self._reranker is None and self.settings.rag_reranker != "off":
                self._reranker = configured_reranker(self.settings)
            return self._reranker

    def search(
        self,
        question: str,
        *,
        access: Access,
        top_k: int | None = None,
        mode: Mode | None = None,
        filters: dict[str, Any] | None = None,
        min_score: float | None = None,
        rerank: bool | None = None,
    ) -> list[Hit]:
        """The best passages; `rerank` False leaves the reranker out (None: as set)."""
        s = self.settings
        wanted = top_k or s.rag_top_k
        reranker = self.reranker if rerank is not False else None
        if rerank and reranker is None:
            raise RerankerUnavailable("no reranker is set (setting rag_reranker)")
        options = dict(
            text=question, mode=mode or s.rag_mode, access=access, filters=filters,
            min_score=min_score, top_k=max(wanted, s.rag_rerank_candidates if reranker else 0),
            **ranking(s),
        )  # fmt: skip
        vector = self.embedder.encode_array([question])[0]
        hits = self.index.search(vector=vector, **options)
        if s.rag_prf != "off" and hits:
            hits = self._expanded(question, vector, hits, options)
        if reranker is not None and hits:
            hits, self._pair_seconds = reranked(
                reranker, question, hits, s.rag_rerank_budget, self._pair_seconds
            )
        return hits[:wanted]

    def _expanded(
        self, question: str, vector: np.ndarray, hits: list[Hit], options: dict[str, Any]
    ) -> list[Hit]:
        """Pseudo-relevance feedback: the search again, with the question moved towards
        its first passages (Rocchio, on vectors) or its words joined by theirs (RM3-like,
        on text), as `rag_prf` says."""
        s = self.settings
        first = hits[: s.rag_prf_passages]
        if s.rag_prf in ("vector", "both"):
            seen = self.embedder.encode_array([h.text for h in first]).mean(axis=0)
            moved = vector + s.rag_prf_weight * seen
            vector = moved / max(float(np.linalg.norm(moved)), 1e-12)
        if s.rag_prf in ("text", "both"):
            options = {**options, "text": f"{question} {expansion(question, first)}"}
        return self.index.search(vector=vector, **options)

    def prompt(self, question: str, hits: list[Hit]) -> str:
        sources = "\n\n".join(
            f"[{i}] {h.title}" + (f", page {h.page}" if h.page else "") + f"\n{_body(h)}"
            for i, h in enumerate(hits, 1)
        )
        return self.settings.rag_prompt.format(sources=sources, question=question)


def replica_path(settings: Settings) -> Path:
    """Where this instance keeps its replica of a fleet's index: a folder per host, as
    instances may share a data directory (Compose's replicas share their named volume)."""
    return settings.rag_path / "replicas" / socket.gethostname()


def ranking(s: Settings) -> dict[str, Any]:
    """The index's ranking options, from the settings."""
    return {
        "candidates": s.rag_candidates,
        "weights": Weights(
            s.rag_vector_weight, s.rag_text_weight, s.rag_opening_weight, s.rag_rrf_k
        ),
        "per_page": s.rag_per_page,
        "min_similarity": s.rag_min_similarity,
    }


_WORD = re.compile(r"[^\W\d_][\w.-]*[^\W_]|[^\W\d_]{2}")
_STOP = frozenset(
    """a about above after again all also an and any are as at be because been before being
    both but by can could did do does doing down each few for from further had has have how
    i if in into is it its just may more most must no not now of off on once only or other
    our out over own same should so some such than that the their them then there these they
    this those through to too under until up use used using very was we were what when where
    which while who why will with would you your""".split()  # noqa: SIM905
)


def expansion(question: str, passages: list[Hit], terms: int = 5) -> str:
    """The words the first passages share most (in at least two of them), not in the
    question and not stop words: RM3's expansion without its term statistics."""
    asked = {w.lower() for w in _WORD.findall(question)}
    spread: Counter[str] = Counter()
    for hit in passages:
        spread.update({w.lower() for w in _WORD.findall(hit.text)} - asked - _STOP)
    return " ".join(w for w, n in spread.most_common(terms) if n >= 2)


def reranked(
    reranker: Reranker, question: str, hits: list[Hit], budget: float, pair_seconds: float | None
) -> tuple[list[Hit], float]:
    """The hits in the reranker's order, and the seconds it took per passage. As many
    passages are scored as `budget` seconds allow at the last search's pace (all of them
    the first time); those left unscored follow in their first order."""
    scored = (
        len(hits) if pair_seconds is None else max(1, min(len(hits), int(budget / pair_seconds)))
    )
    began = time.monotonic()
    scores = reranker.score(question, [h.text for h in hits[:scored]]).values
    order = sorted(range(scored), key=lambda i: -scores[i])
    return [hits[i] for i in order] + hits[scored:], (time.monotonic() - began) / scored


def _body(hit: Hit) -> str:
    """The chunk without its heading line (the source line above names it)."""
    return hit.text.split("\n", 1)[1] if "\n" in hit.text else hit.text


def citation(hit: Hit) -> dict[str, Any]:
    return {
        "document": hit.doc_id,
        "path": hit.path,
        "title": hit.title,
        "section": hit.section,
        "page": hit.page,
        "text": _body(hit)[:SNIPPET_CHARS],
        "score": hit.score,
    }
