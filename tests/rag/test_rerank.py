"""The reranker: POST /v1/rerank in the shape vLLM's and llama.cpp's servers answer, read
by Cohere's own client; retrieval reordered by it and restored without it; and another
hub's reranker used as an upstream.

The cross-encoder here is the plumbing's: the shipped embedding model's weights with a
scoring head drawn from a fixed seed (tests/rag/test_rerank.py::plumbing), a real
cross-encoder through the same export and runtime as any other, whose scores mean
nothing. What is checked is that its scores, whatever they are, decide the order."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cohere
import httpx
import pytest

from neve.config import load_settings
from neve.rag.embedder import Embedder, model_location
from neve.rag.index import Access
from neve.rag.reranker import CrossEncoder, Scores
from neve.rag.service import Rag
from tests.conftest import AppHub, Hub, app_hub_at, start_hub, stop_hub

EVERYONE = Access(everything=True)
QUERY = "How long does the server keep an idle connection open?"
DOCUMENTS = [
    "KeepAliveTimeout: the seconds the server waits for the next request on a connection.",
    "The Nile is the longest river in Africa.",
    "Timeout: the seconds the server waits for I/O before failing a request.",
    "MaxKeepAliveRequests limits the requests one persistent connection serves.",
    "Bread rises because yeast makes carbon dioxide.",
]


@pytest.fixture(scope="session")
def plumbing(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cross-encoder folder: all-MiniLM-L6-v2's weights and a seeded random head."""
    import shutil

    import torch
    from transformers import BertForSequenceClassification

    base = Path(model_location("all-minilm-l6-v2"))
    folder = tmp_path_factory.mktemp("plumbing-cross-encoder")
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(str(base), num_labels=1)
    model.save_pretrained(str(folder))
    shutil.copy(base / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def rerank_hub(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, plumbing: Path
) -> Iterator[AppHub]:
    with app_hub_at(
        tmp_path_factory.mktemp("rerank"), models_dir, f"rag_reranker={plumbing}",
        "rerank_max_documents=6",
    ) as hub:  # fmt: skip
        yield hub


@pytest.fixture(scope="module")
def rerank_server(
    tmp_path_factory: pytest.TempPathFactory, models_dir: Path, plumbing: Path
) -> Iterator[Hub]:
    """The same, as a server on 127.0.0.1: Cohere's client and other hubs call it."""
    hub = start_hub(
        tmp_path_factory.mktemp("served"), f"models_dir={models_dir}", f"rag_reranker={plumbing}"
    )
    yield hub
    stop_hub(hub)


def _scores(plumbing: Path, models_dir: Path) -> Scores:
    return CrossEncoder("plumbing", plumbing, models_dir / "onnx", 256).score(QUERY, DOCUMENTS)


def test_rerank_orders_the_documents_by_the_cross_encoders_scores(
    rerank_hub: AppHub, plumbing: Path, models_dir: Path
) -> None:
    scored = _scores(plumbing, models_dir)
    scores = scored.values
    reply = rerank_hub.http.post(
        "/v1/rerank", json={"model": "any", "query": QUERY, "documents": DOCUMENTS, "top_n": 3}
    )
    assert reply.status_code == 200, reply.text
    body = reply.json()
    expected = sorted(range(len(DOCUMENTS)), key=lambda i: -scores[i])[:3]
    assert [r["index"] for r in body["results"]] == expected
    assert [r["relevance_score"] for r in body["results"]] == pytest.approx(
        [scores[i] for i in expected]
    )
    assert [r["document"]["text"] for r in body["results"]] == [DOCUMENTS[i] for i in expected]
    # Usage: the tokens the cross-encoder read, the pairs as its tokenizer made them.
    assert body["usage"]["total_tokens"] == scored.tokens > 0
    assert body["model"] == str(plumbing)
    # Jina's form: documents as objects, and without their text in the answer.
    bare = rerank_hub.http.post("/rerank", json={
        "query": QUERY, "documents": [{"text": d} for d in DOCUMENTS], "return_documents": False,
    }).json()  # fmt: skip
    assert [r["index"] for r in bare["results"]][:3] == expected
    assert all(r.get("document") is None for r in bare["results"])


def test_cohere_clients_read_the_answer(
    rerank_server: Hub, plumbing: Path, models_dir: Path
) -> None:
    scores = _scores(plumbing, models_dir).values
    best = max(range(len(DOCUMENTS)), key=lambda i: scores[i])
    v2 = cohere.ClientV2(api_key="unused", base_url=rerank_server.url)
    answer = v2.rerank(model="neve", query=QUERY, documents=DOCUMENTS, top_n=2)
    assert answer.results[0].index == best
    assert len(answer.results) == 2
    v1 = cohere.Client(api_key="unused", base_url=rerank_server.url)
    answer1 = v1.rerank(model="neve", query=QUERY, documents=DOCUMENTS, top_n=1)
    assert answer1.results[0].index == best
    assert answer1.results[0].relevance_score == pytest.approx(scores[best])


@pytest.mark.parametrize(
    ("body", "names"),
    [
        ({"query": QUERY, "documents": []}, "documents"),
        ({"query": "", "documents": ["a"]}, "query"),
        ({"query": QUERY, "documents": ["a"] * 7}, "rerank_max_documents"),
        ({"query": QUERY, "documents": ["a"], "top_n": 0}, "top_n"),
    ],
)
def test_bad_requests_name_the_problem(rerank_hub: AppHub, body: dict, names: str) -> None:
    reply = rerank_hub.http.post("/v1/rerank", json=body)
    assert reply.status_code == 400
    assert names in reply.text


def test_without_a_reranker_the_route_says_which_setting(app_hub: AppHub) -> None:
    reply = app_hub.http.post("/v1/rerank", json={"query": QUERY, "documents": ["a"]})
    assert reply.status_code == 404
    assert "rag_reranker" in reply.json()["error"]["message"]
    assert "/v1/rerank" in app_hub.http.get("/openapi.json").json()["paths"]


def _handbook(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(DOCUMENTS * 2):
        (folder / f"page{i}.md").write_text(f"# Page {i}\n\n{text} Note {i}.\n")


def test_retrieval_follows_the_reranker_when_on_and_its_first_order_when_off(
    tmp_path: Path, embedder: Embedder, plumbing: Path, models_dir: Path
) -> None:
    settings = {"data_dir": tmp_path / "data", "models_dir": models_dir, "rag_min_similarity": -1}
    plain = Rag(load_settings(settings, environ={}), embedder)
    _handbook(tmp_path / "docs")
    plain.ingester().run([tmp_path / "docs"])
    on = Rag(load_settings({**settings, "rag_reranker": str(plumbing),
                            "rag_rerank_candidates": 10, "rag_rerank_budget": 60}, environ={}),
             embedder)  # fmt: skip
    cross = CrossEncoder("plumbing", plumbing, models_dir / "onnx", 256)
    changed = 0
    for question in (QUERY, "Which river is longest?", "Why does bread rise?"):
        first = plain.search(question, access=EVERYONE, top_k=10)
        ranked = on.search(question, access=EVERYONE, top_k=10)
        scores = cross.score(question, [h.text for h in first]).values
        expected = [first[i].id for i in sorted(range(len(first)), key=lambda i: -scores[i])]
        assert [h.id for h in ranked] == expected
        assert [h.id for h in on.search(question, access=EVERYONE, top_k=10, rerank=False)] == [
            h.id for h in first
        ]
        changed += [h.id for h in ranked] != [h.id for h in first]
    assert changed  # the seeded head does not agree with retrieval everywhere


def test_a_hub_reranks_through_another_hubs_rerank(
    tmp_path: Path, models_dir: Path, rerank_server: Hub
) -> None:
    with app_hub_at(tmp_path, models_dir, f"rag_reranker={rerank_server.api}") as front:
        direct = httpx.post(
            f"{rerank_server.api}/rerank", json={"query": QUERY, "documents": DOCUMENTS},
            timeout=60,
        ).json()  # fmt: skip
        through = front.http.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
        through = through.json()
    assert [r["index"] for r in through["results"]] == [r["index"] for r in direct["results"]]
    assert [r["relevance_score"] for r in through["results"]] == pytest.approx(
        [r["relevance_score"] for r in direct["results"]]
    )
    assert through["usage"]["total_tokens"] == direct["usage"]["total_tokens"] > 0
