"""Feedback, conversations and the monitoring summary over HTTP, against a hub on SQLite
and again on a real PostgreSQL server."""

from __future__ import annotations

import csv
import io
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from tests.conftest import Hub, start_hub, stop_hub
from tests.postgres import PgServer

ASK = {"messages": [{"role": "user", "content": "Count to five."}], "max_tokens": 5}


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def state_hub(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hub]:
    settings = []
    if request.param == "postgresql":
        server: PgServer = request.getfixturevalue("postgres")
        settings.append(f"database_url={server.create_database(f'h_{uuid.uuid4().hex[:10]}')}")
    started = start_hub(tmp_path_factory.mktemp("state"), *settings)
    yield started
    stop_hub(started)


def feedback(hub: Hub, **params: Any) -> list[dict[str, Any]]:
    reply = httpx.get(f"{hub.api}/feedback", params={"limit": 100_000, **params})
    assert reply.status_code == 200, reply.text
    rows: list[dict[str, Any]] = reply.json()["data"]
    return rows


def test_fifty_concurrent_writers_store_exactly_a_thousand_rows(state_hub: Hub) -> None:
    tag = uuid.uuid4().hex

    def write(writer: int) -> list[int]:
        with httpx.Client(timeout=60) as http:
            return [
                http.post(
                    f"{state_hub.api}/feedback",
                    json={"score": 1, "model": tag, "comment": f"{writer}/{i}"},
                ).status_code
                for i in range(20)
            ]

    with ThreadPoolExecutor(50) as pool:
        statuses = [s for batch in pool.map(write, range(50)) for s in batch]
    assert statuses == [201] * 1000
    rows = feedback(state_hub, model=tag)
    assert len(rows) == 1000
    assert len({r["comment"] for r in rows}) == 1000


def test_concurrent_posts_of_one_new_run_id_store_one_row(state_hub: Hub) -> None:
    run_id, gate = uuid.uuid4().hex, threading.Barrier(16)

    def post(n: int) -> int:
        with httpx.Client(timeout=60) as http:
            gate.wait()
            body = {"score": -1, "run_id": run_id, "comment": f"try {n}"}
            return http.post(f"{state_hub.api}/feedback", json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = sorted(pool.map(post, range(16)))
    assert statuses == [200] * 15 + [201]  # one stored it; the others got that row
    assert len([r for r in feedback(state_hub) if r["run_id"] == run_id]) == 1


def test_feedback_round_trip_filters_and_exports(state_hub: Hub) -> None:
    tag = uuid.uuid4().hex
    sent = {"score": -1, "comment": "wrong year", "prompt": "When?", "response": "1999",
            "model": tag, "run_id": f"run-{tag}"}  # fmt: skip
    reply = httpx.post(f"{state_hub.api}/feedback", json=sent)
    assert reply.status_code == 201
    row = reply.json()
    assert row["user_prompt"] == "When?" and row["assistant_response"] == "1999"
    # A retry of the same run_id returns the stored row and stores nothing new.
    again = httpx.post(f"{state_hub.api}/feedback", json=sent)
    assert again.status_code == 200 and again.json() == row
    httpx.post(f"{state_hub.api}/feedback", json={"score": 1, "model": tag})

    assert [r["score"] for r in feedback(state_hub, model=tag)] == [-1, 1]
    assert [r["run_id"] for r in feedback(state_hub, model=tag, score=-1)] == [f"run-{tag}"]
    assert feedback(state_hub, model=tag, since="2999-01-01T00:00:00") == []

    text = httpx.get(f"{state_hub.api}/feedback", params={"model": tag, "format": "csv"})
    assert text.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(text.text)))
    assert [r["comment"] for r in table] == ["wrong year", ""]
    assert {"run_id", "timestamp", "user_prompt", "assistant_response", "score"} <= set(table[0])
    lines = httpx.get(f"{state_hub.api}/feedback", params={"model": tag, "format": "jsonl"})
    assert [json.loads(line)["score"] for line in lines.text.splitlines()] == [-1, 1]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"score": 7}, "score: 7 is not one of [1, -1]"),
        ({"comment": "no score"}, "score: Field required"),
        ({"score": 1, "stars": 5}, "stars"),
        ({"score": "high"}, "score"),
    ],
)
def test_bad_feedback_is_refused_by_name(state_hub: Hub, body: dict[str, Any], named: str) -> None:
    reply = httpx.post(f"{state_hub.api}/feedback", json=body)
    assert reply.status_code == 400
    assert named in reply.json()["error"]["message"]


