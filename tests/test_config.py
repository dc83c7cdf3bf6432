"""Settings: precedence, vLLM's names, one-line errors, masked secrets."""

from __future__ import annotations

from pathlib import Path

import pytest

from neve.config import describe, load_settings, parse_assignments
from neve.errors import ConfigError
from tests.conftest import neve


def test_defaults_need_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(environ={})
    assert settings.model == "smollm2"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.models_path == settings.data_dir / "models"


def test_flags_beat_env_beat_file_beat_defaults(tmp_path: Path) -> None:
    file = tmp_path / "neve.yaml"
    file.write_text("port: 9001\nmax_num_seqs: 4\nmax_queue: 7\nlog_level: info\n")
    env = {"NEVE_PORT": "9002", "NEVE_MAX_NUM_SEQS": "5"}
    settings = load_settings({"port": 9003}, config_file=file, environ=env)
    assert settings.port == 9003  # flag
    assert settings.max_num_seqs == 5  # environment over file
    assert settings.max_queue == 7  # file over default
    assert settings.prefill_chunk == 256  # default


def test_neve_yaml_in_the_working_directory_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "neve.yaml").write_text("port: 9100\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(environ={}).port == 9100
    assert load_settings(environ={"NEVE_CONFIG": str(tmp_path / "neve.yaml")}).port == 9100


def test_vllm_container_names_are_honoured_below_their_neve_twins() -> None:
    env = {
        "MODEL": "org/some-GGUF",
        "MAX_MODEL_LEN": "2048",
        "TENSOR_PARALLEL_SIZE": "4",
        "GPU_MEMORY_UTILIZATION": "0.99",
        "HF_TOKEN": "hf_abc",
        "VLLM_API_KEY": "k1",
    }
    settings = load_settings(environ=env)
    assert settings.model == "org/some-GGUF"
    assert settings.max_model_len == 2048
    assert settings.tensor_parallel_size == 4
    assert settings.gpu_memory_utilization == 0.99
    assert settings.hf_token is not None and settings.hf_token.get_secret_value() == "hf_abc"
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "k1"
    assert load_settings(environ={**env, "NEVE_MODEL": "smollm2"}).model == "smollm2"


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"NEVE_PORT": "eighty"}, ["'port'", "'eighty'", "environment NEVE_PORT"]),
        ({"NEVE_PORT": "70000"}, ["'port'", "65535"]),
        ({"MAX_MODEL_LEN": "-1"}, ["'max_model_len'", "environment MAX_MODEL_LEN"]),
        ({"GPU_MEMORY_UTILIZATION": "1.5"}, ["'gpu_memory_utilization'", "less than or equal"]),
        ({"NEVE_LOG_LEVEL": "loud"}, ["'log_level'", "'debug'"]),
    ],
)
def test_invalid_values_give_one_line_naming_key_and_source(
    env: dict[str, str], words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ=env)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_rules_across_settings_read_plainly() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"NEVE_ENGINE": "openai"})
    assert (
        str(caught.value) == "invalid settings: engine 'openai' needs upstream_url (or upstreams)"
    )
    with pytest.raises(ConfigError, match="kv_cache_tokens"):
        load_settings(environ={"MAX_MODEL_LEN": "8192", "NEVE_KV_CACHE_TOKENS": "4096"})


def test_ray_settings_are_checked_and_shown() -> None:
    with pytest.raises(ConfigError, match=r"ray_min_replicas \(3\) must not exceed ray_max"):
        load_settings(environ={"NEVE_RAY_MIN_REPLICAS": "3", "NEVE_RAY_MAX_REPLICAS": "2"})
    with pytest.raises(ConfigError, match="kv_cache_tokens"):  # the replicas run llama.cpp
        load_settings({"engine": "ray", "max_model_len": 8192, "kv_cache_tokens": 4096})
    placed = load_settings(environ={"NEVE_RAY_RESOURCES": '{"gpu_node": 1}'})
    assert placed.ray_resources == {"gpu_node": 1.0}
    shown = {key for key, _, _ in describe(placed)}
    for knob in ("ray_address", "ray_min_replicas", "ray_max_replicas",
                 "ray_target_ongoing_requests", "ray_upscale_delay", "ray_downscale_delay",
                 "ray_num_cpus", "ray_num_gpus", "ray_resources",
                 "ray_graceful_shutdown_timeout", "ray_retries"):  # fmt: skip
        assert knob in shown


def test_list_settings_from_the_environment() -> None:
    split = load_settings(environ={"NEVE_VLLM_EXTRA_ARGS": "--swap-space 4 --seed '1 2'"})
    assert split.vllm_extra_args == ["--swap-space", "4", "--seed", "1 2"]
    as_json = load_settings(environ={"NEVE_VLLM_COMMAND": '["vllm", "serve"]'})
    assert as_json.vllm_command == ["vllm", "serve"]


def test_unknown_key_in_the_file(tmp_path: Path) -> None:
    file = tmp_path / "neve.yaml"
    file.write_text("prot: 8000\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'prot' \(from .*neve.yaml\)"):
        load_settings(config_file=file, environ={})


@pytest.mark.parametrize("text", ["port: [1, 2\n", "- just\n- a list\n"])
def test_broken_file(tmp_path: Path, text: str) -> None:
    file = tmp_path / "neve.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=r"neve\.yaml"):
        load_settings(config_file=file, environ={})


def test_a_bad_secret_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings({"api_key": 12345678}, environ={})
    assert "12345678" not in str(caught.value)


def test_set_assignments() -> None:
    assert parse_assignments(["max-queue=3", "model=a=b"]) == {"max_queue": "3", "model": "a=b"}
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_assignments(["novalue"])


def test_describe_masks_secrets() -> None:
    settings = load_settings(environ={"VLLM_API_KEY": "topsecret", "HF_TOKEN": "hf_x"})
    rows = {key: value for key, value, _ in describe(settings)}
    assert rows["api_key"] == rows["hf_token"] == "********"
    assert "topsecret" not in str(rows)
    assert rows["models_dir"].endswith("models")


def test_several_instances_need_a_shared_database(tmp_path: Path) -> None:
    """State in SQLite or in one process's memory would differ between instances."""
    ran = neve("serve", "--data-dir", str(tmp_path), "--set", "instances=3")
    assert ran.returncode == 2, ran.stdout + ran.stderr
    assert "instances (3) needs database_url" in ran.stderr and "Traceback" not in ran.stderr
    fleet = load_settings(flags={"instances": "3", "database_url": "postgresql://pg/neve"})
    assert fleet.instances == 3 and fleet.shared_database
