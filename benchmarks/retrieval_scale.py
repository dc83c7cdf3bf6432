"""Query latency of neve's index at 10k, 100k and 1M synthetic chunks (384 dimensions).

Chunks get random unit vectors in clusters (so neighbours exist, as with real text) and
text drawn from a Zipf vocabulary; queries are perturbed chunk vectors and a few of the
chunk's words. From `rag_ann_min_rows` chunks (100,000 by default) the index builds an
approximate vector index (IVF_HNSW_SQ); recall@10 of the vector ranking is measured
against exact search over the same table. Prints p50/p95 of vector, text and hybrid
queries (the query embedding itself not included: see rag_eval.py for that) and, last,
hybrid p50 and recall@10 at each size from 100k. The queries are far from their chunks
(cosine about 0.17), so neighbours lie anywhere: a hard case for a partitioned index.

    python benchmarks/retrieval_scale.py [--sizes 10000 100000 1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from neve.config import load_settings
from neve.rag.index import Access, Ann, Index, Mode
from neve.rag.service import ranking

DIMS = 384
EVERYONE = Access(everything=True)
# The hub's ranking, but every chunk may count (synthetic vectors are not text).
OPTIONS = {**ranking(load_settings(environ={})), "per_page": 10, "min_similarity": None}


def synthetic(n: int, rng: np.random.Generator) -> tuple[np.ndarray, list[str]]:
    centres = rng.normal(size=(max(16, n // 200), DIMS)).astype(np.float32)
    vectors = centres[rng.integers(0, len(centres), n)] + 0.6 * rng.normal(size=(n, DIMS)).astype(
        np.float32
    )
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vocabulary = np.array([f"w{i}" for i in range(20000)])
    ranks = np.minimum(rng.zipf(1.3, size=(n, 60)), 20000) - 1
    texts = [" ".join(vocabulary[row]) for row in ranks]
    return vectors, texts


def build(path: Path, vectors: np.ndarray, texts: list[str], ann_min_rows: int) -> Index:
    index = Index(path, DIMS, ann=Ann(min_rows=ann_min_rows))
    batch = 50_000
    for start in range(0, len(texts), batch):
        ids = range(start, min(start + batch, len(texts)))
        n = len(ids)
        rows = pa.table({
            "id": [f"c{i}" for i in ids], "doc_id": [f"d{i // 20}" for i in ids],
            "path": [f"/docs/{i // 20}.md" for i in ids], "title": ["t"] * n,
            "section": [""] * n, "page": pa.array([None] * n, pa.int32()),
            "position": pa.array([i % 20 for i in ids], pa.int32()), "kind": ["markdown"] * n,
            "text": texts[start:start + n], "groups": pa.array([[]] * n, pa.list_(pa.string())),
            "vector": pa.FixedSizeListArray.from_arrays(
                pa.array(vectors[start:start + n].ravel()), DIMS
            ),
        }, schema=index.chunks.schema)  # fmt: skip
        index.chunks.add(rows)
    index.finish()
    return index


def timed(index: Index, mode: Mode, queries: list[tuple[np.ndarray, str]]) -> list[float]:
    out = []
    for vector, text in queries:
        began = time.perf_counter()
        index.search(text=text, vector=vector, mode=mode, top_k=10, access=EVERYONE, **OPTIONS)
        out.append((time.perf_counter() - began) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--ann-min-rows", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(7)
    summary: dict[tuple[int, str], float] = {}
    for n in args.sizes:
        tmp = Path(tempfile.mkdtemp(prefix="neve-scale-"))
        try:
            vectors, texts = synthetic(n, rng)
            began = time.monotonic()
            index = build(tmp / "index", vectors, texts, args.ann_min_rows)
            built = time.monotonic() - began
            picks = rng.integers(0, n, args.queries)
            queries = []
            for i in picks:
                v = vectors[i] + 0.3 * rng.normal(size=DIMS).astype(np.float32)
                words = texts[i].split()
                queries.append((v / np.linalg.norm(v), " ".join(rng.choice(words, 4))))

            ann = any("vector" in i.columns for i in index.chunks.list_indices())
            recalls = []
            for v, t in queries[:50]:
                hits = index.search(text=t, vector=v, mode="vector", top_k=10, access=EVERYONE,
                                    **OPTIONS)  # fmt: skip
                got = {h.id for h in hits}
                exact = set((-(vectors @ v)).argsort()[:10].tolist())
                recalls.append(len(got & {f"c{i}" for i in exact}) / 10)
            line = [f"{n:>9,} chunks ({'approximate' if ann else 'exact'} vector index, "
                    f"built in {built:.0f} s):"]  # fmt: skip
            modes: list[Mode] = ["vector", "text", "hybrid"]
            for mode in modes:
                times = timed(index, mode, queries)
                p50, p95 = statistics.median(times), statistics.quantiles(times, n=20)[18]
                line.append(f"{mode} p50 {p50:.1f} ms p95 {p95:.1f} ms")
                summary[(n, mode)] = p50
            recall = statistics.mean(recalls)
            summary[(n, "recall")] = recall
            line.append(f"recall@10 {recall:.3f}")
            print("  ".join(line), flush=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    for n in args.sizes:
        if n >= 100_000:
            print(f"at {n:,}: hybrid p50 {summary[(n, 'hybrid')]:.1f} ms, "
                  f"recall@10 {summary[(n, 'recall')]:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
