"""Hubs for the tests, in two tiers.

- In this process (`app_hub`, `client`): `create_app` over the real engine, store and
  embedder, reached over HTTP semantics through httpx (starlette's TestClient is an
  httpx.Client whose transport calls the ASGI app and runs its lifespan). Fast: no
  process, no port, the model loaded once per session.
- As a process (`hub`, `start_hub`): `neve up` / `neve serve` subprocesses on 127.0.0.1,
  for what only a process shows (its command line, its output, signals, real sockets,
  clients that leave mid-stream, the UI in a browser). Tests that use one are marked
  `process`; `make test-fast` leaves them out."""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import socket
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from neve import cli
from neve.api.app import create_app
from neve.config import load_settings, parse_assignments
from neve.rag.embedder import Embedder
from tests.postgres import PgServer

NEVE = [sys.executable, "-m", "neve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _leaks(name: str) -> bool:
    """Settings the machine's environment would give a hub under test: neve's own, and
    vLLM-style names."""
    return name.startswith("NEVE_") or name in (
        "MODEL",
        "MAX_MODEL_LEN",
        "VLLM_API_KEY",
        "HF_TOKEN",
    )


# Hugging Face pointed at a closed local port, so nothing leaves the machine.
OFFLINE = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_DISABLE_TELEMETRY": "1"}


def offline_env(**extra: str) -> dict[str, str]:
    """The environment of a hub process under test."""
    return {**{k: v for k, v in os.environ.items() if not _leaks(k)}, **OFFLINE, **extra}


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def neve(*args: str, **env: str) -> Ran:
    """`neve ARGS` run in this process (typer's CliRunner) in a hub's test environment.
    An exception that escapes the command lands in stderr, as its traceback would."""
    unset: dict[str, str | None] = {k: None for k in os.environ if _leaks(k)}
    result = CliRunner().invoke(cli.app, list(args), env={**unset, **OFFLINE, **env})
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return Ran(result.exit_code, result.stdout, stderr)


def openai_client(api: str, **kwargs: object) -> openai.OpenAI:
    """The OpenAI SDK as a client of a hub: no retries, so a test sees each answer."""
    kwargs.setdefault("api_key", "unused")
    return openai.OpenAI(base_url=api, max_retries=0, **kwargs)  # type: ignore[arg-type]


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
        return openai_client(self.api, **kwargs)

    @functools.cached_property
    def http(self) -> httpx.Client:
        """Raw HTTP to the hub, as AppHub.http is to the hub in this process."""
        return httpx.Client(base_url=self.url, timeout=300)

    def stdout(self) -> str:
        return self.log.read_text()

    def lines_starting(self, prefix: str, timeout: float = 10) -> list[str]:
        """The output's lines that start with `prefix`, once there is one: the hub prints
        what it sees on its own schedule, after /ready may already answer 200."""
        deadline = time.monotonic() + timeout
        while True:
            lines = [line for line in self.stdout().splitlines() if line.startswith(prefix)]
            if lines or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)


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


# What, in a test's code or its fixtures', starts a process.
STARTS_A_PROCESS = ("start_hub(", "*NEVE")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that starts a process, itself or through any fixture it uses, is marked
    `process`: read from the code, so a new test cannot land in the wrong tier."""
    for item in items:
        fixtures = getattr(item, "_fixtureinfo", None)
        defs = fixtures.name2fixturedefs.values() if fixtures else ()
        funcs = [getattr(item, "function", None), *(d.func for ds in defs for d in ds)]
        sources = (inspect.getsource(f) for f in funcs if f is not None)
        if any(token in src for src in sources for token in STARTS_A_PROCESS):
            item.add_marker(pytest.mark.process)


@pytest.fixture(scope="session")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """The hub as a newcomer starts it: `neve up` on its defaults."""
    started = start_hub(tmp_path_factory.mktemp("hub"), command="up")
    yield started
    stop_hub(started)


@dataclass
class AppHub:
    """A hub in this process, addressed as http://testserver."""

    http: TestClient
    url: str = "http://testserver"

    @property
    def api(self) -> str:
        return f"{self.url}/v1"

    def client(self, **kwargs: object) -> openai.OpenAI:
        return openai_client(self.api, http_client=self.http, **kwargs)


@contextlib.contextmanager
def app_hub_at(tmp: Path, models: Path, *settings: str) -> Iterator[AppHub]:
    """`create_app` on the offline defaults (and `settings`, as `--set` gives them), its
    data in `tmp`, yielded once the model is ready."""
    flags = {"data_dir": str(tmp / "data"), "models_dir": str(models)}
    app = create_app(load_settings({**flags, **parse_assignments(list(settings))}, environ={}))
    # A route's bug must come back as the 500 a client sees, not as a raised exception.
    with TestClient(app, raise_server_exceptions=False) as http:
        deadline = time.monotonic() + 60
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, http.get("/ready").json()
            time.sleep(0.05)
        yield AppHub(http)


@pytest.fixture(scope="session")
def app_hub(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[AppHub]:
    """The hub on its defaults, in this process: shared by the session, as `hub` is."""
    with app_hub_at(tmp_path_factory.mktemp("app"), models_dir) as started:
        yield started


@pytest.fixture
def client(app_hub: AppHub) -> openai.OpenAI:
    return app_hub.client()


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
