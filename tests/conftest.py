"""Fixtures that start real hubs (`neve up` / `neve serve` subprocesses) on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from neve.rag.embedder import Embedder
from tests.postgres import PgServer

NEVE = [sys.executable, "-m", "neve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def offline_env(**extra: str) -> dict[str, str]:
    """The environment of a hub under test: no vLLM-style names leaking in from the
    machine, and Hugging Face pointed at a closed local port so nothing leaves it."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("NEVE_")
        and k not in ("MODEL", "MAX_MODEL_LEN", "VLLM_API_KEY", "HF_TOKEN")
    }
    env.update(HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_DISABLE_TELEMETRY="1")
    env.update(extra)
    return env


@dataclass
class Hub:
    url: str
    process: subprocess.Popen[str]
    log: Path
    ui: str | None = None  # the web UI's address, for `neve up`

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    def client(self, **kwargs: object) -> openai.OpenAI:
        kwargs.setdefault("api_key", "unused")
        return openai.OpenAI(base_url=self.api, max_retries=0, **kwargs)  # type: ignore[arg-type]

    def stdout(self) -> str:
        return self.log.read_text()


def start_hub(
    tmp: Path,
    *settings: str,
    command: str = "serve",
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    upstream: str | None = None,
    port: int | None = None,
) -> Hub:
    port = port or free_port()
    tmp.mkdir(parents=True, exist_ok=True)
    log = tmp / f"hub-{port}.log"
    args = [*NEVE, command, "--port", str(port), "--data-dir", str(tmp / "data")]
    ui_port = free_port() if command == "up" else None
    if ui_port:
        args += ["--ui-port", str(ui_port)]
    if upstream:
        args += ["--upstream", upstream]
    for setting in settings:
        args += ["--set", setting]
    process = subprocess.Popen(
        args,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env=env or offline_env(),
        text=True,
    )
    hub = Hub(f"http://127.0.0.1:{port}", process, log)
    if ui_port:
        hub.ui = f"http://127.0.0.1:{ui_port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"hub exited with {process.returncode}:\n{hub.stdout()}")
        try:
            status = httpx.get(f"{hub.url}/ready", timeout=2).status_code
        except httpx.TransportError:
            status = None
        if status == 200 or (status is not None and not wait_ready):
            return hub
        time.sleep(0.1)
    stop_hub(hub)
    raise RuntimeError(f"hub did not become ready:\n{hub.stdout()}")


def stop_hub(hub: Hub) -> None:
    hub.process.terminate()
    try:
        hub.process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        hub.process.kill()
        hub.process.wait()


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The hub as a newcomer starts it: `neve up` on its defaults."""
    started = start_hub(tmp_path_factory.mktemp("hub"), command="up")
    yield started
    stop_hub(started)


@pytest.fixture
def client(hub: Hub) -> openai.OpenAI:
    return hub.client()


# A DeepSeek-R1-style chat template: it opens the <think> block, so the model's text until
# </think> is reasoning.
R1_STYLE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}<|im_start|>assistant\n<think>\n"
)


@pytest.fixture(scope="module")
def thinking_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The real model behind the R1-style template: it answers in reasoning text."""
    tmp = tmp_path_factory.mktemp("r1")
    template = tmp / "r1.jinja"
    template.write_text(R1_STYLE)
    started = start_hub(tmp, f"chat_template={template}")
    yield started
    stop_hub(started)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """One PostgreSQL server for the session; each user of it makes its own database."""
    server = PgServer(free_port())
    server.start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database of each kind the store supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'neve.db'}"
    server: PgServer = request.getfixturevalue("postgres")
    return server.create_database(f"t_{uuid.uuid4().hex[:12]}")


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One models folder for the session, so the int8 ONNX export happens once."""
    folder = tmp_path_factory.mktemp("models")
    Embedder("all-minilm-l6-v2", cache_dir=folder / "onnx").dimensions  # noqa: B018
    return folder


@pytest.fixture(scope="session")
def embedder(models_dir: Path) -> Embedder:
    return Embedder("all-minilm-l6-v2", cache_dir=models_dir / "onnx")
