"""Files into the index: found, read, chunked, embedded and written, in batches.

A file is known by its absolute path and its content hash: an unchanged file is skipped,
a changed one replaces its chunks, one that cannot be read is recorded as failed with the
reason (and never stops the run). `prune` removes documents under the given folders whose
files are gone."""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neve.rag.chunking import chunk_document
from neve.rag.embedder import Embedder
from neve.rag.index import Access, Index
from neve.rag.loaders import LoadError, kind_of, load
from neve.rag.referrals import Referrals, encoded, refresh

GROUPS_SIDECAR = ".groups"  # report.pdf.groups: the groups that may read report.pdf
BATCH_CHUNKS = 512  # chunks written to the index at once


@dataclass
class Progress:
    files_total: int = 0
    files: int = 0
    pages: int = 0
    chunks: int = 0
    skipped: int = 0
    failed: int = 0
    removed: int = 0
    started: float = 0.0
    embedding_seconds: float = 0.0

    @property
    def chunks_per_second(self) -> float:
        return self.chunks / max(time.monotonic() - self.started, 1e-9)


Read = tuple[dict[str, Any], list[dict[str, Any]]] | None  # a document row and its chunks


@dataclass(frozen=True)
class Chunking:
    tokens: int
    overlap: int


def doc_id(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


def find_files(paths: list[Path]) -> list[Path]:
    """Documents named or under the folders named (hidden files and sidecars skipped)."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(
                p for p in path.rglob("*")
                if p.is_file() and kind_of(p)
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )  # fmt: skip
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or folder")
    return [p.resolve() for p in found]


class Ingester:
    def __init__(
        self,
        index: Index,
        embedder: Embedder,
        chunking: Chunking,
        folder_groups: dict[str, list[str]] | None = None,
        referrals: Referrals | None = None,
    ) -> None:
        """`referrals`: how pages get the texts of the links to them (None: they do not)."""
        self.index = index
        self.embedder = embedder
        self.chunking = chunking
        self.folder_groups = folder_groups or {}
        self.referrals = referrals

    def groups_for(self, path: Path, given: list[str] | None) -> list[str]:
        """Given groups, else the sidecar file's, else the first folder rule matching."""
        if given is not None:
            return sorted(set(given))
        sidecar = path.with_name(path.name + GROUPS_SIDECAR)
        if sidecar.is_file():
            words = sidecar.read_text(encoding="utf-8").replace(",", "\n").split()
            return sorted(set(words))
        for pattern, groups in self.folder_groups.items():
            if fnmatch.fnmatch(str(path), pattern):
                return sorted(set(groups))
        return []

    def run(
        self,
        paths: list[Path],
        *,
        groups: list[str] | None = None,
        prune: bool = False,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> Progress:
        files = find_files(paths)
        progress = Progress(files_total=len(files), started=time.monotonic())
        known = {d["doc_id"]: d for d in self.index.list_documents(Access(everything=True))}
        batch: list[tuple[dict[str, Any], list[dict[str, Any]], Any]] = []
        pending = 0

        def read(path: Path) -> Read:
            return self._read(path, self.groups_for(path, groups), known)

        for found in self._read_ahead(files, read):
            progress.files += 1
            if found is None:
                progress.skipped += 1
            elif found[0]["status"] == "failed":
                progress.failed += 1
                batch.append((found[0], [], None))
            else:
                document, chunks = found
                began = time.monotonic()
                vectors = self.embedder.encode_array([c["text"] for c in chunks])
                progress.embedding_seconds += time.monotonic() - began
                progress.pages += document["pages"]
                progress.chunks += len(chunks)
                batch.append((document, chunks, vectors))
                pending += len(chunks)
            if pending >= BATCH_CHUNKS or len(batch) >= 64:
                self.index.replace_documents(batch)
                batch, pending = [], 0
            if on_progress:
                on_progress(progress)
        self.index.replace_documents(batch)
        if prune:
            progress.removed = self.prune(paths, set(files))
        self.refer()
        self.index.finish()
        if on_progress:
            on_progress(progress)
        return progress

    def refer(self) -> int:
        """The pages' link texts brought up to date (neve/rag/referrals.py)."""
        return refresh(self.index, self.embedder, self.referrals)

    @staticmethod
    def _read_ahead(
        files: list[Path], read: Callable[[Path], Read], ahead: int = 4
    ) -> Iterator[Read]:
        """Files read and chunked in a thread a few ahead of their embedding, which runs
        meanwhile (onnxruntime releases the GIL)."""
        with ThreadPoolExecutor(1) as reader:
            queued: deque[Future[Read]] = deque()
            for path in files:
                queued.append(reader.submit(read, path))
                if len(queued) > ahead:
                    yield queued.popleft().result()
            while queued:
                yield queued.popleft().result()

    def _read(self, path: Path, groups: list[str], known: dict[str, dict[str, Any]]) -> Read:
        """The document row and its chunks; None when the same content and groups are
        indexed already (or failed already: reading it again would fail the same way)."""
        unreadable: str | None = None
        try:
            raw = path.read_bytes()
        except OSError as exc:
            raw, unreadable = b"", f"cannot read the file: {exc.strerror}"
        document: dict[str, Any] = {
            "doc_id": doc_id(path), "path": str(path), "title": path.name,
            "kind": kind_of(path) or "", "sha256": hashlib.sha256(raw).hexdigest(),
            "size": len(raw), "status": "indexed", "error": None, "pages": 0, "chunks": 0,
            "groups": groups, "indexed_at": dt.datetime.now(dt.UTC), "links": None,
        }  # fmt: skip
        previous = known.get(document["doc_id"])
        if previous and (previous["sha256"], previous["groups"]) == (document["sha256"], groups):
            return None
        try:
            if unreadable:
                raise LoadError(unreadable)
            loaded = load(path, raw)
        except LoadError as exc:
            document.update(status="failed", error=str(exc))
            return document, []
        pieces = chunk_document(
            loaded, self.embedder.token_counts, self.chunking.tokens, self.chunking.overlap
        )
        document.update(title=loaded.title, pages=loaded.pages, chunks=len(pieces),
                        links=encoded(loaded.links))  # fmt: skip
        chunks = [
            {"id": f"{document['doc_id']}:{c.position}", "doc_id": document["doc_id"],
             "path": str(path), "title": loaded.title, "section": c.section, "page": c.page,
             "position": c.position, "kind": document["kind"], "text": c.text}
            for c in pieces
        ]  # fmt: skip
        return document, chunks

    def prune(self, roots: list[Path], present: set[Path]) -> int:
        """Forget documents under `roots` that are no longer there."""
        folders = [str(r.resolve()) for r in roots if r.is_dir()]
        gone = [
            d["doc_id"]
            for d in self.index.list_documents(Access(everything=True))
            if Path(d["path"]) not in present
            and any(d["path"].startswith(f + "/") for f in folders)
        ]
        return self.index.remove(gone)
