"""Claude Code, Anthropic's own CLI (from the npm registry), completes a request against a
hub through /v1/messages: the proof is the exchange, read from the hub's request log, not
what the shipped model says. Its own system prompt and tools would need far more than
the shipped model's context, so it runs with a short system prompt, no tools, and answers
bounded by CLAUDE_CODE_MAX_OUTPUT_TOKENS (it asks for 32,000 tokens otherwise).
(Codex CLI, over the Responses API: test_codex.py.)"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.api.coding_agents import logged, npm_install
from tests.conftest import Hub, offline_env

VERSION = "2.1.328"
ROUTE = "/v1/messages"


@pytest.fixture(scope="module")
def claude(tmp_path_factory: pytest.TempPathFactory) -> Path:
    prefix = tmp_path_factory.mktemp("claude-code")
    return npm_install(prefix, f"@anthropic-ai/claude-code@{VERSION}", "claude")


def test_claude_code_completes_a_request_through_the_messages_api(
    hub: Hub, claude: Path, tmp_path: Path
) -> None:
    before = logged(hub, ROUTE)
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
    answered = [row for row in logged(hub, ROUTE)[len(before) :] if row[0] == 200]
    assert answered, (logged(hub, ROUTE), ran.stdout + ran.stderr)
    _, prompt, completion = answered[-1]
    assert prompt > 10 and 0 < completion <= 48
    # Claude Code samples at its default temperature: the model either ends within the
    # bound, and Claude Code prints its answer, or reaches it, and Claude Code reads the
    # stop_reason max_tokens and says so. Either way it understood the answer.
    if ran.returncode == 0:
        assert ran.stdout.strip()
    else:
        assert "exceeded the 48 output token maximum" in ran.stdout + ran.stderr
