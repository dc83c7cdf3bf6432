"""Retrieval-augmented answering: the question embedded, the index searched under the
caller's access, and the prompt that grounds the model in what was found."""

from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Any

from neve.config import Settings
from neve.rag.embedder import Embedder
from neve.rag.fusion import Weights
from neve.rag.index import Access, Ann, Hit, Index, Mode
from neve.rag.ingest import Chunking, Ingester
from neve.rag.replica import DocumentLog, ReplicatedIndex

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
            index.finish()
        return applied

    def ingester(self) -> Ingester:
        s = self.settings
        chunking = Chunking(s.rag_chunk_tokens, s.rag_chunk_overlap)
        return Ingester(self.index, self.embedder, chunking, s.rag_folder_groups)

    def search(
        self,
        question: str,
        *,
        access: Access,
        top_k: int | None = None,
        mode: Mode | None = None,
        filters: dict[str, Any] | None = None,
        min_score: float | None = None,
    ) -> list[Hit]:
        vector = self.embedder.encode_array([question])[0]
        return self.index.search(
            text=question,
            vector=vector,
            mode=mode or self.settings.rag_mode,
            top_k=top_k or self.settings.rag_top_k,
            access=access,
            filters=filters,
            min_score=min_score,
            **ranking(self.settings),
        )

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