def test_conversations_keep_messages_and_feedback_links_to_them(state_hub: Hub) -> None:
    api = f"{state_hub.api}/conversations"
    chat = httpx.post(api, json={"title": "Rivers"}).json()
    httpx.post(f"{api}/{chat['id']}/messages", json={"role": "user", "content": "Longest?"})
    answer = httpx.post(
        f"{api}/{chat['id']}/messages",
        json={"role": "assistant", "content": "The Nile.", "model": "smollm2",
              "citations": [{"title": "Rivers", "page": 3}]},
    ).json()  # fmt: skip
    whole = httpx.get(f"{api}/{chat['id']}").json()
    assert [m["content"] for m in whole["messages"]] == ["Longest?", "The Nile."]
    assert whole["messages"][1]["citations"] == [{"title": "Rivers", "page": 3}]
    assert chat["id"] in [c["id"] for c in httpx.get(api).json()["data"]]

    row = httpx.post(
        f"{state_hub.api}/feedback", json={"score": -1, "message_id": answer["id"]}
    ).json()
    assert (row["user_prompt"], row["assistant_response"]) == ("Longest?", "The Nile.")
    assert row["conversation_id"] == chat["id"]

    assert httpx.delete(f"{api}/{chat['id']}").status_code == 204
    gone = httpx.get(f"{api}/{chat['id']}")
    assert gone.status_code == 404 and "no conversation" in gone.json()["error"]["message"]
    assert (
        httpx.post(f"{state_hub.api}/feedback", json={"score": 1, "message_id": "x"}).status_code
        == 404
    )


def summary(hub: Hub) -> dict[str, Any]:
    reply = httpx.get(f"{hub.api}/monitoring/summary", params={"window": "1h", "buckets": 6})
    assert reply.status_code == 200, reply.text
    body: dict[str, Any] = reply.json()
    return body


def test_monitoring_summary_counts_the_traffic(state_hub: Hub) -> None:
    before = summary(state_hub)  # itself one logged request
    url = f"{state_hub.api}/chat/completions"
    whole = httpx.post(url, json=ASK, timeout=60).json()
    streamed_ask = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", url, json=streamed_ask, timeout=60) as streamed:
        events = [line for line in streamed.iter_lines() if line.startswith("data: {")]
    generated = whole["usage"]["completion_tokens"]
    generated += json.loads(events[-1][6:])["usage"]["completion_tokens"]
    assert httpx.post(url, json={**ASK, "max_tokens": -1}).status_code == 400
    httpx.post(f"{state_hub.api}/feedback", json={"score": -1})
    after = summary(state_hub)

    was, now = before["requests"], after["requests"]
    assert now["requests"] - was["requests"] == 5  # summary, 2 chats, the 400, feedback
    assert now["errors"] - was["errors"] == 1
    assert now["completion_tokens"] - was["completion_tokens"] == generated
    assert now["latency_ms"]["p50"] > 0 and now["ttft_ms"]["p95"] > 0
    assert now["tokens_per_second"] > 0
    assert after["feedback"]["by_score"]["-1"] == before["feedback"]["by_score"].get("-1", 0) + 1
    assert len(after["series"]) == 6
    assert sum(b["requests"] for b in after["series"]) == now["requests"]

    bad = httpx.get(f"{state_hub.api}/monitoring/summary", params={"window": "forever"})
    assert bad.status_code == 400 and "window" in bad.json()["error"]["message"]


def test_a_proxy_identity_header_is_ignored_unless_trusted(state_hub: Hub) -> None:
    """Without keys the caller is the local admin; Sf-Context-Current-User counts only
    with trust_proxy_identity (test_auth.py)."""
    tag = uuid.uuid4().hex
    reply = httpx.post(
        f"{state_hub.api}/feedback",
        json={"score": 1, "model": tag},
        headers={"Sf-Context-Current-User": "MALLORY"},
    )
    assert reply.json()["username"] == "local"


def test_feedback_is_counted_in_metrics(state_hub: Hub) -> None:
    def counted() -> float:
        for line in httpx.get(f"{state_hub.url}/metrics").text.splitlines():
            if line.startswith('neve:feedback_total{score="-1"}'):
                return float(line.split()[-1])
        return 0.0

    before = counted()
    httpx.post(f"{state_hub.api}/feedback", json={"score": -1})
    assert counted() == before + 1
