"""Claude Code, Anthropic's own CLI (from the npm registry), completes a request against a
hub through /v1/messages: the proof is the exchange, read from the hub's request log, not
what the shipped model says. Its own system prompt and tools would need far more than
the shipped model's context, so it runs with a short system prompt, no tools, and answers
bounded by CLAUDE_CODE_MAX_OUTPUT_TOKENS (it asks for 32,000 tokens otherwise).
Codex CLI, the other such client, speaks only OpenAI's Responses API, which neve does not
serve yet."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.conftest import Hub, offline_env

VERSION = "2.1.328"


@pytest.fixture(scope="module")
def claude(tmp_path_factory: pytest.TempPathFactory) -> Path:
    npm = shutil.which("npm")
    assert npm, "npm is missing: scripts/system-packages.sh test installs it"
    prefix = tmp_path_factory.mktemp("claude-code")
    subprocess.run([npm, "install", "--prefix", str(prefix), "--no-audit", "--no-fund",
                    f"@anthropic-ai/claude-code@{VERSION}"],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    return prefix / "node_modules" / ".bin" / "claude"


def _messages_logged(hub: Hub) -> list[tuple[int, int, int]]:
    """(status, prompt, completion tokens) of every /v1/messages request, oldest first."""
    httpx.get(f"{hub.api}/monitoring/summary", timeout=30).raise_for_status()  # flushes the log
    with sqlite3.connect(hub.log.parent / "data" / "neve.db") as db:
        rows = db.execute(
            "SELECT status, prompt_tokens, completion_tokens FROM request_log "
            "WHERE route = '/v1/messages' ORDER BY id"
        ).fetchall()
    return [(int(s), int(p or 0), int(c or 0)) for s, p, c in rows]


def test_claude_code_completes_a_request_through_the_messages_api(
    hub: Hub, claude: Path, tmp_path: Path
) -> None:
    before = _messages_logged(hub)
    env = offline_env(
        HOME=str(tmp_path), ANTHROPIC_BASE_URL=hub.url, ANTHROPIC_API_KEY="unused",
        ANTHROPIC_DEFAULT_HAIKU_MODEL="smollm2", CLAUDE_CODE_MAX_OUTPUT_TOKENS="48",
        DISABLE_TELEMETRY="1", CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )  # fmt: skip
    ran = subprocess.run(
        [str(claude), "-p", "--bare", "--tools", "", "--max-turns", "1", "--model", "smollm2",
         "--system-prompt", "Answer in one short sentence.", "What is the capital of France?"],
        env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip
    answered = [row for row in _messages_logged(hub)[len(before) :] if row[0] == 200]
    assert answered, (_messages_logged(hub), ran.stdout + ran.stderr)
    _, prompt, completion = answered[-1]
    assert prompt > 10 and 0 < completion <= 48
    # Claude Code samples at its default temperature: the model either ends within the
    # bound, and Claude Code prints its answer, or reaches it, and Claude Code reads the
    # stop_reason max_tokens and says so. Either way it understood the answer.
    if ran.returncode == 0:
        assert ran.stdout.strip()
    else:
        assert "exceeded the 48 output token maximum" in ran.stdout + ran.stderr
