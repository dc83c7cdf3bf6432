"""Prometheus metrics with vLLM's meanings under a `neve:` prefix, so dashboards built
for vLLM read the hub the same way."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Iterator
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from neve.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neve.api.request_log import Outcome
from neve.api.state import state_of
from neve.engine.base import Engine
from neve.engine.replies import RawChunk
from neve.protocol.openai import ChatCompletionChunk, CompletionChunk, Usage

# vLLM's buckets, so its dashboards' quantiles mean the same here.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0)  # fmt: skip


router = APIRouter()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}},
                     "description": "Prometheus' text format"}},
)  # fmt: skip
async def metrics(request: Request) -> Response:
    """Prometheus' text format; behind the API key like every route but the probes."""
    registry = state_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


class _Load(Collector):
    """Running and waiting requests, read from the engine when Prometheus scrapes."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        running, waiting = self.engine.load()
        yield GaugeMetricFamily(
            "neve:num_requests_running", "Requests being generated now.", value=running
        )
        yield GaugeMetricFamily(
            "neve:num_requests_waiting", "Requests queued for a sequence slot.", value=waiting
        )
        status = self.engine.status()
        if status.replicas is not None:  # an engine whose model runs as replicas (ray)
            replicas = GaugeMetricFamily(
                "neve:replicas", "The model's replicas, by state.", labels=["state"]
            )
            for state, count in sorted(status.replicas.items()):
                replicas.add_metric([state], count)
            yield replicas
            yield CounterMetricFamily(
                "neve:replica_retries",
                "Requests sent again to another replica after theirs was lost.",
                value=status.retried,
            )


class Metrics:
    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("neve:time_to_first_token_seconds", "Time to the first token.",
                              ["model_name"], buckets=TTFT_BUCKETS, registry=r)  # fmt: skip
        self.itl = Histogram("neve:inter_token_latency_seconds", "Time between tokens.",
                             ["model_name"], buckets=ITL_BUCKETS, registry=r)  # fmt: skip
        self.e2e = Histogram("neve:e2e_request_latency_seconds", "Whole request latency.",
                             ["model_name"], buckets=E2E_BUCKETS, registry=r)  # fmt: skip
        self.prompt_tokens = Counter("neve:prompt_tokens", "Prompt tokens processed.",
                                     ["model_name"], registry=r)  # fmt: skip
        self.generation_tokens = Counter("neve:generation_tokens", "Tokens generated.",
                                         ["model_name"], registry=r)  # fmt: skip
        self.success = Counter("neve:request_success", "Requests finished, by finish reason.",
                               ["finish_reason"], registry=r)  # fmt: skip
        self.errors = Counter("neve:request_errors", "Requests failed, by HTTP status.",
                              ["code"], registry=r)  # fmt: skip
        self.relay_rows = Counter("neve:relay_rows", "Rows answered through /relay.",
                                  registry=r)  # fmt: skip
        self.feedback = Counter("neve:feedback", "Feedback rows stored, by score.",
                                ["score"], registry=r)  # fmt: skip
        self.rag_queries = Counter("neve:rag_queries", "Document retrievals: answers, searches.",
                                   ["kind"], registry=r)  # fmt: skip
        r.register(_Load(engine))

    def finished(self, model: str, started: float, usage: Usage | None, reasons: list[str]) -> None:
        self.e2e.labels(model).observe(time.perf_counter() - started)
        if usage is not None:
            self.prompt_tokens.labels(model).inc(usage.prompt_tokens)
            self.generation_tokens.labels(model).inc(usage.completion_tokens)
        for reason in reasons:
            self.success.labels(reason).inc()

    async def observe(
        self, chunks: AsyncGenerator[Any, None], model: str, started: float, outcome: Outcome
    ) -> AsyncGenerator[Any, None]:
        """Pass a stream on, timing its first token, the gaps between tokens, the whole;
        the request's outcome gets the time to first token and the usage."""
        last: float | None = None
        usage: Usage | None = None
        reasons: list[str] = []
        try:
            async for chunk in chunks:
                if _has_tokens(chunk):
                    now = time.perf_counter()
                    if last is None:
                        outcome.ttft = now - started
                        self.ttft.labels(model).observe(outcome.ttft)
                    else:
                        self.itl.labels(model).observe(now - last)
                    last = now
                usage = chunk.usage or usage
                reasons += _finish_reasons(chunk)
                yield chunk
        finally:
            await chunks.aclose()
            outcome.used(usage)
        self.finished(model, started, usage, reasons)


def _has_tokens(chunk: Any) -> bool:
    if isinstance(chunk, RawChunk):
        data = chunk.data
        return (
            b'"content":"' in data.replace(b'"content":""', b"")
            or b'"text":"' in data
            or b'"delta":"' in data  # the Responses API's
        )
    if isinstance(chunk, ChatCompletionChunk):
        return any(c.delta.content or c.delta.reasoning_content for c in chunk.choices)
    assert isinstance(chunk, CompletionChunk)
    return any(c.text for c in chunk.choices)


def _finish_reasons(chunk: Any) -> list[str]:
    if isinstance(chunk, RawChunk):
        if b'"finish_reason":"' not in chunk.data and b'"finish_reason": "' not in chunk.data:
            return []
        events = chunk.events()
        return [
            c["finish_reason"]
            for e in events
            for c in e.get("choices", [])
            if c.get("finish_reason")
        ]
    return [c.finish_reason for c in chunk.choices if c.finish_reason]


class ErrorCounter:
    """Counts every response of status 400 and above, the guards' 401 and 413 included
    (so it sits outside them)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.metrics.errors.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counted)
