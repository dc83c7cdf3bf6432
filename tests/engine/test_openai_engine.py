"""The `openai` engine: a neve gateway in front of a real second neve server (llamacpp)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.api.coding_agents import logged
from tests.conftest import NEVE, Hub, free_port, offline_env, start_hub, stop_hub

STANDIN = [sys.executable, "-m", "tests.standins.openai_upstream"]
ASK: dict[str, Any] = {
    "model": "smollm2",
    # Greedy, the answer leads by >= 1.1 logits at every token: the second ask reads the
    # first's prompt from the cache, computed in another batch.
    "messages": [{"role": "user", "content": "Count from 1 to 10."}],
    "temperature": 0,
    "max_tokens": 24,
}


@pytest.fixture(scope="module")
def gateway(hub: Hub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("gw"), command="up",
                        env=offline_env(), upstream=hub.url)  # fmt: skip
    yield started
    stop_hub(started)


def _events(url: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=60) as r:
        assert r.status_code == 200, r.read()
        return [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]


def _comparable(events: list[dict[str, Any]]) -> list[Any]:
    # Token counts, not the cached count: the second ask finds the first's prompt.
    return [
        (
            e["choices"],
            {k: v for k, v in (e.get("usage") or {}).items() if k != "prompt_tokens_details"},
        )
        for e in events
    ]


def test_streams_pass_through_chunk_for_chunk(hub: Hub, gateway: Hub) -> None:
    body = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    direct = _events(hub.url, body)
    through = _events(gateway.url, body)
    assert _comparable(through) == _comparable(direct)
    assert through[-1]["usage"]["completion_tokens"] == 24


def test_whole_answers_and_usage_pass_through(hub: Hub, gateway: Hub) -> None:
    direct = hub.client().chat.completions.create(**ASK)
    through = gateway.client().chat.completions.create(**ASK)
    assert through.choices[0].message.content == direct.choices[0].message.content
    # Token counts agree; the cached count may not (the second finds the first's prompt).
    counts = {"prompt_tokens_details"}
    assert through.usage.model_dump(exclude=counts) == direct.usage.model_dump(exclude=counts)
    completion = gateway.client().completions.create(
        model="smollm2", prompt="One, two,", max_tokens=4, temperature=0
    )
    assert completion.choices[0].text
    models = [m.id for m in gateway.client().models.list().data]
    assert models[0] == "smollm2"


def test_upstream_errors_pass_through_with_status_and_message(gateway: Hub) -> None:
    long = {**ASK, "messages": [{"role": "user", "content": "word " * 5000}]}
    with pytest.raises(openai.BadRequestError) as caught:
        gateway.client().chat.completions.create(**long)
    assert caught.value.code == "context_length_exceeded"
    assert "maximum context length is 4096" in str(caught.value)
    with pytest.raises(openai.NotFoundError) as unknown:  # as OpenAI answers it
        gateway.client().chat.completions.create(**{**ASK, "model": "gpt-9"})
    assert unknown.value.code == "model_not_found"


def test_the_upstreams_embedding_model_is_listed_as_one(gateway: Hub) -> None:
    kinds = {m["id"]: m["kind"] for m in httpx.get(f"{gateway.api}/models").json()["data"]}
    assert kinds == {"smollm2": "chat", "all-minilm-l6-v2": "embedding"}


def test_embeddings_go_to_the_upstream_model(gateway: Hub) -> None:
    reply = gateway.client().embeddings.create(input="hi", model="all-minilm-l6-v2")
    assert len(reply.data[0].embedding) == 384


def test_upstream_key_is_sent_and_a_wrong_one_passes_its_401(tmp_path: Path) -> None:
    upstream = start_hub(tmp_path / "u", env=offline_env(VLLM_API_KEY="up-key"))
    good = start_hub(tmp_path / "g", "upstream_api_key=up-key", upstream=upstream.url)
    bad = start_hub(tmp_path / "b", "upstream_api_key=nope", upstream=upstream.url,
                    wait_ready=False)  # fmt: skip
    try:
        reply = good.client().chat.completions.create(**{**ASK, "max_tokens": 2})
        assert reply.choices[0].message.content
        # The gateway probes its upstream on its own schedule: until the first probe has
        # answered, /ready says "not checked yet" (a few probe intervals at most).
        deadline = time.monotonic() + 10
        ready = httpx.get(f"{bad.url}/ready")
        while "not checked yet" in ready.json()["detail"] and time.monotonic() < deadline:
            time.sleep(0.1)
            ready = httpx.get(f"{bad.url}/ready")
        assert ready.status_code == 503
        assert "401" in ready.json()["detail"]
    finally:
        for h in (good, bad, upstream):
            stop_hub(h)


def test_killed_mid_stream_gives_an_error_event_then_ready_returns(tmp_path: Path) -> None:
    port = free_port()
    upstream = start_hub(tmp_path / "u", port=port)
    gw = start_hub(tmp_path / "g", "upstream_probe_interval=0.2", upstream=upstream.url)
    try:
        long = {**ASK, "max_tokens": 2000, "ignore_eos": True, "stream": True}
        with httpx.stream("POST", f"{gw.api}/chat/completions", json=long, timeout=60) as r:
            lines = r.iter_lines()
            assert next(lines).startswith("data: {")
            assert httpx.get(f"{gw.url}/ready").json()["running"] == 1  # counted in flight
            upstream.process.send_signal(signal.SIGKILL)
            rest = [line for line in lines if line]
        errors = [json.loads(x[6:]) for x in rest if x.startswith("data: {") and '"error"' in x]
        assert errors and "broke off the stream" in errors[0]["error"]["message"]
        assert rest[-1] == "data: [DONE]"

        deadline = time.monotonic() + 10
        while httpx.get(f"{gw.url}/ready").status_code != 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        down = httpx.post(f"{gw.api}/chat/completions", json=ASK)
        assert down.status_code == 503 and int(down.headers["retry-after"]) >= 1

        upstream = start_hub(tmp_path / "u2", port=port)  # back on the same address
        deadline = time.monotonic() + 20
        while httpx.get(f"{gw.url}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert httpx.get(f"{gw.url}/ready").json()["running"] == 0  # the broken one left
        assert gw.client().chat.completions.create(**{**ASK, "max_tokens": 2}).choices
    finally:
        stop_hub(gw)
        stop_hub(upstream)


def test_several_upstreams_are_routed_by_model_name(tmp_path: Path) -> None:
    first = start_hub(tmp_path / "a", "served_model_name=alpha")
    second = start_hub(tmp_path / "b", "served_model_name=beta")
    config = tmp_path / "neve.yaml"
    config.write_text(
        f"engine: openai\nupstreams:\n  - url: {first.url}\n  - url: {second.url}/v1\n"
    )
    gw = start_hub(tmp_path / "g", env=offline_env(NEVE_CONFIG=str(config)))
    try:
        ids = [m.id for m in gw.client().models.list().data]
        assert "alpha" in ids and "beta" in ids
        for name in ("alpha", "beta"):
            reply = gw.client().chat.completions.create(**{**ASK, "model": name, "max_tokens": 2})
            assert reply.model == name
    finally:
        for h in (gw, first, second):
            stop_hub(h)


def test_reasoning_is_split_on_a_stand_in_upstream(tmp_path: Path) -> None:
    # The stand-in echoes the user's text in 3-character pieces, so the tags arrive cut.
    port = free_port()
    standin = subprocess.Popen([*STANDIN, "--port", str(port)], env=offline_env())
    gw = start_hub(tmp_path, upstream=f"http://127.0.0.1:{port}")
    try:
        text = "<think>first weigh it</think>The answer is 4."
        body = {"model": "stand-in", "messages": [{"role": "user", "content": text}]}
        events = _events(gw.url, {**body, "stream": True})
        deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "first weigh it"
        assert "".join(d.get("content") or "" for d in deltas) == "The answer is 4."
        whole = httpx.post(f"{gw.api}/chat/completions", json=body, timeout=30).json()
        message = whole["choices"][0]["message"]
        assert message == {"role": "assistant", "content": "The answer is 4.",
                           "reasoning_content": "first weigh it"}  # fmt: skip
    finally:
        stop_hub(gw)
        standin.terminate()
        standin.wait()


def test_up_with_upstream_waits_for_a_server_that_is_not_there_yet(tmp_path: Path) -> None:
    port = free_port()
    gw = start_hub(tmp_path, upstream=f"http://127.0.0.1:{port}", wait_ready=False)
    try:
        ready = httpx.get(f"{gw.url}/ready")
        assert ready.status_code == 503 and "retry-after" in ready.headers
        assert f"127.0.0.1:{port}" in ready.json()["detail"]
    finally:
        stop_hub(gw)
    result = subprocess.run([*NEVE, "config", "show", "--set", "engine=openai"],
                            env=offline_env(), capture_output=True, text=True)  # fmt: skip
    assert result.returncode == 2 and "needs upstream_url" in result.stderr


def test_structured_output_tools_and_logprobs_pass_through(gateway: Hub) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    client = gateway.client()
    response_format: Any = {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}}
    answer = client.chat.completions.create(
        **{**ASK, "max_tokens": 60}, response_format=response_format, logprobs=True, top_logprobs=1
    )
    assert isinstance(json.loads(answer.choices[0].message.content or "")["n"], int)
    assert answer.choices[0].logprobs and answer.choices[0].logprobs.content
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    stream = client.chat.completions.create(
        **{**ASK, "max_tokens": 60},
        tools=tools,
        tool_choice="required",
        stream=True,
        parallel_tool_calls=False,
    )
    arguments = "".join(
        d.function.arguments or ""
        for chunk in stream
        for c in chunk.choices
        for d in c.delta.tool_calls or []
        if d.function
    )
    assert isinstance(json.loads(arguments)["n"], int)


RESPONSES_ASK: dict[str, Any] = {"model": "smollm2", "input": "Count from 1 to 10.",
                                 "temperature": 0, "max_output_tokens": 16}  # fmt: skip


def test_responses_pass_through_to_an_upstream_that_serves_them(hub: Hub, gateway: Hub) -> None:
    """The upstream (a second neve) answers the Responses API itself; the conversation's
    state stays in the gateway, which stores each response and sends the upstream the whole
    conversation with store false."""
    before = {route: len(logged(hub, route)) for route in ("/v1/responses", "/v1/chat/completions")}
    direct = hub.client().responses.create(**RESPONSES_ASK, store=False)
    first = gateway.client().responses.create(**RESPONSES_ASK)
    assert first.output_text == direct.output_text and first.store
    with gateway.client().responses.stream(
        **{**RESPONSES_ASK, "input": "And from 10 down to 1?"}, previous_response_id=first.id
    ) as stream:
        ends = [e for e in stream if e.type in ("response.completed", "response.incomplete")]
    second = ends[-1].response  # type: ignore[union-attr]
    assert second.previous_response_id == first.id and second.output_text
    assert direct.usage is not None and second.usage is not None
    assert second.usage.input_tokens > direct.usage.total_tokens  # the first turn was sent on
    kept = gateway.client().responses.retrieve(second.id)
    assert kept.output_text == second.output_text and kept.previous_response_id == first.id
    with pytest.raises(openai.NotFoundError):  # the upstream stored nothing
        hub.client().responses.retrieve(first.id)
    after = {route: len(logged(hub, route)) for route in before}
    assert after["/v1/responses"] - before["/v1/responses"] == 3  # direct, first, second
    assert after["/v1/chat/completions"] == before["/v1/chat/completions"]
    tokens = [row for row in logged(gateway, "/v1/responses")[-2:]]
    assert [row[2] for row in tokens] == [first.usage.output_tokens, second.usage.output_tokens]  # type: ignore[union-attr]


def test_responses_through_a_chat_only_upstream_are_answered_through_chat(
    tmp_path: Path,
) -> None:
    port = free_port()
    standin = subprocess.Popen([*STANDIN, "--port", str(port)], env=offline_env())
    gw = start_hub(tmp_path, upstream=f"http://127.0.0.1:{port}")
    try:
        client = gw.client()
        whole = client.responses.create(model="stand-in", input="echo me back")
        assert whole.output_text == "echo me back"  # the stand-in echoes, through chat
        with client.responses.stream(
            model="stand-in", input="and again", previous_response_id=whole.id
        ) as stream:
            assert stream.get_final_response().output_text == "and again"
    finally:
        stop_hub(gw)
        standin.terminate()
        standin.wait()
