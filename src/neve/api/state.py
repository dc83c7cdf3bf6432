"""What the routes share, typed: one HubState per app, reached by `state_of(request)`.
A route's needs are then visible in its code and checked by mypy, where `app.state`
would hold anything."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import FastAPI, Request

if TYPE_CHECKING:
    from neve.api.metrics import Metrics
    from neve.config import Settings
    from neve.engine.base import Engine
    from neve.rag.embedder import Embedder
    from neve.rag.service import Rag
    from neve.snowflake.relay import Relay
    from neve.store.db import Store
    from neve.store.usage import RequestLogWriter


@dataclass
class HubState:
    settings: Settings
    engine: Engine
    store: Store
    request_log: RequestLogWriter
    metrics: Metrics
    embedder: Embedder
    rag: Rag
    relay: Relay
    started: int = field(default_factory=lambda: int(time.time()))
    loading: asyncio.Task[None] | None = None  # the engine's start, while it runs

    def attach(self, app: FastAPI) -> None:
        app.state.hub = self


def state_of(request: Request) -> HubState:
    state: HubState = request.app.state.hub
    return state
