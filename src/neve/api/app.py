"""create_app: the FastAPI application over one engine."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException

from neve import __version__
from neve.api import (
    conversations,
    documents,
    embeddings,
    errors,
    feedback,
    fleet,
    health,
    identity,
    messages,
    metrics,
    openai,
    rag,
    relay,
    rerank,
    responses,
    snowflake_tables,
    spec,
)
from neve.api.auth import Auth, KeyRing
from neve.api.guards import BodyLimit
from neve.api.request_log import RequestRecorder
from neve.api.state import HubState
from neve.config import Settings
from neve.engine.base import Engine
from neve.engine.registry import create_engine
from neve.errors import NeveError
from neve.logs import first_line
from neve.rag.service import configured_embedder
from neve.snowflake.relay import Relay
from neve.snowflake.stage import StageRef
from neve.stages import ingest_stage
from neve.store.db import Store
from neve.store.usage import RequestLogWriter

log = logging.getLogger("neve.api")


def create_app(
    settings: Settings, engine: Engine | None = None, store: Store | None = None
) -> FastAPI:
    """The API over `engine` and `store` (by default, those the settings name; opening the
    store migrates it, and raises StoreError when it cannot)."""
    engine = engine or create_engine(settings)
    store = store or Store.open(settings)
    request_log = RequestLogWriter(store, settings.request_log_buffer)

    embedder = configured_embedder(settings)
    state = HubState(
        settings=settings,
        engine=engine,
        store=store,
        request_log=request_log,
        metrics=metrics.Metrics(engine),
        embedder=embedder,
        rag=fleet.rag(settings, embedder, store),
        relay=Relay(
            engine,
            embedder,
            concurrency=settings.relay_concurrency,
            max_tokens=settings.relay_max_tokens,
            on_row_error=settings.relay_on_row_error,
            overload_wait=settings.relay_overload_wait,
            cache=fleet.batch_answers(settings, store),
            context=settings.max_model_len,
        ),
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # The model loads in the background so /health and /ready answer meanwhile.
        state.loading = asyncio.create_task(_start(engine))
        request_log.start()
        syncing = asyncio.create_task(_sync_documents(state)) if fleet.is_fleet(settings) else None
        copying = refreshing = None
        if settings.rag_stages:
            refreshing = asyncio.create_task(_refresh_stages(state))
        if snowflake_tables.wanted(settings):
            tables = snowflake_tables.SnowflakeTables.configured(settings, store)
            interval = settings.snowflake_export_interval
            copying = asyncio.create_task(snowflake_tables.keep_sending(tables, interval))
        try:
            yield
        finally:
            state.loading.cancel()
            for task in (syncing, copying, refreshing):
                if task is not None:
                    task.cancel()
            await engine.close()
            await asyncio.to_thread(request_log.close)
            await limiter.close()
            store.close()

    # No trailing-slash redirects: /v1/conversations/ is not a conversation's address.
    app = FastAPI(title="neve", version=__version__, lifespan=lifespan, redirect_slashes=False)
    app.openapi = lambda: spec.document(app, settings)  # type: ignore[method-assign]
    state.attach(app)
    # Every error neve raises, and every failure of the framework's or the database's,
    # becomes OpenAI's error shape in errors.py.
    app.add_exception_handler(NeveError, errors.on_neve_error)
    app.add_exception_handler(RequestValidationError, errors.on_validation_error)
    app.add_exception_handler(HTTPException, errors.on_http_error)
    app.add_exception_handler(OperationalError, errors.on_database_down)
    app.add_exception_handler(InterfaceError, errors.on_database_down)
    app.include_router(health.router)
    app.include_router(identity.router)
    app.include_router(openai.router)
    app.include_router(messages.router)
    app.include_router(responses.router)
    app.include_router(embeddings.router)
    app.include_router(rerank.router)
    app.include_router(relay.router)
    app.include_router(metrics.router)
    app.include_router(feedback.router)
    app.include_router(conversations.router)
    app.include_router(rag.router)
    app.include_router(documents.router)
    limiter = fleet.rate_limiter(settings, store)
    # Uploads have their own, larger limit; documents.py checks each file against it too.
    uploads = {"/v1/documents": (settings.rag_max_upload_bytes + 65536, "rag_max_upload_bytes")}
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes, overrides=uploads)
    app.add_middleware(
        Auth,
        ring=KeyRing(store, settings.auth_refresh_interval),
        limiter=limiter,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        trust_proxy=settings.trust_proxy_identity,
    )
    app.add_middleware(RequestRecorder, writer=request_log, limiter=limiter)
    app.add_middleware(errors.LastResort)  # so no exception reaches the server
    app.add_middleware(metrics.ErrorCounter, metrics=state.metrics)  # outermost
    return app


async def _sync_documents(state: HubState) -> None:
    """A fleet instance's index follows the documents every instance writes."""
    while True:
        try:
            applied = await asyncio.to_thread(state.rag.sync)
            if applied:
                log.info("documents synced from the fleet", extra={"documents": applied})
        except Exception as exc:  # the database away: the index stays as it is until back
            log.warning("cannot sync documents", extra={"error": first_line(exc)})
        await asyncio.sleep(state.settings.rag_sync_interval)


async def _refresh_stages(state: HubState) -> None:
    """The configured stages ingested at start and every rag_stage_refresh seconds."""
    settings = state.settings
    while True:
        for stage in settings.rag_stages:
            try:
                ref = StageRef.parse(stage)
                done = await asyncio.to_thread(ingest_stage, settings, state.rag, ref)
                log.info("stage ingested", extra={"stage": stage, "files": done.files,
                         "skipped": done.skipped, "removed": done.removed,
                         "failed": done.failed})  # fmt: skip
            except Exception as exc:  # Snowflake away: the index keeps what it has
                log.warning("cannot read a stage", extra={"stage": stage, "error": first_line(exc)})
        await asyncio.sleep(settings.rag_stage_refresh)


async def _start(engine: Engine) -> None:
    try:
        await engine.start()
    except Exception as exc:
        # The status carries the reason: /ready reports it and `neve serve` exits with it.
        log.error("engine failed to start", extra={"error": str(exc)})
