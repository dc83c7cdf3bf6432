"""Retrieval quality and ingestion speed on three HTML manuals Debian ships.

Each corpus is ingested with neve's defaults (its package installed with apt-get when
missing), then its questions are scored (benchmarks/eval/<corpus>.jsonl, {"q", "pages"}:
pages relative to the corpus folder): a question is a hit@k when any of the top k passages
comes from one of its pages. Per corpus it prints hit@1, hit@5 and MRR@10 for vector, text
and hybrid retrieval; how often the vector or the text ranking had a right page first
(the hit@1 that choosing, with hindsight, between the two rankings' first pages would give:
above it, fusion must lift a page neither ranks first, a reranker's work); ingestion
throughput and hybrid query latency; then the mean over the corpora, the PyTorch fp32
embedder on the first corpus for comparison (--skip-fp32 leaves it out), and last the
worst corpus's hybrid hit@1.

The ranking's weights were chosen on the Python corpus; apache2 and git are the corpora a
choice must not lose on (see the README's "Retrieval" notes).

    python benchmarks/rag_eval.py [--corpora python apache2 git] [--index-dir DIR]

--index-dir keeps each corpus's index there and reuses it on the next run (ingestion is
then not measured again).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from neve.config import load_settings
from neve.rag.embedder import Embedder
from neve.rag.index import Access, Mode
from neve.rag.ingest import Chunking, Ingester, find_files
from neve.rag.service import Rag

EVAL = Path(__file__).parent / "eval"
MODES: list[Mode] = ["vector", "text", "hybrid"]
MEASURES = ("hit@1", "hit@5", "mrr@10")
EVERYTHING = Access(everything=True)


@dataclass(frozen=True)
class Corpus:
    name: str
    package: str
    root: Path

    @property
    def questions(self) -> list[dict[str, object]]:
        text = (EVAL / f"{self.name}_docs.jsonl").read_text()
        return [json.loads(line) for line in text.splitlines() if line]

    def pages(self) -> list[Path]:
        """The HTML pages (not the sources some packages ship beside them)."""
        if not self.root.is_dir():
            sudo = [] if os.geteuid() == 0 else ["sudo"]
            print(f"installing {self.package} with apt-get ...", file=sys.stderr)
            subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", self.package], check=True)
        return [p for p in find_files([self.root]) if p.suffix == ".html"]


CORPORA = {
    c.name: c
    for c in (
        Corpus("python", "python3-doc", Path("/usr/share/doc/python3.11/html")),
        Corpus("apache2", "apache2-doc", Path("/usr/share/doc/apache2-doc/manual/en")),
        Corpus("git", "git-doc", Path("/usr/share/doc/git-doc")),
    )
}


def firsts(rag: Rag, corpus: Corpus, mode: Mode) -> list[int | None]:
    """Each question's rank of its first right passage in the top 10 (None: not there)."""
    ranks: list[int | None] = []
    for q in corpus.questions:
        found = rag.search(str(q["q"]), top_k=10, mode=mode, access=EVERYTHING)
        wanted = set(q["pages"])  # type: ignore[call-overload]
        right = [
            i for i, h in enumerate(found, 1)
            if str(Path(h.path).relative_to(corpus.root.resolve())) in wanted
        ]  # fmt: skip
        ranks.append(right[0] if right else None)
    return ranks


def measures(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "hit@1": sum(r == 1 for r in ranks) / n,
        "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr@10": sum(1 / r for r in ranks if r) / n,
    }


def open_rag(embedder: Embedder, corpus: Corpus, where: Path) -> Rag:
    """The corpus's index under `where`, ingested first unless it is there already."""
    settings = load_settings({"data_dir": where}, environ={})
    fresh = not settings.rag_path.exists()
    rag = Rag(settings, embedder)
    if fresh:
        pages = corpus.pages()
        chunking = Chunking(settings.rag_chunk_tokens, settings.rag_chunk_overlap)
        began = time.monotonic()
        progress = Ingester(rag.index, embedder, chunking).run(pages)
        reading = time.monotonic() - began - progress.embedding_seconds
        print(f"  ingestion: {len(pages)} pages, {progress.files / reading:.1f} pages/s reading "
              f"and chunking; {progress.chunks} chunks, "
              f"{progress.chunks / progress.embedding_seconds:.1f} chunks/s embedding "
              f"({embedder.backend})")  # fmt: skip
    return rag


def latency(rag: Rag, corpus: Corpus) -> str:
    times = []
    for q in corpus.questions * 3:
        began = time.perf_counter()
        rag.search(str(q["q"]), top_k=5, mode="hybrid", access=EVERYTHING)
        times.append((time.perf_counter() - began) * 1000)
    p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
    return f"hybrid query latency: p50 {p50:.1f} ms, p95 {p95:.1f} ms"


def line(label: str, r: dict[str, float]) -> str:
    return f"  {label:8s} hit@1 {r['hit@1']:.3f}  hit@5 {r['hit@5']:.3f}  MRR@10 {r['mrr@10']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--index-dir", type=Path, help="keep and reuse the indexes here")
    parser.add_argument("--skip-fp32", action="store_true", help="leave out the fp32 comparison")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="neve-rag-eval-"))
    where = args.index_dir or tmp
    try:
        int8 = Embedder("all-minilm-l6-v2", backend="onnx-int8", cache_dir=where / "onnx")
        print(f"embedding dimensions: {int8.dimensions}")  # the one-time export is not ingestion
        results: dict[str, dict[Mode, dict[str, float]]] = {}
        for name in args.corpora:
            corpus = CORPORA[name]
            print(f"{name} ({corpus.root}, {len(corpus.questions)} questions)", flush=True)
            rag = open_rag(int8, corpus, where / name)
            ranks = {mode: firsts(rag, corpus, mode) for mode in MODES}
            results[name] = {mode: measures(ranks[mode]) for mode in MODES}
            for mode in MODES:
                print(line(mode, results[name][mode]))
            either = zip(ranks["vector"], ranks["text"], strict=True)
            hindsight = statistics.mean(v == 1 or t == 1 for v, t in either)
            print(f"  vector or text first, with hindsight: hit@1 {hindsight:.3f}")
            print(f"  {latency(rag, corpus)}", flush=True)
        if len(results) > 1:
            print(f"mean over {len(results)} corpora")
            for mode in MODES:
                mean = {m: statistics.mean(r[mode][m] for r in results.values()) for m in MEASURES}
                print(line(mode, mean))
        if not args.skip_fp32:
            corpus = CORPORA[args.corpora[0]]
            fp32 = Embedder("all-minilm-l6-v2", backend="torch")
            rag32 = open_rag(fp32, corpus, tmp / "fp32")
            hybrid32 = measures(firsts(rag32, corpus, "hybrid"))["hit@5"]
            hybrid8 = results[corpus.name]["hybrid"]["hit@5"]
            print(f"fp32 (torch) on {corpus.name}: hybrid hit@5 {hybrid32:.3f}, int8 "
                  f"{hybrid8:.3f} (difference {hybrid8 - hybrid32:+.3f})")  # fmt: skip
        worst = min(results, key=lambda n: results[n]["hybrid"]["hit@1"])
        print(f"worst hybrid hit@1: {results[worst]['hybrid']['hit@1']:.3f} ({worst})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
