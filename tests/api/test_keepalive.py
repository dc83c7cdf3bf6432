"""Streams that wait get SSE keep-alive comments (a proxy such as SPCS ingress drops a
connection idle for about 90 s), and clients read them unchanged."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import AppHub, app_hub_at, free_port, offline_env, start_hub, stop_hub

STANDIN = [sys.executable, "-m", "tests.standins.openai_upstream"]
LONG: dict[str, Any] = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Tell a long story."}],
    "max_tokens": 300,
    "ignore_eos": True,
}
SHORT: dict[str, Any] = {**LONG, "max_tokens": 8}


def _hold_the_slot(hub: AppHub) -> threading.Thread:
    """A long answer on the one sequence, in the background, started once it runs."""
    holder = threading.Thread(target=hub.http.post, args=("/v1/chat/completions",),
                              kwargs={"json": LONG})  # fmt: skip
    holder.start()
    deadline = time.monotonic() + 30
    while hub.http.get("/ready").json().get("running") != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return holder


def test_a_stream_waiting_for_a_sequence_gets_keepalives_then_its_answer(
    tmp_path: Path, models_dir: Path
) -> None:
    settings = ("max_num_seqs=1", "max_queue=1", "stream_keepalive=0.1")
    with app_hub_at(tmp_path, models_dir, *settings) as hub:
        holder = _hold_the_slot(hub)
        with hub.http.stream("POST", "/v1/chat/completions",
                             json={**SHORT, "stream": True}) as response:  # fmt: skip
            assert response.status_code == 200
            lines = [line for line in response.iter_lines() if line]
        holder.join()

        # The engine opens with the assistant's role at once; its text waits for the slot.
        first_text = next(n for n, line in enumerate(lines) if '"content":"' in line
                          and '"content":""' not in line)  # fmt: skip
        assert lines[:first_text].count(": keep-alive") >= 2
        events = [json.loads(line[6:]) for line in lines[:-1] if line != ": keep-alive"]
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events)
        assert events[-1]["choices"][0]["finish_reason"] == "length"
        assert lines[-1] == "data: [DONE]"

        # The official client reads a stream with keep-alives in it as any other.
        holder = _hold_the_slot(hub)
        stream = hub.client().chat.completions.create(
            model="smollm2", messages=SHORT["messages"], max_tokens=8, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )  # fmt: skip
        chunks = list(stream)
        holder.join()
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 8


def test_the_queue_full_answer_keeps_its_429_with_keepalives_on(
    tmp_path: Path, models_dir: Path
) -> None:
    settings = ("max_num_seqs=1", "max_queue=0", "stream_keepalive=0.1")
    with app_hub_at(tmp_path, models_dir, *settings) as hub:
        holder = _hold_the_slot(hub)
        refused = hub.http.post("/v1/chat/completions", json={**SHORT, "stream": True})
        holder.join()
        assert refused.status_code == 429, refused.text
        assert "capacity" in refused.json()["error"]["message"]


def test_a_stream_slow_to_open_starts_with_keepalives_over_real_http(tmp_path: Path) -> None:
    # The upstream (a stand-in for a loading vLLM) starts its stream after 3 s; the hub
    # sends keep-alives from its interval on, well before then.
    port = free_port()
    standin = subprocess.Popen([*STANDIN, "--port", str(port), "--delay", "3"],
                               env=offline_env())  # fmt: skip
    gw = start_hub(tmp_path, "stream_keepalive=0.25", upstream=f"http://127.0.0.1:{port}")
    try:
        body = {"model": "stand-in", "messages": [{"role": "user", "content": "an echo"}],
                "stream": True}  # fmt: skip
        started = time.monotonic()
        seen: list[tuple[float, str]] = []
        with httpx.stream("POST", f"{gw.api}/chat/completions", json=body, timeout=30) as r:
            assert r.status_code == 200
            for line in r.iter_lines():
                if line:
                    seen.append((time.monotonic() - started, line))
        assert seen[0][1] == ": keep-alive" and seen[0][0] < 2.5
        lines = [line for _, line in seen]
        assert lines.count(": keep-alive") >= 3
        assert lines[-1] == "data: [DONE]"

        stream = gw.client().chat.completions.create(**body)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "an echo"
    finally:
        stop_hub(gw)
        standin.terminate()
        standin.wait()
