"""The `openai` engine: the hub in front of OpenAI-compatible servers (vLLM, Ollama, a
llama.cpp server, another neve), routing by model name, since vLLM serves one model per
server.

Streams pass through chunk by chunk as the upstream wrote them. A chunk is parsed only
when the <think> splitter has something to do (its text holds a '<', or a tag is half
seen), so the common case costs a string search, not a JSON round trip. An upstream that
splits reasoning itself (`reasoning_content` or `reasoning` in its deltas) is left alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from pydantic import BaseModel

from neve.config import Settings, Upstream
from neve.engine.base import EngineState, EngineStatus, ModelCard, ModelKind
from neve.engine.reasoning import ReasoningSplitter, split_all
from neve.engine.replies import ChatReply, CompletionReply, RawChunk
from neve.errors import ModelNotFound, NeveError, NotReady
from neve.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest

log = logging.getLogger("neve.engine")


class UpstreamError(NeveError):
    """An upstream's own error, passed on with its status, message and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        code: str | None = None,
        param: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message, param=param)
        self.status = status
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.code = code or f"upstream_{status}"
        self.retry_after = retry_after


@dataclass
class _Server:
    config: Upstream
    base: str
    headers: dict[str, str]
    http: aiohttp.ClientSession | None = None  # made in start(), inside the running loop
    models: list[str] = field(default_factory=list)
    kinds: dict[str, ModelKind] = field(default_factory=dict)  # as it (or its config) says
    up: bool = False
    problem: str = "not checked yet"
    responses: bool = True  # serves the Responses API, until it answers that it does not

    @property
    def label(self) -> str:
        return self.config.url

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self.http is not None, "the engine has not started"
        return self.http


def _base_url(url: str) -> str:
    url = url.rstrip("/")
    return url if url.endswith("/v1") else f"{url}/v1"


