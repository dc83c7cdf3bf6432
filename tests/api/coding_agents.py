"""What the tests of coding agents' CLIs (Claude Code, Codex CLI) share: the CLI installed
from the npm registry, and the hub's request log, where the proof of an exchange is read
(not in what the shipped model answers)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx

from tests.conftest import Hub


def npm_install(prefix: Path, package: str, command: str) -> Path:
    """`package` (name@version) installed under `prefix`; the path of its `command`."""
    npm = shutil.which("npm")
    assert npm, "npm is missing: scripts/system-packages.sh test installs it"
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                    package], check=True, capture_output=True, timeout=600)  # fmt: skip
    return prefix / "node_modules" / ".bin" / command


def logged(hub: Hub, route: str) -> list[tuple[int, int, int]]:
    """(status, prompt, completion tokens) of every request to `route`, oldest first."""
    httpx.get(f"{hub.api}/monitoring/summary", timeout=30).raise_for_status()  # flushes the log
    with sqlite3.connect(hub.log.parent / "data" / "neve.db") as db:
        rows = db.execute(
            "SELECT status, prompt_tokens, completion_tokens FROM request_log "
            "WHERE route = ? ORDER BY id",
            (route,),
        ).fetchall()
    return [(int(s), int(p or 0), int(c or 0)) for s, p, c in rows]
