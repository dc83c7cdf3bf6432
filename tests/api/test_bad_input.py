"""Inputs that once gave a 500, answered by name with a 4xx; and an error nobody foresaw,
answered once in OpenAI's shape on a connection that stays usable."""

from __future__ import annotations

import http.client
import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn

from neve.api.app import create_app
from neve.config import Settings
from neve.engine.llamacpp import LlamaCppEngine
from neve.engine.replies import ChatStream
from neve.protocol.openai import ChatCompletionRequest
from tests.conftest import AppHub, free_port

LONE = b'"\\ud800 hi"'  # valid JSON: a UTF-16 surrogate with no partner


@pytest.mark.parametrize(
    ("path", "body", "named"),
    [
        ("/v1/chat/completions", b'{"messages": [{"role": "user", "content": %s}]}', "messages"),
        ("/v1/chat/completions",
         b'{"messages": [{"role": "user", "content": [{"type": "text", "text": %s}]}]}',
         "messages"),
        ("/v1/completions", b'{"prompt": %s, "max_tokens": 2}', "prompt"),
        ("/v1/completions", b'{"prompt": ["ok", %s], "max_tokens": 2}', "prompt"),
        ("/v1/embeddings", b'{"input": %s}', "input"),
        ("/v1/embeddings", b'{"input": ["ok", %s]}', "input"),
        ("/relay", b'{"data": [[0, "ok"], [1, %s]]}', "row 1"),
        ("/relay", b'{"data": [[0, [{"role": "user", "content": %s}]]]}', "row 0"),
        ("/relay/embed", b'{"data": [[0, %s]]}', "row 0"),
    ],
)  # fmt: skip
def test_a_lone_surrogate_is_a_400_naming_where(
    app_hub: AppHub, path: str, body: bytes, named: str
) -> None:
    reply = app_hub.http.post(path, content=body % LONE,
                       headers={"content-type": "application/json"})  # fmt: skip
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    assert "lone surrogate" in message and named in message


def test_deeply_nested_arrays_are_a_400(app_hub: AppHub) -> None:
    deep = b'{"data": [[0, ' + b"[" * 10_000 + b"]" * 10_000 + b"]]}"
    relay = app_hub.http.post("/relay", content=deep)
    assert relay.status_code == 400
    assert "nests" in relay.json()["error"]["message"]
    chat = app_hub.http.post("/v1/chat/completions",
                      content=b'{"messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}")  # fmt: skip
    assert chat.status_code == 400


def test_embeddings_refuse_token_ids_and_other_sizes_by_name(client: openai.OpenAI) -> None:
    for tokens in ([1, 2, 3], [[1, 2], [3]]):
        with pytest.raises(openai.BadRequestError) as caught:
            client.embeddings.create(model="all-minilm-l6-v2", input=tokens)
        assert caught.value.param == "input"
        assert "token ids are not accepted" in caught.value.message
    with pytest.raises(openai.BadRequestError) as caught:
        client.embeddings.create(model="all-minilm-l6-v2", input="hi", dimensions=8)
    assert caught.value.param == "dimensions" and "384" in caught.value.message
    same = client.embeddings.create(model="all-minilm-l6-v2", input="hi", dimensions=384)
    assert len(same.data[0].embedding) == 384
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="text-embedding-3-small", input="hi")
    assert missing.value.code == "model_not_found"


class BrokenEngine(LlamaCppEngine):
    """The real engine with a fault injected: a bug that raises (no input reaches one now;
    this stands for the next)."""

    async def chat(self, request: ChatCompletionRequest) -> ChatStream:
        if request.stream:
            return self._breaks_mid_stream(await super().chat(request))
        raise RuntimeError("injected fault")

    async def _breaks_mid_stream(self, chunks: ChatStream) -> ChatStream:
        yield await anext(chunks)
        await chunks.aclose()
        raise KeyError("injected fault")


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A hub over the broken engine, served by uvicorn in this process."""
    settings = Settings(data_dir=tmp_path_factory.mktemp("broken"))
    app = create_app(settings, engine=BrokenEngine(settings))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not _ready(f"http://127.0.0.1:{port}/ready"):
        assert time.monotonic() < deadline, "the hub did not become ready"
        time.sleep(0.1)
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=15)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url).status_code == 200
    except httpx.TransportError:
        return False


def _send(conn: http.client.HTTPConnection, body: dict[str, Any]) -> tuple[int, bytes]:
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"content-type": "application/json"})  # fmt: skip
    reply = conn.getresponse()
    return reply.status, reply.read()


def test_an_unexpected_error_is_one_500_and_the_connection_lives_on(
    broken: str, caplog: pytest.LogCaptureFixture
) -> None:
    ask = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    conn = http.client.HTTPConnection(broken, timeout=60)
    with caplog.at_level(logging.INFO):
        status, body = _send(conn, ask)
        assert status == 500
        assert json.loads(body)["error"] == {
            "message": "internal error: RuntimeError", "type": "server_error",
            "param": None, "code": "internal_error",
        }  # fmt: skip
        local = conn.sock.getsockname()
        # The same connection serves the next request; a stream that breaks ends readably.
        status, body = _send(conn, {**ask, "stream": True})
        assert conn.sock.getsockname() == local
    assert status == 200
    events = [line[6:] for line in body.decode().splitlines() if line.startswith("data: ")]
    assert json.loads(events[-2])["error"]["message"] == "internal error: KeyError"
    assert events[-1] == "[DONE]"
    faults = [r for r in caplog.records if r.exc_info and "injected fault" in str(r.exc_info[1])]
    assert len(faults) == 2  # each once, by neve; none reached the server's logger
    assert not [r for r in caplog.records if r.name.startswith("uvicorn") and r.exc_info]


def test_an_upload_with_a_very_long_name_is_stored(app_hub: AppHub, tmp_path: Path) -> None:
    name = "q" * 300 + ".md"
    text = b"# Long\n\nA file with a long name.\n"
    reply = app_hub.http.post("/v1/documents", files=[("files", (name, text))])
    assert reply.status_code == 201, reply.text
    [stored] = reply.json()["data"]
    assert stored["status"] == "indexed" and stored["path"].endswith("qq.md")


@pytest.mark.parametrize("param", ["score", "limit", "offset"])
def test_numbers_past_a_database_integer_are_a_400(app_hub: AppHub, param: str) -> None:
    reply = app_hub.http.get("/v1/feedback", params={param: 2**70})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == param
