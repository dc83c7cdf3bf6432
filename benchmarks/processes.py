"""What every benchmark does to start what it measures: a free port on 127.0.0.1, and a
server process (offline, from the repository root) waited on until a URL answers 200."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent
NEVE = [sys.executable, "-m", "neve"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    argv: list[str],
    ready_url: str,
    *,
    env: Mapping[str, str] | None = None,
    log: IO[bytes] | None = None,
    timeout: float = 600,
) -> subprocess.Popen[bytes]:
    """`argv` started with `env` added to ours (and no Hugging Face hub), its output to
    `log` or nowhere; returned once `ready_url` answers 200."""
    process = subprocess.Popen(
        argv,
        env={**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", **(env or {})},
        cwd=ROOT,
        stdout=log or subprocess.DEVNULL,
        stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
    )
    see = f"; see {log.name}" if log else ""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{' '.join(argv[:4])} exited with {process.returncode}{see}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.02)
    process.kill()
    raise SystemExit(f"{' '.join(argv[:4])} was not ready within {timeout:g} s{see}")
