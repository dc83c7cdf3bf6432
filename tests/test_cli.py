"""The `neve` command: as a newcomer runs it against a hub (a process), and in this
process (typer's CliRunner) for the commands that need none."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
from pathlib import Path

import httpx

from tests.conftest import NEVE, Hub, free_port, neve, offline_env


def test_chat_one_message_streams_an_answer(hub: Hub) -> None:
    result = neve(
        "chat", "What is the capital of France?", "--system", "You are a helpful assistant.",
        "--temperature", "0", "--max-tokens", "16", NEVE_URL=hub.url,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout


def test_chat_interactive_keeps_history(hub: Hub) -> None:
    """Each turn sends the conversation so far: the second turn's prompt holds the first
    question and the first answer, as the hub's request log counts its tokens."""
    before = _chat_requests(hub)
    process = subprocess.run(
        [*NEVE, "chat", "--url", hub.url, "--max-tokens", "8", "--temperature", "0"],
        input="Hello there\nAnd again\n\n",
        env=offline_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.count("> ") >= 2
    turns = _chat_requests(hub)[len(before) :]
    assert len(turns) == 2, turns
    (first_prompt, first_answer), (second_prompt, _) = turns
    # Without the history the second prompt would cost about what the first did.
    assert first_answer > 0 and second_prompt >= first_prompt + first_answer


def _chat_requests(hub: Hub) -> list[tuple[int, int]]:
    """(prompt, completion) tokens of every chat request the hub has logged, oldest first."""
    httpx.get(f"{hub.api}/monitoring/summary", timeout=30).raise_for_status()  # flushes the log
    with sqlite3.connect(hub.log.parent / "data" / "neve.db") as db:
        rows = db.execute(
            "SELECT prompt_tokens, completion_tokens FROM request_log "
            "WHERE route = '/v1/chat/completions' AND status = 200 ORDER BY id"
        ).fetchall()
    return [(int(p), int(c)) for p, c in rows]


def test_models_lists_the_hub_model(hub: Hub) -> None:
    result = neve("models", "--url", hub.url)
    assert result.returncode == 0
    assert "smollm2" in result.stdout and "4096" in result.stdout


def test_client_commands_without_a_hub_say_so() -> None:
    result = neve("models", "--url", f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "no hub answers" in result.stderr
    assert "Traceback" not in result.stderr


def test_config_show_masks_secrets_and_reflects_flags(tmp_path: Path) -> None:
    result = neve("config", "show", "--set", "max_queue=3", VLLM_API_KEY="topsecret")
    assert result.returncode == 0, result.stderr
    assert "topsecret" not in result.stdout
    assert "********" in result.stdout
    row = next(line for line in result.stdout.splitlines() if "max_queue" in line)
    assert " 3 " in row


def test_invalid_setting_stops_start_up_with_one_line() -> None:
    result = neve("serve", "--port", "99999")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("error: invalid setting 'port'")


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = neve("serve", "--port", port)
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_a_database_that_cannot_be_opened_stops_the_hub_in_one_line(tmp_path: Path) -> None:
    for url, said in [
        ("postgresql+psycopg://neve:pw@127.0.0.1:9/neve", "cannot migrate the database"),
        ("not a url", "cannot use database_url"),
    ]:
        result = neve(
            "serve", "--port", str(free_port()), "--data-dir", str(tmp_path),
            "--set", f"database_url={url}",
        )  # fmt: skip
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and said in lines[0], result.stderr
        assert ":pw@" not in result.stderr


def test_feedback_export_writes_csv_and_parquet(tmp_path: Path) -> None:
    import pyarrow.csv as pa_csv
    import pyarrow.parquet as pq

    from neve.store.db import Store
    from neve.store.feedback import add_feedback

    store = Store(f"sqlite:///{tmp_path / 'neve.db'}")
    store.migrate()
    add_feedback(store, {"score": 1, "prompt": "Q1", "response": "A1", "model": "m"}, "ann")
    add_feedback(store, {"score": -1, "prompt": "Q2", "response": "A2", "comment": "no"}, "bo")
    store.close()

    for name in ("all.csv", "all.parquet"):
        done = neve("feedback", "export", "-o", str(tmp_path / name), "--data-dir", str(tmp_path))
        assert done.returncode == 0, done.stderr
        assert "wrote 2 feedback rows" in done.stdout
    table = pq.read_table(tmp_path / "all.parquet")
    assert table.column("user_prompt").to_pylist() == ["Q1", "Q2"]
    assert table.column("score").to_pylist() == [1, -1]
    assert pa_csv.read_csv(tmp_path / "all.csv").column("assistant_response").to_pylist() == [
        "A1", "A2",
    ]  # fmt: skip

    only_down = neve(
        "feedback", "export", "-o", str(tmp_path / "down.jsonl"), "--score", "-1",
        "--data-dir", str(tmp_path),
    )  # fmt: skip
    assert "wrote 1 feedback rows" in only_down.stdout
    bad_time = neve("feedback", "export", "-o", "x.csv", "--since", "yesterday")
    assert bad_time.returncode == 2 and "--since: 'yesterday'" in bad_time.stderr
    bad_type = neve("feedback", "export", "-o", "x.txt", "--data-dir", str(tmp_path))
    assert bad_type.returncode == 2 and "unsupported file type" in bad_type.stderr
