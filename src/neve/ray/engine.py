"""The `ray` engine: the model's replicas run on a Ray cluster as a Serve application
(replica.py), and the hub reaches them through a Serve handle, streaming.

The hub stays the gateway (keys, limits, RAG, the relay, the request log, metrics, the UI
work as over any engine) and adds what Serve alone does not: a request whose replica dies
before the client got a byte of its answer is sent again to another replica (Serve
re-routes only a request its replica had not yet accepted); a stream broken part-way ends
with an error the API turns into an OpenAI error event and [DONE]; no wait for a
replica's next chunk lasts longer than `upstream_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncGenerator
from typing import Any, cast

import ray
from ray import serve
from ray.exceptions import (
    NodeDiedError,
    ObjectLostError,
    RayActorError,
    RayError,
    RayTaskError,
    TaskCancelledError,
    WorkerCrashedError,
)
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    RayServeException,
    ReplicaUnavailableError,
)
from ray.serve.handle import DeploymentHandle, DeploymentResponseGenerator

from neve.config import Settings
from neve.engine import catalog, vllm
from neve.engine.base import EngineState, EngineStatus, ModelCard, check_model
from neve.engine.replies import ChatReply, CompletionReply
from neve.errors import (
    ConfigError,
    ModelNotFound,
    NeveError,
    NotReady,
    Overloaded,
    Unavailable,
    unexpected,
)
from neve.protocol.openai import (
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    SamplingFields,
)
from neve.ray import cluster, layout, replica
from neve.ray.streaming import has_text

log = logging.getLogger("neve.ray")

# A replica (or its node) gone: the request never finished there and may be sent again.
_LOST = (
    RayActorError,
    WorkerCrashedError,
    NodeDiedError,
    ObjectLostError,
    ReplicaUnavailableError,
)


class ReplicaLost(Unavailable):
    code = "replica_lost"


class ClientAddress(ConfigError):
    """A ray:// address: Ray Client carries no Serve traffic (ray-project/ray#43357)."""


class RayEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        if settings.ray_engine == "vllm":
            self.name = vllm.served_name(settings)
        else:
            self.name = settings.served_model_name or catalog.display_name(settings.model)
        self.dashboard = ""
        self.retried = 0  # requests sent again after their replica was lost
        self._status = EngineStatus(EngineState.LOADING, f"connecting to Ray at "
                                    f"{settings.ray_address}")  # fmt: skip
        self._handle: DeploymentHandle | None = None
        self._in_flight = 0
        self._watch: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def status(self) -> EngineStatus:
        return self._status

    def models(self) -> list[ModelCard]:
        return [ModelCard(self.name, max_model_len=self.settings.max_model_len)]

    def load(self) -> tuple[int, int]:
        """Requests this hub has on the replicas; Serve's router holds what waits."""
        return self._in_flight, 0

    async def start(self) -> None:
        s = self.settings
        try:
            if s.ray_address.startswith("ray://"):
                raise ClientAddress(
                    f"ray_address {s.ray_address!r}: Serve's handles do not work through "
                    "Ray Client; run the hub on a node of the cluster (ray start --address "
                    "HEAD:6379) with ray_address auto"
                )
            self.dashboard = await asyncio.to_thread(cluster.join, s)
            if s.ray_deploy:
                await self._deploy()
            else:
                self._set(EngineState.LOADING, f"waiting for {s.ray_app_name} on Ray")
            await self._until_serving(time.monotonic() + s.ray_start_timeout)
            self._handle = serve.get_app_handle(s.ray_app_name)
        except Exception as exc:
            reason = exc.message if isinstance(exc, NeveError) else str(exc)
            self._set(EngineState.FAILED, reason)
            raise
        self._watch = asyncio.create_task(self._watch_replicas())

    async def _deploy(self) -> None:
        s = self.settings
        # No HTTP proxy of Serve's: the hub reaches the replicas through handles.
        await asyncio.to_thread(serve.start, proxy_location="Disabled")
        if s.log_level in ("warning", "error"):
            cluster.quieten()
        self._set(EngineState.LOADING, f"deploying {self.name} on Ray")
        gpus = cluster.gpus_per_node()
        if any(gpus):  # none yet: an autoscaler adds GPU nodes when the group asks
            layout.check(s, gpus, "the Ray cluster")
        # Deploy without waiting in Serve (which would wait forever for a replica that
        # cannot be placed): _until_serving waits, within ray_start_timeout.
        await asyncio.to_thread(
            serve._run,
            replica.application(s),
            _blocking=False,
            name=s.ray_app_name,
            route_prefix=None,
        )

    async def _until_serving(self, deadline: float) -> None:
        while True:
            view = await asyncio.to_thread(cluster.states, self.settings.ray_app_name)
            self._follow(view)
            if view.states.get("RUNNING"):
                return
            if view.status == "DEPLOY_FAILED":
                raise Unavailable(f"Ray could not deploy the replicas: {view.message}")
            if time.monotonic() > deadline:
                raise Unavailable(
                    f"no replica started within {self.settings.ray_start_timeout:g} s "
                    f"(setting ray_start_timeout): {view.message or view.status}"
                )
            await asyncio.sleep(0.5)

    async def _watch_replicas(self) -> None:
        """Follow the replicas' states: /ready and /metrics read them."""
        while True:
            await asyncio.sleep(self.settings.ray_probe_interval)
            try:
                view = await asyncio.to_thread(cluster.states, self.settings.ray_app_name)
            except (RayError, RayServeException) as exc:
                self._set(EngineState.LOADING, f"the Ray cluster does not answer: {exc}")
                continue
            self._follow(view)

    def _follow(self, view: cluster.AppView) -> None:
        counts = view.states
        serving = counts.get("RUNNING", 0)
        if serving:
            detail = f"serving {self.name} on {serving} Ray replica(s)"
            if self.dashboard:
                detail += f"; Ray dashboard {self.dashboard}"
            self._set(EngineState.READY, detail, counts)
        else:
            detail = f"no replica serves yet ({view.message or view.status})"
            self._set(EngineState.LOADING, detail, counts)

    def _set(self, state: EngineState, detail: str, replicas: dict[str, int] | None = None) -> None:
        self._status = EngineStatus(state, detail, replicas=replicas, retried=self.retried)

    def nodes(self) -> list[dict[str, Any]]:
        """The cluster's nodes (the relay's /relay/ray_nodes)."""
        return cluster.nodes()

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._set(EngineState.STOPPED, "shut down")
        # The application stays on a shared cluster (other hubs may front it; `neve ray
        # down` removes it); a private `local` cluster goes with the hub.
        if self.settings.ray_address == "local" and ray.is_initialized():
            await asyncio.to_thread(_shutdown_local)

    # --- requests ----------------------------------------------------------------------

    async def chat(self, request: ChatCompletionRequest) -> ChatReply:
        if not request.stream:
            return await self._whole("chat_whole", request)
        return await self._stream("chat", request)

    async def complete(self, request: CompletionRequest) -> CompletionReply:
        if not request.stream:
            return await self._whole("complete_whole", request)
        return await self._stream("complete", request)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        raise ModelNotFound.embedding(request.model)

    def _check(self, request: SamplingFields) -> DeploymentHandle:
        check_model(request.model, self.name)
        if self._handle is None or self._status.state is not EngineState.READY:
            raise NotReady(f"the model is not ready: {self._status.detail}")
        return self._handle

    async def _whole(self, method: str, request: SamplingFields) -> dict[str, Any]:
        """A whole answer: no byte reaches the client before it ends, so any replica lost
        on the way is retried."""
        handle = self._check(request)
        for attempt in range(self.settings.ray_retries + 1):
            response = handle.options(method_name=method).remote(request)
            self._in_flight += 1
            try:
                answer: dict[str, Any] = await asyncio.wait_for(
                    response, self.settings.upstream_timeout
                )
                return answer
            except asyncio.CancelledError:
                response.cancel()  # the client left: free the replica's sequence
                raise
            except BaseException as exc:
                self._retry_or_raise(exc, attempt)
            finally:
                self._in_flight -= 1
        raise AssertionError("unreachable")

    async def _stream(self, method: str, request: SamplingFields) -> AsyncGenerator[Any, None]:
        """A stream, read up to its first chunk with text before the API sends anything:
        a replica lost until then is retried; after it, the stream breaks with an error."""
        handle = self._check(request)
        for attempt in range(self.settings.ray_retries + 1):
            chunks = cast(
                DeploymentResponseGenerator[Any],
                handle.options(method_name=method, stream=True).remote(request),
            )
            held: list[Any] = []
            try:
                while not any(map(has_text, held)):
                    held += await self._next(chunks)
            except BaseException as exc:
                chunks.cancel()
                self._retry_or_raise(exc, attempt)
                continue
            return self._rest(chunks, held)
        raise AssertionError("unreachable")

    async def _next(self, chunks: DeploymentResponseGenerator[Any]) -> list[Any]:
        """The replica's next bundle of chunks (streaming.py)."""
        bundle: list[Any] = await asyncio.wait_for(anext(chunks), self.settings.upstream_timeout)
        return bundle

    async def _rest(
        self, chunks: DeploymentResponseGenerator[Any], held: list[Any]
    ) -> AsyncGenerator[Any, None]:
        self._in_flight += 1
        try:
            for chunk in held:
                yield chunk
            while True:
                try:
                    bundle = await self._next(chunks)
                except StopAsyncIteration:
                    return
                except BaseException as exc:
                    raise _mapped(exc, lost="the replica serving this answer was lost "
                                  "part-way") from None  # fmt: skip
                for chunk in bundle:
                    yield chunk
        finally:
            self._in_flight -= 1
            chunks.cancel()  # a client that left frees the replica's sequence now

    def _retry_or_raise(self, exc: BaseException, attempt: int) -> None:
        if not isinstance(exc, _LOST):
            raise _mapped(exc) from None
        if attempt >= self.settings.ray_retries:
            raise _mapped(exc, lost=f"the replica was lost {attempt + 1} time(s) before "
                          f"answering (setting ray_retries)") from None  # fmt: skip
        self.retried += 1
        log.warning("replica lost; retrying", extra={"error": str(exc), "attempt": attempt})


def _mapped(exc: BaseException, lost: str = "the replica was lost") -> BaseException:
    """What a failure on the cluster means to the client."""
    if isinstance(exc, asyncio.CancelledError):
        return exc
    if isinstance(exc, RayTaskError):  # raised in the replica: neve's own error, or a bug
        cause = exc.cause
        return cause if isinstance(cause, NeveError) else unexpected(cause or exc)
    if isinstance(exc, _LOST):
        return ReplicaLost(f"{lost}: {exc.__class__.__name__}")
    if isinstance(exc, BackPressureError):
        return Overloaded(
            f"every replica is busy and {exc.args[0]} requests wait "
            f"(setting ray_max_queued_requests)"
        )
    if isinstance(exc, TimeoutError):
        return Unavailable(
            "the replica sent nothing for upstream_timeout seconds (setting upstream_timeout)"
        )
    if isinstance(exc, (DeploymentUnavailableError, TaskCancelledError)):
        return Unavailable(f"the Ray application cannot take requests: {exc}")
    if isinstance(exc, NeveError):
        return exc
    return unexpected(exc)


def _shutdown_local() -> None:
    with contextlib.suppress(RayError, RayServeException):
        serve.shutdown()
    ray.shutdown()
