"""neve's own OpenAPI document, fuzzed against a real hub: Schemathesis generates valid and
invalid requests for every operation from the document and runs every check it has (no
server error, responses, status codes, content types and headers as documented, valid data
accepted, invalid data refused, stateful sequences). Bounded in examples and time.

The exclusions are named, with why, in tests/fuzz/hooks.py. NEVE_FUZZ_SEED and
NEVE_FUZZ_EXAMPLES change the run; the default seed keeps CI repeatable."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import offline_env, start_hub, stop_hub

SEED = os.environ.get("NEVE_FUZZ_SEED", "1")
EXAMPLES = os.environ.get("NEVE_FUZZ_EXAMPLES", "15")
BUDGET_S = 240  # the fuzzing and stateful phases stop when it is spent


def test_every_operation_holds_to_the_spec(
    tmp_path: Path, models_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A short context keeps each generated answer short: the fuzzer asks for many.
    hub = start_hub(tmp_path, f"models_dir={models_dir}", "max_model_len=256")
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{hub.url}/openapi.json",
             "--checks", "all", "--max-examples", EXAMPLES, "--seed", SEED,
             "--max-time", str(BUDGET_S), "--workers", "2", "--request-timeout", "60",
             "--max-response-time", "60", "--generation-database", "none", "--no-color"],
            env=offline_env(SCHEMATHESIS_HOOKS="tests.fuzz.hooks"),
            capture_output=True, text=True, timeout=BUDGET_S + 300,
        )  # fmt: skip
    finally:
        stop_hub(hub)
    summary = run.stdout[run.stdout.rfind("SUMMARY") :] or run.stdout[-4000:]
    with capsys.disabled():  # the counts belong in the test log
        print(f"\nschemathesis (seed {SEED}, {EXAMPLES} examples per operation):\n{summary}")
    assert run.returncode == 0, run.stdout[-20000:] + run.stderr[-4000:]
    selected = re.search(r"Selected: (\d+)/(\d+)\s+Tested: (\d+)", summary)
    assert selected is not None, summary
    assert selected[1] == selected[2] == selected[3], "every operation is fuzzed"
    assert int(selected[3]) >= 24
