"""Train a reranker for neve: a cross-encoder made from the shipped embedding model
(all-MiniLM-L6-v2), taught by what HTML manuals say about their own pages.

Every link in a manual is a description of its target in other words than the target's
own. Each collection below is ingested by neve (without link texts, so a page is found by
its own words), and each link whose text is a phrase (three words or more, not the page's
title, not a text used for many pages) becomes a question: neve's hybrid search runs it,
the target page's passage among the first `--candidates` is the right answer, and the
other pages' passages there are the hard negatives. The model (BERT with one output) is
the embedding model's weights; its top `--layers` layers, its pooler and a new scoring
head are trained, with a softmax over each question's group of passages, for `--minutes`
at most, with a fixed seed. One tenth of the pages (by a hash of their path) are held out:
their questions score the model against the first-stage order at the end.

The collections are disjoint from every corpus benchmarks/rag_eval.py evaluates on (the
script refuses to run otherwise), and PostgreSQL's manual is kept apart for evaluation.

    python training/rerank.py [--minutes 40] [--work DIR] [--out DIR]

The result in --out (the tensors trained, in float16, the model's configuration, and
report.json) is a reranker: `rag_reranker: <out>` assembles it with the embedding model
once and uses it; benchmarks/rag_eval.py --set rag_reranker=<out> measures it.
--smoke trains a few steps on one small collection (the tests run it).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import random
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.progress import Progress

from neve.config import load_settings
from neve.rag.embedder import Embedder, model_location
from neve.rag.index import Access
from neve.rag.ingest import find_files
from neve.rag.referrals import incoming
from neve.rag.reranker import CrossEncoder
from neve.rag.service import Rag

EVERYTHING = Access(everything=True)
HERE = Path(__file__).resolve().parent
KEPT_APART = [Path("/usr/share/doc/postgresql-doc-15")]  # PostgreSQL's manual: evaluation only


def evaluated() -> list[Path]:
    """The roots of the corpora benchmarks/rag_eval.py scores, and those kept apart."""
    spec = importlib.util.spec_from_file_location(
        "rag_eval", HERE.parent / "benchmarks/rag_eval.py"
    )
    assert spec is not None and spec.loader is not None
    rag_eval = importlib.util.module_from_spec(spec)
    sys.modules["rag_eval"] = rag_eval  # its dataclasses look their module up
    spec.loader.exec_module(rag_eval)
    return [c.root for c in rag_eval.CORPORA.values()] + KEPT_APART


@dataclass(frozen=True)
class Collection:
    name: str
    package: str
    root: Path


COLLECTIONS = [
    Collection("django", "python-django-doc", Path("/usr/share/doc/python-django-doc/html")),
    Collection("nodejs", "nodejs-doc", Path("/usr/share/doc/nodejs/api")),
    Collection("debian-reference", "debian-reference-en", Path("/usr/share/debian-reference")),
]


@dataclass
class Question:
    text: str
    passages: list[str]  # the right one first
    held_out: bool
    first_right: bool  # the first stage had the right page first


def disjoint(collections: list[Collection]) -> None:
    for c in collections:
        root = c.root.resolve()
        for kept in evaluated():
            e = kept.resolve()
            if root.is_relative_to(e) or e.is_relative_to(root):
                sys.exit(f"{c.name} ({root}) overlaps an evaluation corpus ({e})")


def ingested(collection: Collection, embedder: Embedder, work: Path) -> Rag:
    settings = load_settings(
        {"data_dir": work / collection.name, "rag_link_texts": False}, environ={}
    )
    rag = Rag(settings, embedder)
    if not collection.root.is_dir():
        sys.exit(f"{collection.root} is missing: apt-get install {collection.package}")
    pages = [p for p in find_files([collection.root]) if p.suffix == ".html"]
    done = rag.ingester().run(pages)  # what an earlier run indexed is skipped
    print(f"{collection.name}: {len(pages)} pages, {done.files - done.skipped} indexed now",
          flush=True)  # fmt: skip
    return rag


def phrase(text: str, title: str) -> bool:
    words = re.findall(r"[^\W\d_]+", text)
    return len(words) >= 3 and text.casefold() != title.casefold()


def questions(
    rag: Rag, candidates: int, group: int, most: int, rng: random.Random
) -> list[Question]:
    documents = rag.index.list_documents(EVERYTHING)
    by_id = {d["doc_id"]: d for d in documents}
    found: list[Question] = []
    texts = incoming(documents, generic=25)
    pairs = [(t, d) for d, ts in texts.items() for t in ts if phrase(t, by_id[d]["title"])]
    rng.shuffle(pairs)
    for text, target in pairs[:most]:
        hits = rag.search(text, access=EVERYTHING, top_k=candidates, mode="hybrid", rerank=False)
        right = [h for h in hits if h.doc_id == target]
        wrong = [h for h in hits if h.doc_id != target]
        if not right or len(wrong) < group - 1:
            continue
        held = int(hashlib.sha256(by_id[target]["path"].encode()).hexdigest(), 16) % 10 == 0
        # The hardest negatives and a few easier ones: the reranker sees both.
        chosen = wrong[: (group - 1) // 2] + rng.sample(wrong[(group - 1) // 2 :], group // 2)
        found.append(
            Question(
                text,
                [right[0].text, *[h.text for h in chosen[: group - 1]]],
                held,
                hits[0].doc_id == target,
            )
        )
    return found


def train(
    data: list[Question], base: Path, args: argparse.Namespace
) -> tuple[object, dict[str, object]]:
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification

    torch.manual_seed(args.seed)
    tokenizer = AutoTokenizer.from_pretrained(str(base))
    model = BertForSequenceClassification.from_pretrained(str(base), num_labels=1)
    top = {f"bert.encoder.layer.{i}." for i in range(6 - args.layers, 6)}
    trained = [
        n for n, p in model.named_parameters()
        if n.startswith(("bert.pooler.", "classifier.")) or any(n.startswith(t) for t in top)
    ]  # fmt: skip
    for name, param in model.named_parameters():
        param.requires_grad = name in trained
    params = [p for n, p in model.named_parameters() if n in trained]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    train_set = [q for q in data if not q.held_out]
    steps = args.epochs * len(train_set) // args.batch
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / max(1, steps // 10)) * max(0.0, 1 - s / steps)
    )
    model.train()
    began, step, losses = time.monotonic(), 0, []
    rng = random.Random(args.seed)
    with Progress() as progress:
        task = progress.add_task("training", total=steps)
        while step < steps and time.monotonic() - began < args.minutes * 60:
            batch = rng.sample(train_set, args.batch)
            pairs = [(q.text, p) for q in batch for p in q.passages]
            encoded = tokenizer(
                [a for a, _ in pairs], [b for _, b in pairs], truncation="only_second",
                max_length=args.tokens, padding=True, return_tensors="pt",
            )  # fmt: skip
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.precision == "bf16"):
                logits = model(**encoded).logits.float().view(len(batch), -1)
            loss = torch.nn.functional.cross_entropy(
                logits, torch.zeros(len(batch), dtype=torch.long)
            )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
            losses.append(float(loss.detach()))
            step += 1
            progress.update(
                task, advance=1, description=f"training (loss {statistics.mean(losses[-50:]):.3f})"
            )
    model.eval()
    report = {
        "steps": step, "planned_steps": steps, "questions_trained_on": len(train_set),
        "minutes": round((time.monotonic() - began) / 60, 1), "trained_tensors": len(trained),
        "last_loss": round(statistics.mean(losses[-50:]), 4) if losses else None,
    }  # fmt: skip
    return model, {"trained": trained, **report}


def save(model: object, trained: list[str], out: Path) -> int:
    """The trained tensors in float16 and the configuration; the delta's bytes."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()  # type: ignore[attr-defined]
    save_file({n: state[n].half().contiguous() for n in trained}, str(out / "delta.safetensors"))
    config = model.config  # type: ignore[attr-defined]
    config.architectures = ["BertForSequenceClassification"]
    config.save_pretrained(str(out))
    return (out / "delta.safetensors").stat().st_size