class OpenAIEngine:
    """aiohttp talks to the upstreams: its C parser costs a fraction of a pure-Python HTTP
    stack per chunk, and on a busy machine the gateway's CPU is taken from everyone."""

    def __init__(self, settings: Settings, upstreams: list[Upstream] | None = None) -> None:
        self.settings = settings
        self._servers = []
        for config in upstreams if upstreams is not None else settings.all_upstreams:
            headers = {}
            if config.api_key is not None:
                headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
            self._servers.append(_Server(config, _base_url(config.url), headers))
        self._routes: dict[str, tuple[_Server, str]] = {}
        self._probing: asyncio.Task[None] | None = None
        self._closed = False
        self._in_flight = 0  # requests sent and not yet answered in full

    # --- lifecycle ---------------------------------------------------------------------

    def status(self) -> EngineStatus:
        if self._closed:
            return EngineStatus(EngineState.STOPPED, "shut down")
        down = [s for s in self._servers if not s.up]
        if not down:
            return EngineStatus(EngineState.READY, f"serving {', '.join(self._routes)}")
        detail = "; ".join(f"upstream {s.label}: {s.problem}" for s in down)
        return EngineStatus(EngineState.LOADING, detail)

    def models(self) -> list[ModelCard]:
        return [
            ModelCard(name, owned_by="upstream", kind=server.kinds.get(model, "chat"))
            for name, (server, model) in self._routes.items()
        ]

    def load(self) -> tuple[int, int]:
        """Requests in flight through the gateway; the upstreams keep their own queues."""
        return self._in_flight, 0

    async def start(self) -> None:
        """Probe now, and from then on every `upstream_probe_interval` (once, however
        often this is called)."""
        for server in self._servers:
            if server.http is None:
                server.http = aiohttp.ClientSession(
                    headers=server.headers,
                    # Streams stay open for minutes: no pool limit may queue a request.
                    # Idle connections are dropped before servers drop them (uvicorn,
                    # and so vLLM, after 5 s), so a request rarely meets a closed one.
                    connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3),
                    timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=10, sock_read=self.settings.upstream_timeout
                    ),
                )
        await self.probe()
        if self._probing is None:
            self._probing = asyncio.create_task(self._probe_forever())

    async def close(self) -> None:
        self._closed = True
        if self._probing is not None:
            self._probing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._probing
        for server in self._servers:
            if server.http is not None:
                await server.http.close()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.upstream_probe_interval)
            await self.probe()

    async def probe(self) -> None:
        """Ask every upstream for its models: that is both its health and its routes."""
        await asyncio.gather(*(self._probe(s) for s in self._servers))
        routes: dict[str, tuple[_Server, str]] = {}
        for server in self._servers:
            for model in server.models:
                routes[model] = (server, model)
            if server.config.name and server.models:
                routes[server.config.name] = (server, server.models[0])
        self._routes = routes

    async def _probe(self, server: _Server) -> None:
        try:
            timeout = aiohttp.ClientTimeout(total=5)
            async with server.session.get(f"{server.base}/models", timeout=timeout) as reply:
                if reply.status >= 400:
                    raise _passed_on(reply.status, reply.reason, reply.headers, await reply.read())
                listed = (await reply.json())["data"]
            server.models = [m["id"] for m in listed]
            server.kinds = {
                m["id"]: kind for m in listed
                if (kind := m.get("kind") or server.config.kind) in ("chat", "embedding")
            }  # fmt: skip
        except (aiohttp.ClientError, TimeoutError, NeveError, ValueError, KeyError,
                TypeError, AttributeError) as exc:  # fmt: skip
            if server.up:
                log.warning("upstream down", extra={"upstream": server.label, "error": str(exc)})
            server.up, server.problem = False, _describe(exc)
            return
        if not server.up:
            log.info("upstream up", extra={"upstream": server.label, "models": server.models})
        server.up, server.problem = True, ""

    # --- requests ----------------------------------------------------------------------

    def _route(self, model: str | None) -> tuple[_Server, str]:
        if model is None:
            if not self._routes:
                raise NotReady(f"no upstream is ready: {self.status().detail}")
            model = next(iter(self._routes))
        if model not in self._routes:
            if not all(s.up for s in self._servers):
                raise NotReady(f"the model {model!r} may be on an upstream that is down")
            raise ModelNotFound.among(model, self._routes)
        server, upstream_model = self._routes[model]
        if not server.up:
            raise NotReady(f"the upstream serving {model!r} is down: {server.problem}")
        return server, upstream_model

    async def chat(self, request: ChatCompletionRequest) -> ChatReply:
        server, model = self._route(request.model)
        body = _body(request, model)
        if not request.stream:
            reply = await self._post(server, "/chat/completions", body)
            if self.settings.reasoning_split:
                _split_message(reply)
            return reply
        response = await self._open(server, "/chat/completions", body)
        return self._relay_stream(server, response, split=self.settings.reasoning_split)

    async def complete(self, request: CompletionRequest) -> CompletionReply:
        server, model = self._route(request.model)
        body = _body(request, model)
        if not request.stream:
            return await self._post(server, "/completions", body)
        response = await self._open(server, "/completions", body)
        return self._relay_stream(server, response, split=False)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        server, model = self._route(request.model)
        return await self._post(server, "/embeddings", _body(request, model))

    async def respond(
        self, model: str | None, body: dict[str, Any]
    ) -> dict[str, Any] | AsyncGenerator[RawChunk, None] | None:
        """A Responses API request passed on to the upstream serving `model`, its answer
        (whole, or its events) as the upstream wrote it; None where the upstream serves no
        /v1/responses (it answered 404 or 405 there once), for the hub to answer through
        chat instead."""
        server, upstream_model = self._route(model)
        if not server.responses:
            return None
        try:
            response = await self._open(server, "/responses", {**body, "model": upstream_model})
        except UpstreamError as exc:
            # A missing route, not an error of the API's own (those have their own codes).
            if exc.status in (404, 405) and exc.code == f"upstream_{exc.status}":
                log.info("upstream serves no responses API", extra={"upstream": server.label})
                server.responses = False
                return None
            raise
        if not body.get("stream"):
            return await self._read(server, response)
        return self._relay_stream(server, response, split=False)

    async def _post(self, server: _Server, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await self._read(server, await self._open(server, path, body))

    async def _read(self, server: _Server, response: aiohttp.ClientResponse) -> dict[str, Any]:
        try:
            async with response:
                return dict(await response.json())
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise NeveError(
                f"the upstream {server.label} broke off its answer ({_describe(exc)})"
            ) from None
        finally:
            self._in_flight -= 1

    async def _open(
        self, server: _Server, path: str, body: dict[str, Any]
    ) -> aiohttp.ClientResponse:
        """Send the request and check its status before the client is told anything. A
        response returned here counts as in flight until its reader is done with it."""
        url = f"{server.base}{path}"
        try:
            try:
                response = await server.session.post(url, json=body)
            except aiohttp.ServerDisconnectedError:
                # A kept-alive connection the server had just closed: the request never
                # reached it, so sending it again on a new connection is safe.
                response = await server.session.post(url, json=body)
        except (aiohttp.ClientConnectionError, TimeoutError) as exc:
            raise self._unreachable(server, exc) from None
        if response.status >= 400:
            async with response:
                raise _passed_on(
                    response.status, response.reason, response.headers, await response.read()
                )
        self._in_flight += 1
        return response

    def _unreachable(self, server: _Server, exc: Exception) -> NotReady:
        server.up, server.problem = False, _describe(exc)
        return NotReady(f"the upstream {server.label} is unreachable ({server.problem})")

    async def _relay_stream(
        self, server: _Server, response: aiohttp.ClientResponse, *, split: bool
    ) -> AsyncGenerator[RawChunk, None]:
        """The upstream's bytes as they arrive, cut at event boundaries only; parsed only
        when the <think> splitter has work."""
        splitters: dict[int, ReasoningSplitter] = {}
        pending = b""
        done = False
        try:
            async for block in response.content.iter_any():
                pending += block
                cut = pending.rfind(b"\n\n") + 2
                if cut < 2:
                    continue  # no whole event yet
                events, pending = pending[:cut], pending[cut:]
                if split and (b"<" in events or splitters):
                    events = _split_events(events, splitters)
                chunk = RawChunk(events)
                done = done or chunk.done
                yield chunk
        except (aiohttp.ClientError, TimeoutError) as exc:
            # The client gets an error event: the stream cannot simply end as if complete.
            raise NeveError(
                f"the upstream {server.label} broke off the stream ({_describe(exc)})"
            ) from None
        finally:
            # Closing (not releasing) drops the connection, so when a client leaves
            # mid-stream the upstream sees it and frees its sequence too.
            if done:
                response.release()
            else:
                response.close()
            self._in_flight -= 1
        if not done:
            raise NeveError(f"the upstream {server.label} ended the stream early")


def _body(request: BaseModel, model: str) -> dict[str, Any]:
    """The request as the client sent it (extensions included), for the upstream's model."""
    return {**request.model_dump(exclude_unset=True), "model": model}


def _describe(exc: Exception) -> str:
    if isinstance(exc, UpstreamError):
        return f"it answered {exc.status}: {exc.message}"
    text = str(exc) or exc.__class__.__name__
    return text.splitlines()[0][:200]


def _passed_on(
    status: int, reason: str | None, headers: Mapping[str, str], content: bytes
) -> UpstreamError:
    retry = headers.get("retry-after")
    retry_after = int(retry) if retry and retry.isdigit() else None
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return UpstreamError(
            status, str(error.get("message") or reason), type=error.get("type"),
            code=error.get("code"), param=error.get("param"), retry_after=retry_after,
        )  # fmt: skip
    if isinstance(body, dict) and "detail" in body:  # FastAPI's shape
        message = str(body["detail"])
    elif isinstance(error, str):
        message = error
    else:
        message = content[:500].decode("utf-8", "replace") or reason or f"HTTP {status}"
    return UpstreamError(status, message, retry_after=retry_after)


def _split_events(events: bytes, splitters: dict[int, ReasoningSplitter]) -> bytes:
    out = []
    for line in events.decode().split("\n"):
        if line.startswith("data: {"):
            line = "data: " + _split_chunk(line[6:], splitters)
        out.append(line)
    return "\n".join(out).encode()


def _split_chunk(data: str, splitters: dict[int, ReasoningSplitter]) -> str:
    chunk = json.loads(data)
    for choice in chunk.get("choices", []):
        delta = choice.get("delta") or {}
        if "reasoning_content" in delta or "reasoning" in delta:
            continue  # the upstream splits reasoning itself
        index, final = choice.get("index", 0), bool(choice.get("finish_reason"))
        splitter = splitters.setdefault(index, ReasoningSplitter())
        reasoning, content = splitter.feed(delta.get("content") or "", final=final)
        if final:
            del splitters[index]
        if "content" in delta or content:
            delta["content"] = content
        if reasoning:
            delta["reasoning_content"] = reasoning
        choice["delta"] = delta
    return json.dumps(chunk, ensure_ascii=False, separators=(",", ":"))


def _split_message(reply: dict[str, Any]) -> None:
    for choice in reply.get("choices", []):
        message = choice.get("message") or {}
        text = message.get("content")
        if not text or "reasoning_content" in message or "reasoning" in message:
            continue
        reasoning, content = split_all(text)
        if reasoning:
            message["content"] = content
            message["reasoning_content"] = reasoning
