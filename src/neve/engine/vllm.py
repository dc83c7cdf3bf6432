"""The `vllm` engine: neve launches vLLM's OpenAI server as a child process and serves
through it as an upstream, adding what a bare vLLM container lacks (readiness, keys,
limits, the relay, RAG, the UI).

The child listens on a private port on 127.0.0.1 with a generated key, so only the hub
reaches it. A child that dies is restarted with exponential backoff; shutting the hub
down stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import os
import secrets
import shutil
import socket
import sys
import time
from pathlib import Path

import httpx
from pydantic import SecretStr

from neve.config import Settings, Upstream
from neve.engine.base import EngineState, EngineStatus, ModelCard
from neve.engine.openai import OpenAIEngine
from neve.engine.replies import ChatReply, CompletionReply
from neve.errors import Unavailable
from neve.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

log = logging.getLogger("neve.engine")


class VllmUnavailable(Unavailable):
    code = "vllm_unavailable"


def served_name(settings: Settings) -> str:
    return settings.served_model_name or settings.model


SERVER = "vllm.entrypoints.openai.api_server"


def command(settings: Settings, *, port: int, key: str) -> list[str]:
    """vLLM's command line, every setting mapped to its flag."""
    base = settings.vllm_command or [sys.executable, "-m", SERVER]
    return [*base, "--api-key", key, *arguments(settings, port=port)]


def arguments(settings: Settings, *, port: int) -> list[str]:
    """vLLM's server's arguments, listening on this host only (the hub beside it is its
    one client)."""
    args = [
        "--model", settings.model,
        "--served-model-name", served_name(settings),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--tensor-parallel-size", str(settings.tensor_parallel_size),
        "--pipeline-parallel-size", str(settings.pipeline_parallel_size),
        "--max-model-len", str(settings.max_model_len),
        "--gpu-memory-utilization", str(settings.gpu_memory_utilization),
        "--download-dir", str(settings.models_path),
        "--dtype", settings.dtype,
    ]  # fmt: skip
    if settings.enforce_eager:
        args.append("--enforce-eager")
    if settings.trust_remote_code:
        args.append("--trust-remote-code")
    if settings.reasoning_parser:
        args += ["--reasoning-parser", settings.reasoning_parser]
    return [*args, *settings.vllm_extra_args]


def environment(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    if settings.hf_token is not None:
        env["HF_TOKEN"] = settings.hf_token.get_secret_value()
    return env


def preflight(settings: Settings) -> None:
    """One clear line when vLLM cannot run here, before anything starts."""
    if settings.vllm_command is not None:
        return  # the operator named the command; trust it
    if importlib.util.find_spec("vllm") is None:
        raise VllmUnavailable(
            "the vllm engine needs the vllm package, which is not installed (pip install "
            "vllm, on a machine with an NVIDIA GPU); or use engine llamacpp"
        )
    if shutil.which("nvidia-smi") is None and not Path("/dev/nvidia0").exists():
        raise VllmUnavailable(
            "the vllm engine needs an NVIDIA GPU and none is visible here; use engine llamacpp"
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class VllmEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = _free_port()
        # Hex: a urlsafe token may begin with "-", which argparse takes for an option.
        self.key = secrets.token_hex(24)
        self.upstream = OpenAIEngine(
            settings,
            [Upstream(url=f"http://127.0.0.1:{self.port}", api_key=SecretStr(self.key))],
        )
        self.process: asyncio.subprocess.Process | None = None
        self._state = EngineStatus(EngineState.LOADING, "starting vLLM")
        self._supervising: asyncio.Task[None] | None = None
        self._stopping = False
        self._serving_since: float | None = None

    def status(self) -> EngineStatus:
        if self._state.state is not EngineState.READY:
            return self._state
        return self.upstream.status()

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(m.id, owned_by="vllm", max_model_len=self.settings.max_model_len)
            for m in self.upstream.models()
        ]

    def load(self) -> tuple[int, int]:
        return self.upstream.load()

    async def start(self) -> None:
        try:
            preflight(self.settings)
        except VllmUnavailable as exc:
            self._state = EngineStatus(EngineState.FAILED, exc.message)
            raise
        await self._launch()
        self._supervising = asyncio.create_task(self._supervise())

    async def _launch(self) -> None:
        argv = command(self.settings, port=self.port, key=self.key)
        log.info("starting vLLM", extra={"argv": [a if a != self.key else "***" for a in argv]})
        self._state = EngineStatus(EngineState.LOADING, f"vLLM is loading {self.settings.model}")
        self._serving_since = None
        self.process = await asyncio.create_subprocess_exec(
            *argv, env=environment(self.settings), stdin=asyncio.subprocess.DEVNULL
        )
        await self._wait_healthy()

    async def _wait_healthy(self) -> None:
        url = f"http://127.0.0.1:{self.port}/health"
        deadline = time.monotonic() + self.settings.vllm_start_timeout
        async with httpx.AsyncClient(timeout=2.0) as http:
            while True:
                assert self.process is not None
                if self.process.returncode is not None:
                    return  # the supervisor sees it and restarts
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    limit = self.settings.vllm_start_timeout
                    self._state = EngineStatus(
                        EngineState.LOADING, f"vLLM did not answer /health within {limit:.0f} s"
                    )
                    return
                await asyncio.sleep(0.5)
        await self.upstream.start()
        self._state = EngineStatus(EngineState.READY, "vLLM is serving")
        self._serving_since = time.monotonic()

    async def _supervise(self) -> None:
        backoff = 1.0
        while not self._stopping:
            assert self.process is not None
            code = await self.process.wait()
            if self._stopping:
                return
            if self._serving_since is not None and time.monotonic() - self._serving_since > 60:
                backoff = 1.0  # it served a while: this failure starts the backoff afresh
            self._state = EngineStatus(
                EngineState.LOADING, f"vLLM exited with code {code}; restarting in {backoff:.0f} s"
            )
            log.warning("vLLM exited", extra={"code": code, "restart_in_s": backoff})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self.settings.vllm_max_backoff)
            await self._launch()

    async def close(self) -> None:
        self._stopping = True
        if self._supervising is not None:
            self._supervising.cancel()
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), timeout=15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        await self.upstream.close()

    async def chat(self, request: ChatCompletionRequest) -> ChatReply:
        return await self.upstream.chat(request)

    async def complete(self, request: CompletionRequest) -> CompletionReply:
        return await self.upstream.complete(request)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, object]:
        return await self.upstream.embeddings(request)