def held_out_score(reranker: CrossEncoder, data: list[Question]) -> dict[str, object]:
    """On the held-out pages' questions: how often the right passage comes first after
    reranking (its group shuffled), against how often the first stage had it first; and
    the milliseconds to score one question's group."""
    held = [q for q in data if q.held_out]
    right, times = 0, []
    for q in held:
        began = time.perf_counter()
        scores = reranker.score(q.text, q.passages).values
        times.append((time.perf_counter() - began) * 1000)
        right += int(np.argmax(scores) == 0)
    return {
        "held_out_questions": len(held),
        "reranked_first_right": round(right / max(1, len(held)), 3),
        "first_stage_first_right": round(sum(q.first_right for q in held) / max(1, len(held)), 3),
        "ms_per_group": round(statistics.median(times), 1) if times else None,
        "group": len(held[0].passages) if held else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/neve-rerank-work"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/neve-rerank"))
    parser.add_argument("--minutes", type=float, default=40)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--layers", type=int, default=2, help="top layers trained")
    parser.add_argument("--batch", type=int, default=4, help="questions per step")
    parser.add_argument("--group", type=int, default=8, help="passages per question")
    parser.add_argument("--candidates", type=int, default=30)
    parser.add_argument("--questions", type=int, default=1500, help="links tried per collection")
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--precision",
        choices=["bf16", "fp32"],
        default="bf16",
        help="training's matrix products (bf16: AMX where the CPU has it)",
    )
    parser.add_argument("--smoke", action="store_true", help="a few steps on a small collection")
    args = parser.parse_args()
    collections = COLLECTIONS
    if args.smoke:
        collections = [c for c in COLLECTIONS if c.name == "debian-reference"]
        args.minutes, args.batch, args.group, args.epochs = 0.5, 2, 4, 1
    disjoint(collections)
    began = time.monotonic()
    rng = random.Random(args.seed)
    base = Path(model_location("all-minilm-l6-v2"))
    embedder = Embedder("all-minilm-l6-v2", cache_dir=args.work / "onnx")
    data: list[Question] = []
    counts: Counter[str] = Counter()
    for collection in collections:
        rag = ingested(collection, embedder, args.work)
        mined = questions(rag, args.candidates, args.group, args.questions, rng)
        counts[collection.name] = len(mined)
        data += mined
        print(f"{collection.name}: {len(mined)} questions", flush=True)
    if args.smoke:
        data = data[:40]
        for i, q in enumerate(data):
            q.held_out = i % 4 == 0
    mining = time.monotonic() - began
    model, report = train(data, base, args)
    trained = report.pop("trained")
    size = save(model, trained, args.out)  # type: ignore[arg-type]
    folder = args.out / "assembled"
    from neve.rag.assemble import assemble

    assemble(base, args.out, folder)
    scored = held_out_score(CrossEncoder("trained", folder, args.work / "onnx", args.tokens), data)
    report = {
        "seed": args.seed, "precision": args.precision, "collections": dict(counts),
        "mining_minutes": round(mining / 60, 1),
        **report, "layers_trained": args.layers, "delta_bytes": size, **scored,
    }  # fmt: skip
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
