"""Retrieval quality and ingestion speed on the Python 3.11 HTML documentation.

Ingests /usr/share/doc/python3.11/html (Debian's python3-doc, installed with apt-get when
missing) with neve's defaults, then scores the questions of a JSONL file ({"q", "pages"}:
pages relative to the html folder): a question is a hit@k when any of the top k chunks
comes from one of its pages. Prints hit@1, hit@5 and MRR@10 for vector, text and hybrid
retrieval; ingestion throughput (pages/s reading and chunking, chunks/s embedding); query
latency over the whole corpus; the same corpus embedded with PyTorch fp32 for comparison
(--skip-fp32 leaves it out); and hybrid hit@5 last.

    python benchmarks/rag_eval.py --questions ../shared/eval/python_docs_qa.jsonl
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
from pathlib import Path

from neve.config import load_settings
from neve.rag.embedder import Embedder
from neve.rag.index import Access, Index, Mode
from neve.rag.ingest import Chunking, Ingester, find_files
from neve.rag.service import Rag

DOCS = Path("/usr/share/doc/python3.11/html")
MODES: list[Mode] = ["vector", "text", "hybrid"]


def ensure_docs() -> None:
    if DOCS.is_dir():
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("installing python3-doc with apt-get ...", file=sys.stderr)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "python3-doc"], check=True)


def html_pages() -> list[Path]:
    """The HTML pages (not the reST sources Debian ships beside them under _sources)."""
    return [p for p in find_files([DOCS]) if p.suffix == ".html"]


def score(rag: Rag, questions: list[dict[str, object]], mode: Mode) -> dict[str, float]:
    hits1 = hits5 = rr = 0.0
    for q in questions:
        found = rag.search(str(q["q"]), top_k=10, mode=mode, access=Access(everything=True))
        wanted = set(q["pages"])  # type: ignore[arg-type]
        ranks = [i for i, h in enumerate(found, 1) if str(Path(h.path).relative_to(DOCS)) in wanted]
        first = ranks[0] if ranks else None
        hits1 += first == 1
        hits5 += first is not None and first <= 5
        rr += 1 / first if first else 0
    n = len(questions)
    return {"hit@1": hits1 / n, "hit@5": hits5 / n, "mrr@10": rr / n}


def ingest(embedder: Embedder, where: Path) -> tuple[Rag, float, float, int, int]:
    settings = load_settings({"data_dir": where}, environ={})
    index = Index(where / "rag", embedder.dimensions, ann_min_rows=settings.rag_ann_min_rows)
    chunking = Chunking(settings.rag_chunk_tokens, settings.rag_chunk_overlap)
    ingester = Ingester(index, embedder, chunking)
    began = time.monotonic()
    progress = ingester.run(html_pages())
    reading = time.monotonic() - began - progress.embedding_seconds
    rag = Rag(settings, embedder, index)
    return rag, reading, progress.embedding_seconds, progress.files, progress.chunks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--questions", type=Path, default=Path("../shared/eval/python_docs_qa.jsonl")
    )
    parser.add_argument("--skip-fp32", action="store_true", help="leave out the fp32 comparison")
    args = parser.parse_args()
    ensure_docs()
    questions = [json.loads(line) for line in args.questions.read_text().splitlines() if line]
    print(f"{len(html_pages())} pages, {len(questions)} questions")

    tmp = Path(tempfile.mkdtemp(prefix="neve-rag-eval-"))
    try:
        int8 = Embedder("all-minilm-l6-v2", backend="onnx-int8", cache_dir=tmp / "onnx")
        print(f"embedding dimensions: {int8.dimensions}")  # the one-time export is not ingestion
        rag, reading, embedding, pages, chunks = ingest(int8, tmp / "int8")
        results = {mode: score(rag, questions, mode) for mode in MODES}
        for mode in MODES:
            r = results[mode]
            print(f"{mode:7s} hit@1 {r['hit@1']:.3f}  hit@5 {r['hit@5']:.3f}  "
                  f"MRR@10 {r['mrr@10']:.3f}")  # fmt: skip
        print(f"ingestion: {pages / reading:.1f} pages/s reading and chunking; {chunks} chunks, "
              f"{chunks / embedding:.1f} chunks/s embedding (onnx-int8)")  # fmt: skip
        latencies = []
        for q in questions * 3:
            began = time.perf_counter()
            rag.search(str(q["q"]), top_k=5, mode="hybrid", access=Access(everything=True))
            latencies.append((time.perf_counter() - began) * 1000)
        p50, p95 = statistics.median(latencies), statistics.quantiles(latencies, n=20)[18]
        print(f"hybrid query latency over {chunks} chunks: p50 {p50:.1f} ms, p95 {p95:.1f} ms")
        if not args.skip_fp32:
            fp32 = Embedder("all-minilm-l6-v2", backend="torch")
            rag32, _, embedding32, _, chunks32 = ingest(fp32, tmp / "fp32")
            hybrid32 = score(rag32, questions, "hybrid")["hit@5"]
            hybrid8 = results["hybrid"]["hit@5"]
            speedup = (chunks / embedding) / (chunks32 / embedding32)
            print(f"fp32 (torch): {chunks32 / embedding32:.1f} chunks/s embedding; hybrid hit@5 "
                  f"{hybrid32:.3f}, int8 {hybrid8:.3f} (difference {hybrid8 - hybrid32:+.3f}); "
                  f"int8 embeds {speedup:.2f}x as fast")  # fmt: skip
        print(f"hybrid hit@5: {results['hybrid']['hit@5']:.3f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
