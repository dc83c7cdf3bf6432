"""A configured API key (VLLM_API_KEY, as vLLM containers set it) guards every route but
the probes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import Hub, offline_env, start_hub, stop_hub


@pytest.fixture(scope="module")
def keyed_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    tmp: Path = tmp_path_factory.mktemp("keyed")
    started = start_hub(tmp, env=offline_env(VLLM_API_KEY="s3cret-key"))
    yield started
    stop_hub(started)


def test_probes_need_no_key(keyed_hub: Hub) -> None:
    assert httpx.get(f"{keyed_hub.url}/health").status_code == 200
    assert httpx.get(f"{keyed_hub.url}/ready").status_code == 200


@pytest.mark.parametrize("header", [None, "Bearer wrong", "s3cret-key", "Bearer s3cret-key2"])
def test_missing_or_wrong_key_gets_401(keyed_hub: Hub, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for path in ("/v1/models", "/v1/chat/completions", "/docs"):
        reply = httpx.post(f"{keyed_hub.url}{path}", headers=headers, json={})
        assert reply.status_code == 401, path
        assert reply.json()["error"]["code"] == "invalid_api_key"


def test_the_right_key_is_served(keyed_hub: Hub) -> None:
    client = keyed_hub.client(api_key="s3cret-key")
    assert "smollm2" in [m.id for m in client.models.list().data]
    with pytest.raises(openai.AuthenticationError):
        keyed_hub.client(api_key="nope").models.list()
