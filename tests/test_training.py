"""training/rerank.py, run small (--smoke: a few steps on the Debian Reference): it mines
questions from the manual's links, trains, and leaves a delta that `rag_reranker` takes
(assembled into a cross-encoder and run), with a report of what it did."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from neve.config import load_settings
from neve.rag.reranker import configured_reranker
from tests.conftest import offline_env

SCRIPT = Path(__file__).parent.parent / "training" / "rerank.py"


def test_the_training_script_runs_small_and_its_delta_loads(tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--smoke", "--work", str(tmp_path / "work"),
         "--out", str(out)],
        capture_output=True, text=True, env=offline_env(), timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert report["collections"]["debian-reference"] > 40  # questions from its links
    assert report["steps"] > 0 and report["seed"] == 7
    assert report["held_out_questions"] > 0
    assert report["delta_bytes"] == (out / "delta.safetensors").stat().st_size
    # `rag_reranker: <out>` assembles the delta with the embedding model once and runs it.
    settings = load_settings({"rag_reranker": str(out), "models_dir": tmp_path}, environ={})
    reranker = configured_reranker(settings)
    assert reranker is not None
    scores = reranker.score(
        "how to install a package", ["apt-get install fetches a package", "a poem about rain"]
    ).values
    assert len(scores) == 2 and scores[0] != scores[1]


def test_training_refuses_a_collection_an_evaluation_reads() -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import rerank  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(SCRIPT.parent))
    python = rerank.Collection("python", "python3-doc", Path("/usr/share/doc/python3.11"))
    with pytest.raises(SystemExit, match="overlaps an evaluation corpus"):
        rerank.disjoint([python])
    rerank.disjoint(rerank.COLLECTIONS)  # the collections it trains on
