"""Running the hub: the API server and, in `neve up`, the web UI beside it, until
interrupted."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import Coroutine
from typing import Any

import uvicorn
from rich.console import Console

from neve import __version__, logs
from neve.api import fleet
from neve.api.app import create_app
from neve.config import Settings
from neve.engine.base import Engine, EngineState
from neve.engine.registry import create_engine
from neve.errors import ConfigError
from neve.store.db import Store
from neve.ui import launch

console = Console(highlight=False, soft_wrap=True)


def check_port_free(host: str, port: int, setting: str = "port") -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror} (setting {setting})"
            ) from None


def serve(settings: Settings, ui: bool = False) -> int:
    """Serve until interrupted, with the web UI when `ui`; returns the exit code (1 when
    the model cannot load). Raises StoreError when the database cannot be opened: the hub
    would not know its keys."""
    logs.configure(settings.log_level)
    check_port_free(settings.host, settings.port)
    if settings.relay_port:
        check_port_free(settings.host, settings.relay_port, "relay_port")
    if ui:
        check_port_free(settings.host, settings.ui_port, "ui_port")
    engine = create_engine(settings)
    store = Store.open(settings)
    app = create_app(settings, engine=engine, store=store)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    sockets = [config.bind_socket()]
    if settings.relay_port:  # the same app on a second port, for a private endpoint
        sockets.append(uvicorn.Config(app, host=settings.host, port=settings.relay_port,
                                      log_config=None).bind_socket())  # fmt: skip
    shared = fleet.described(settings, store)
    return _run(_serve(uvicorn.Server(config), engine, settings, ui, sockets, shared))


def _run(main: Coroutine[Any, Any, int]) -> int:
    """On uvloop where it is installed (uvicorn[standard] brings it): the gateway's
    per-chunk cost is mostly the event loop's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _starting(settings: Settings) -> str:
    if settings.engine == "openai":
        return "connecting to " + ", ".join(u.url for u in settings.all_upstreams)
    if settings.engine == "vllm":
        return f"starting vLLM for {settings.model}"
    if settings.engine == "ray" and not settings.ray_deploy:
        return f"waiting for the application {settings.ray_app_name} on the Ray cluster"
    if settings.engine == "ray":
        return f"deploying {settings.model} on the Ray cluster at {settings.ray_address}"
    return f"loading model {settings.model}"


async def _serve(
    server: uvicorn.Server,
    engine: Engine,
    settings: Settings,
    ui: bool,
    sockets: list[socket.socket],
    shared: str | None,
) -> int:
    started = time.perf_counter()
    serving = asyncio.create_task(server.serve(sockets))
    while not server.started:
        if serving.done():
            return 1
        await asyncio.sleep(0.02)
    url = settings.url
    console.print(f"neve {__version__}  API {url}/v1  health {url}/health  docs {url}/docs")
    if shared:
        console.print(shared)
    # Started before the model is ready, so people see it load.
    page = launch.start(settings, url) if ui else None
    if page is not None:
        console.print(f"UI {settings.ui_url}")
    try:
        return await _watch(server, serving, engine, settings, started)
    finally:
        if page is not None:
            launch.stop(page)


async def _watch(
    server: uvicorn.Server,
    serving: asyncio.Task[None],
    engine: Engine,
    settings: Settings,
    started: float,
) -> int:
    url = settings.url
    console.print(f"{_starting(settings)} ...")
    code = 0
    while not serving.done():
        status = engine.status()
        if status.state is EngineState.READY:
            took = time.perf_counter() - started
            names = ", ".join(m.id for m in engine.models())
            console.print(f"ready: {names} answers at {url}/v1 ({took:.1f} s)")
            # What start-up made lives as long as the hub: kept out of the collector's full
            # passes, which otherwise walk it all while holding the GIL the engine's
            # batching thread waits on between steps.
            gc.freeze()
            if status.replicas is not None:
                console.print(status.detail)
            break
        if status.state is EngineState.FAILED:
            console.print(f"[red]error:[/red] cannot load model {settings.model}: {status.detail}")
            server.should_exit = True
            code = 1
            break
        await asyncio.sleep(0.05)
    await serving
    return code
