"""Codex CLI, OpenAI's coding agent (from the npm registry), completes a request against a
hub with neve as a custom model provider on the Responses wire API: the proof is the
exchange, read from the hub's request log, not what the shipped model says. Codex's own
instructions and tools would need far more than the shipped model's context, so it runs
with one line of instructions and its optional tools off; it sends no output limit (nor a
temperature), so the hub's context (max_model_len) bounds the answer."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.coding_agents import logged, npm_install
from tests.conftest import Hub, offline_env, start_hub, stop_hub

VERSION = "0.169.0"
ROUTE = "/v1/responses"
# Codex's optional tools and features, off: what is left is its request_user_input tool.
SLIM = ["features.goals=false", "features.multi_agent=false", "features.shell_tool=false",
        "features.unified_exec=false", "features.view_image=false", "features.apps=false",
        "features.skill_search=false", "features.image_generation=false",
        "web_search=disabled", "agents.enabled=false"]  # fmt: skip


@pytest.fixture(scope="module")
def codex(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return npm_install(tmp_path_factory.mktemp("codex"), f"@openai/codex@{VERSION}", "codex")


@pytest.fixture(scope="module")
def bounded_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("codex-hub"), "max_model_len=2048")
    yield started
    stop_hub(started)


def test_codex_completes_a_request_through_the_responses_api(
    bounded_hub: Hub, codex: Path, tmp_path: Path
) -> None:
    home = tmp_path / "codex-home"
    home.mkdir()
    (home / "instructions.md").write_text("Answer in one short sentence.\n")
    (home / "config.toml").write_text(
        'model = "smollm2"\nmodel_provider = "neve"\n'
        f'model_instructions_file = "{home / "instructions.md"}"\n\n'
        '[model_providers.neve]\nname = "neve"\n'
        f'base_url = "{bounded_hub.api}"\nenv_key = "NEVE_API_KEY"\nwire_api = "responses"\n'
        "request_max_retries = 0\nstream_max_retries = 0\n"
    )
    flags = [arg for setting in SLIM for arg in ("-c", setting)]
    ran = subprocess.run(
        [str(codex), "exec", "--skip-git-repo-check", *flags, "What is the capital of France?"],
        env=offline_env(HOME=str(tmp_path), CODEX_HOME=str(home), NEVE_API_KEY="unused"),
        cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    answered = [row for row in logged(bounded_hub, ROUTE) if row[0] == 200]
    assert answered, (logged(bounded_hub, ROUTE), ran.stdout, ran.stderr)
    if len(answered) > 1:
        # A third way it goes at the default temperature: the model calls Codex's one tool
        # (request_user_input, which `exec` cannot answer), Codex sends the call and its
        # output back, each turn continuing the last, until the context is full, which
        # Codex then says. Every turn is a Responses exchange done right.
        prompts = [p for _, p, _ in answered]
        assert prompts == sorted(set(prompts)), answered  # each turn carries the last
        assert "out of room in the model's context window" in ran.stderr, ran.stderr[-2000:]
        assert all(s == 200 for s, _, _ in logged(bounded_hub, ROUTE))
        return
    _, prompt, completion = answered[0]
    # Its instructions, environment and tool make a prompt of hundreds of tokens.
    assert prompt > 300 and completion > 0
    # Codex samples at the default temperature and sets no output limit, so the small
    # model either stops (Codex prints its final message) or runs to the end of the
    # context, which the hub reports as incomplete for max_output_tokens and Codex says
    # so: both are the Responses exchange done right; anything else fails.
    if completion < 2048 - prompt:
        assert ran.returncode == 0 and ran.stdout.strip(), (ran.stdout, ran.stderr)
    else:
        assert "Incomplete response returned, reason: max_output_tokens" in ran.stderr
