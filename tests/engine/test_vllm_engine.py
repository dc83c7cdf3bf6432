"""The `vllm` engine. vLLM needs a GPU, so its supervision is tested against a stand-in
child process (tests/standins/openai_upstream.py) that takes vLLM's flags."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from neve.config import load_settings
from neve.engine.vllm import command, environment
from tests.conftest import NEVE, free_port, offline_env, start_hub, stop_hub


def test_command_line_and_environment_from_settings() -> None:
    settings = load_settings(
        {"engine": "vllm", "model": "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B",
         "enforce_eager": True, "trust_remote_code": True, "reasoning_parser": "deepseek_r1",
         "data_dir": "/srv/neve", "vllm_extra_args": ["--max-num-seqs", "64"]},
        environ={"TENSOR_PARALLEL_SIZE": "4", "MAX_MODEL_LEN": "75000",
                 "GPU_MEMORY_UTILIZATION": "0.99", "HF_TOKEN": "hf_secret"},
    )  # fmt: skip
    argv = command(settings, port=9123, key="k3y")
    assert argv[:3] == [sys.executable, "-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert flags["--model"] == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert flags["--tensor-parallel-size"] == "4"
    assert flags["--max-model-len"] == "75000"
    assert flags["--gpu-memory-utilization"] == "0.99"
    assert flags["--download-dir"] == "/srv/neve/models"
    assert (flags["--host"], flags["--port"], flags["--api-key"]) == ("127.0.0.1", "9123", "k3y")
    assert "--enforce-eager" in argv and "--trust-remote-code" in argv
    assert argv[argv.index("--reasoning-parser") + 1] == "deepseek_r1"
    assert argv[-2:] == ["--max-num-seqs", "64"]
    assert environment(settings)["HF_TOKEN"] == "hf_secret"


def test_without_the_vllm_package_start_up_stops_with_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*NEVE, "serve", "--port", str(free_port()), "--data-dir", str(tmp_path),
         "--set", "engine=vllm"],
        env=offline_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    errors = [line for line in result.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "needs the vllm package" in errors[0]


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_stand_in_vllm_is_launched_restarted_and_stopped(tmp_path: Path) -> None:
    record = tmp_path / "launches.jsonl"
    env = offline_env(
        NEVE_VLLM_COMMAND=json.dumps([sys.executable, "-m", "tests.standins.openai_upstream"]),
        NEVE_UPSTREAM_PROBE_INTERVAL="0.2",
        HF_TOKEN="hf_test_token",
        STANDIN_RECORD=str(record),
    )
    hub = start_hub(tmp_path, "engine=vllm", "model=org/some-model", env=env)
    try:
        first = _records(record)[0]
        argv = first["argv"]
        assert isinstance(argv, list)
        assert argv[argv.index("--model") + 1] == "org/some-model"
        assert first["hf_token"] == "hf_test_token"
        # The child listens privately, behind a key only the hub knows.
        port = argv[argv.index("--port") + 1]
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 401

        ask = {"model": "org/some-model", "messages": [{"role": "user", "content": "echo me"}]}
        reply = httpx.post(f"{hub.api}/chat/completions", json=ask, timeout=30).json()
        assert reply["choices"][0]["message"]["content"] == "echo me"

        pid = first["pid"]
        assert isinstance(pid, int)
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(_records(record)) < 2 or httpx.get(f"{hub.url}/ready").status_code != 200:
            assert time.monotonic() < deadline, hub.stdout()
            time.sleep(0.1)
        second_pid = _records(record)[1]["pid"]
        assert second_pid != pid
        assert httpx.post(f"{hub.api}/chat/completions", json=ask, timeout=30).status_code == 200
    finally:
        stop_hub(hub)
    assert isinstance(second_pid, int)
    deadline = time.monotonic() + 10
    while _alive(second_pid):
        assert time.monotonic() < deadline, "the hub left vLLM running"
        time.sleep(0.1)
