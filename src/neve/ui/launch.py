"""Starting the Streamlit app as a child process, beside the API (`neve up`) or alone
(`neve ui`). The app learns where the API is from NEVE_URL."""

from __future__ import annotations

import ctypes
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

from neve.config import Settings

APP = Path(__file__).with_name("app.py")


def command(settings: Settings) -> list[str]:
    upload_mb = max(1, math.ceil(settings.rag_max_upload_bytes / 2**20))
    options = {
        "server.address": settings.host,
        "server.port": settings.ui_port,
        "server.headless": "true",  # never opens a browser
        "server.fileWatcherType": "none",
        "server.maxUploadSize": upload_mb,  # the API's own limit, rounded up to MB
        "browser.gatherUsageStats": "false",  # offline: nothing is sent anywhere
        "client.toolbarMode": "minimal",
        "client.showErrorDetails": "none",  # errors are shown as messages, not tracebacks
        "logger.level": settings.log_level,
    }
    flags = [part for key, value in options.items() for part in (f"--{key}", str(value))]
    return [sys.executable, "-m", "streamlit", "run", str(APP), *flags]


def start(settings: Settings, api_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NEVE_URL": api_url}
    # Streamlit's own banner would repeat the address the hub prints.
    linux = sys.platform == "linux"
    return subprocess.Popen(command(settings), env=env, stdout=subprocess.DEVNULL,
                            preexec_fn=_end_with_parent if linux else None)  # fmt: skip


def stop(process: subprocess.Popen[bytes], timeout: float = 5) -> int:
    """End the UI: politely, then, after `timeout` seconds, not. Returns its exit code."""
    process.terminate()
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


# Looked up here, in the hub, not in the forked child: a child that called dlopen while
# another of the hub's threads was inside it (llama.cpp loading its CPU backend as the
# model loads) died in the dynamic loader ("dl_open_worker_begin: Assertion").
_PRCTL = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _end_with_parent() -> None:
    """In the child: SIGTERM when the hub's process ends, however it ends. uvicorn re-raises
    the signal that stopped it once it has shut down, so no clean-up code of the hub's
    runs after; the kernel's parent-death signal does not depend on it."""
    pr_set_pdeathsig = 1
    assert _PRCTL is not None
    _PRCTL(pr_set_pdeathsig, signal.SIGTERM)
