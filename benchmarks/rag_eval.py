"""Retrieval quality and ingestion speed on four HTML manuals Debian ships.

Each corpus is ingested with neve's defaults (its package installed with apt-get when
missing), then its questions are scored (benchmarks/eval/<corpus>_docs.jsonl, {"q",
"pages"}: pages relative to the corpus folder): a question is a hit@k when any of the top
k passages comes from one of its pages. Per corpus it prints hit@1, hit@5, MRR@10 and the
median query latency of vector, text and hybrid retrieval, and of hybrid with the reranker
when one is set; how often the vector or the text ranking had a right page first (the
hit@1 that choosing, with hindsight, between the two rankings' first pages would give:
above it, fusion must lift a page neither ranks first, a reranker's work); ingestion
throughput; then the mean over the corpora, the PyTorch fp32 embedder on the first corpus
for comparison (--skip-fp32 leaves it out), and last the worst corpus's hit@1 for the
default pipeline (hybrid, reranked when a reranker is set).

The ranking's weights were chosen on the Python corpus; apache2, git and sqlite are the
corpora a choice must not lose on (see the README's "Retrieval" notes). No reranker was
trained on any of them (training/rerank.py reads other manuals).

    python benchmarks/rag_eval.py [--corpora python apache2 git sqlite] [--index-dir DIR]
        [--set rag_reranker=neve-rerank] [--set rag_link_texts=false] ...

--set changes a setting from its default for the whole run (ingestion included).
--index-dir keeps each corpus's index there and reuses it on the next run (ingestion is
then not measured again; link texts follow rag_link_texts). Other settings that change
ingestion need another folder.
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
from neve.rag.ingest import find_files
from neve.rag.service import Rag

EVAL = Path(__file__).parent / "eval"
MODES: list[Mode] = ["vector", "text", "hybrid"]
RERANKED = "hybrid+rerank"
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
        Corpus("sqlite", "sqlite3-doc", Path("/usr/share/doc/sqlite3")),
    )
}


def firsts(rag: Rag, corpus: Corpus, mode: str) -> tuple[list[int | None], float]:
    """Each question's rank of its first right passage in the top 10 (None: not there),
    and the median milliseconds a search took."""
    ranks: list[int | None] = []
    times: list[float] = []
    search_mode: Mode = "hybrid" if mode == RERANKED else mode  # type: ignore[assignment]
    options = {"top_k": 10, "mode": search_mode, "access": EVERYTHING, "rerank": mode == RERANKED}
    rag.search("warm up", **options)  # type: ignore[arg-type]
    for q in corpus.questions:
        began = time.perf_counter()
        found = rag.search(str(q["q"]), **options)  # type: ignore[arg-type]
        times.append((time.perf_counter() - began) * 1000)
        wanted = set(q["pages"])  # type: ignore[call-overload]
        right = [
            i for i, h in enumerate(found, 1)
            if str(Path(h.path).relative_to(corpus.root.resolve())) in wanted
        ]  # fmt: skip
        ranks.append(right[0] if right else None)
    return ranks, statistics.median(times)


def measures(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks)
    return {
        "hit@1": sum(r == 1 for r in ranks) / n,
        "hit@5": sum(r is not None and r <= 5 for r in ranks) / n,
        "mrr@10": sum(1 / r for r in ranks if r) / n,
    }


def open_rag(embedder: Embedder, corpus: Corpus, where: Path, changes: dict[str, str]) -> Rag:
    """The corpus's index under `where`, ingested first unless it is there already."""
    settings = load_settings({**changes, "data_dir": where}, environ={})
    fresh = not settings.rag_path.exists()
    rag = Rag(settings, embedder)
    if fresh:
        pages = corpus.pages()
        began = time.monotonic()
        progress = rag.ingester().run(pages)
        reading = time.monotonic() - began - progress.embedding_seconds
        print(f"  ingestion: {len(pages)} pages, {progress.files / reading:.1f} pages/s reading "
              f"and chunking; {progress.chunks} chunks, "
              f"{progress.chunks / progress.embedding_seconds:.1f} chunks/s embedding "
              f"({embedder.backend})")  # fmt: skip
    else:  # link texts as the settings say (rag_link_texts on or off over the same index)
        rag.ingester().refer()
    return rag


def line(label: str, r: dict[str, float]) -> str:
    return (f"  {label:13s} hit@1 {r['hit@1']:.3f}  hit@5 {r['hit@5']:.3f}  "
            f"MRR@10 {r['mrr@10']:.3f}  p50 {r['p50']:.1f} ms")  # fmt: skip


def setting(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"{text!r}: give KEY=VALUE")
    return key, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--index-dir", type=Path, help="keep and reuse the indexes here")
    parser.add_argument("--skip-fp32", action="store_true", help="leave out the fp32 comparison")
    parser.add_argument("--set", type=setting, action="append", default=[], dest="changes",
                        metavar="KEY=VALUE", help="a setting other than its default")  # fmt: skip
    args = parser.parse_args()
    changes = dict(args.changes)
    settings = load_settings(changes, environ={})
    modes = [*MODES, RERANKED] if settings.rag_reranker != "off" else MODES
    default = RERANKED if RERANKED in modes else "hybrid"
    print(f"settings other than the defaults: {changes or 'none'}")
    tmp = Path(tempfile.mkdtemp(prefix="neve-rag-eval-"))
    where = args.index_dir or tmp
    try:
        int8 = Embedder("all-minilm-l6-v2", backend="onnx-int8", cache_dir=where / "onnx")
        print(f"embedding dimensions: {int8.dimensions}")  # the one-time export is not ingestion
        results: dict[str, dict[str, dict[str, float]]] = {}
        for name in args.corpora:
            corpus = CORPORA[name]
            print(f"{name} ({corpus.root}, {len(corpus.questions)} questions)", flush=True)
            rag = open_rag(int8, corpus, where / name, changes)
            ranks: dict[str, list[int | None]] = {}
            results[name] = {}
            for mode in modes:
                ranks[mode], p50 = firsts(rag, corpus, mode)
                results[name][mode] = {**measures(ranks[mode]), "p50": p50}
                print(line(mode, results[name][mode]), flush=True)
            either = zip(ranks["vector"], ranks["text"], strict=True)
            hindsight = statistics.mean(v == 1 or t == 1 for v, t in either)
            print(f"  vector or text first, with hindsight: hit@1 {hindsight:.3f}", flush=True)
        if len(results) > 1:
            print(f"mean over {len(results)} corpora")
            for mode in modes:
                mean = {m: statistics.mean(r[mode][m] for r in results.values())
                        for m in (*MEASURES, "p50")}  # fmt: skip
                print(line(mode, mean))
        if not args.skip_fp32:
            corpus = CORPORA[args.corpora[0]]
            fp32 = Embedder("all-minilm-l6-v2", backend="torch")
            rag32 = open_rag(fp32, corpus, tmp / "fp32", changes)
            hybrid32 = measures(firsts(rag32, corpus, "hybrid")[0])["hit@5"]
            hybrid8 = results[corpus.name]["hybrid"]["hit@5"]
            print(f"fp32 (torch) on {corpus.name}: hybrid hit@5 {hybrid32:.3f}, int8 "
                  f"{hybrid8:.3f} (difference {hybrid8 - hybrid32:+.3f})")  # fmt: skip
        worst = min(results, key=lambda n: results[n][default]["hit@1"])
        print(f"worst {default} hit@1: {results[worst][default]['hit@1']:.3f} ({worst})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
