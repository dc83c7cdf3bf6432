"""One replica of the model on the cluster: neve's own engine (llama.cpp on CPU nodes, the
vllm engine on GPU nodes) inside a Ray Serve deployment, answering the hub's requests.

Requests and chunks cross the cluster as the protocol's own types (pickled), so the hub
treats a replica's answer exactly as it treats a local engine's; a stream's chunks cross
in bundles (streaming.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncGenerator
from typing import Any

import ray
from ray import serve
from ray.serve import Application

from neve.config import Settings, load_settings
from neve.engine.base import EngineState
from neve.engine.registry import create_engine
from neve.engine.replies import (
    ChatReply,
    CompletionReply,
    gather_chat,
    gather_completion,
)
from neve.errors import Unavailable
from neve.protocol.openai import ChatCompletionRequest, CompletionRequest
from neve.ray import vllm_server
from neve.ray.layout import layout
from neve.ray.serve_config import DEPLOYMENT, deployment_options
from neve.ray.streaming import bundled


class EngineReplica:
    """The deployment's class: Serve builds one per replica, on a node that has the
    resources the settings ask for."""

    async def __init__(self, settings: Settings) -> None:  # type: ignore[misc]  # Serve awaits it
        if layout(settings) is not None:
            settings = _in_group(settings)
        self.engine = create_engine(settings.model_copy(update={"engine": settings.ray_engine}))
        self.interval = settings.ray_stream_interval
        await self.engine.start()

    async def _stream(
        self, request: ChatCompletionRequest | CompletionRequest
    ) -> AsyncGenerator[Any, None]:  # a ChatStream or a CompletionStream, as asked
        """The engine's stream, whether or not the client asked for one: the hub gathers a
        whole answer itself, or has the replica gather it (`*_whole`)."""
        asked = request.model_copy(update={"stream": True})
        if isinstance(asked, ChatCompletionRequest):
            reply: ChatReply | CompletionReply = await self.engine.chat(asked)
        else:
            reply = await self.engine.complete(asked)
        assert not isinstance(reply, dict), "asked for a stream"
        return reply

    async def chat(self, request: ChatCompletionRequest) -> AsyncGenerator[list[Any], None]:
        async for bundle in bundled(await self._stream(request), self.interval):
            yield bundle

    async def chat_whole(self, request: ChatCompletionRequest) -> dict[str, Any]:
        return (await gather_chat(await self._stream(request))).model_dump()

    async def complete(self, request: CompletionRequest) -> AsyncGenerator[list[Any], None]:
        async for bundle in bundled(await self._stream(request), self.interval):
            yield bundle

    async def complete_whole(self, request: CompletionRequest) -> dict[str, Any]:
        return (await gather_completion(await self._stream(request))).model_dump()

    def check_health(self) -> None:
        """Serve restarts a replica whose engine failed (a vLLM child that will not come
        back, say)."""
        status = self.engine.status()
        if status.state in (EngineState.FAILED, EngineState.STOPPED):
            raise Unavailable(f"the replica's engine is {status.state.value}: {status.detail}")

    async def __del__(self) -> None:
        await self.engine.close()


def _in_group(settings: Settings) -> Settings:
    """A spread replica's vLLM: its ranks as Ray actors in this replica's placement group
    (vllm_server.py hands the group over)."""
    group = ray.util.get_current_placement_group()
    if group is None:
        raise Unavailable("a spread vLLM replica runs outside its placement group")
    os.environ[vllm_server.GROUP] = group.id.hex()
    os.environ["RAY_ADDRESS"] = ray.get_runtime_context().gcs_address
    return settings.model_copy(update={
        "vllm_command": [sys.executable, "-m", "neve.ray.vllm_server"],
        "vllm_extra_args": [*settings.vllm_extra_args, "--distributed-executor-backend", "ray"],
    })  # fmt: skip


def application(settings: Settings) -> Application:
    """The Serve application the hub deploys, every knob from the settings."""
    deployment = serve.deployment(name=DEPLOYMENT, **deployment_options(settings))
    return deployment(EngineReplica).bind(settings)


def build(args: dict[str, Any]) -> Application:
    """The application as Serve's config builds it (serve_config.BUILDER): from the
    settings in its `args`, over any NEVE_* of the replica's node."""
    return application(load_settings(flags=args.get("settings") or {}))
