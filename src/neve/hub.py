"""Running the hub: the API server (and, in `neve up`, what joins it) until interrupted."""

from __future__ import annotations

import asyncio
import socket
import time

import uvicorn
from rich.console import Console

from neve import __version__, logs
from neve.api.app import create_app
from neve.config import ConfigError, Settings
from neve.engine.base import EngineState

console = Console(highlight=False, soft_wrap=True)


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(settings: Settings) -> int:
    """Serve until interrupted; returns the exit code (1 when the model cannot load)."""
    logs.configure(settings.log_level)
    check_port_free(settings.host, settings.port)
    app = create_app(settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_config=None,
            log_level=settings.log_level,
            access_log=False,
            timeout_graceful_shutdown=5,
        )
    )
    return asyncio.run(_serve(server, settings))


async def _serve(server: uvicorn.Server, settings: Settings) -> int:
    started = time.perf_counter()
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            return 1
        await asyncio.sleep(0.02)
    url = settings.url
    console.print(f"neve {__version__}  API {url}/v1  health {url}/health  docs {url}/docs")
    engine = server.config.app.state.engine  # type: ignore[union-attr]
    console.print(f"loading model {settings.model} ...")
    code = 0
    while not serving.done():
        status = engine.status()
        if status.state is EngineState.READY:
            took = time.perf_counter() - started
            console.print(f"ready: {engine.name} answers at {url}/v1 ({took:.1f} s)")
            break
        if status.state is EngineState.FAILED:
            console.print(f"[red]error:[/red] cannot load model {settings.model}: {status.detail}")
            server.should_exit = True
            code = 1
            break
        await asyncio.sleep(0.05)
    await serving
    return code
