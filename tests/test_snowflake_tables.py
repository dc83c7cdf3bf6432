"""Feedback and the request log copied into Snowflake tables. Snowflake here is fakesnow
(the maintained emulator on DuckDB, tests/standins/emulator.py), spoken to by the real
snowflake-connector-python: the tables are created and the MERGE statements run there."""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from snowflake.connector import ProgrammingError

from neve.api.snowflake_tables import SnowflakeTables
from neve.snowflake import session
from neve.snowflake.settings import SpcsSettings
from neve.store import outbox
from neve.store.db import Store
from neve.store.feedback import add_feedback
from neve.store.usage import RequestLogWriter
from tests.conftest import free_port, offline_env, start_hub, stop_hub
from tests.standins.emulator import Emulator

FEEDBACK = "NEVE_DB.PUBLIC.NEVE_FEEDBACK"
REQUEST_LOG = "NEVE_DB.PUBLIC.NEVE_REQUEST_LOG"


@pytest.fixture
def snowflake(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(free_port(), tmp_path / "snowflake", tmp_path / "fakesnow.log")
    emulator.start()
    # What `neve deploy spcs up` creates before the hub runs.
    emulator.rows("CREATE DATABASE IF NOT EXISTS NEVE_DB")
    emulator.rows("CREATE SCHEMA IF NOT EXISTS NEVE_DB.PUBLIC")
    yield emulator
    emulator.stop()


def tables_for(store: Store, snowflake: Emulator, rows: int = 2) -> SnowflakeTables:
    connect = functools.partial(
        session.connect, SpcsSettings(), snowflake.env, timeout=5, in_schema=True
    )
    names = {"feedback": FEEDBACK, "request_log": REQUEST_LOG}
    return SnowflakeTables(store, connect, names, rows)


def feedback(store: Store, n: int, score: int = 1) -> list[str]:
    return [
        add_feedback(store, {"score": score, "prompt": f"q{i}", "response": f"a{i}"}, "ana")[0][
            "run_id"
        ]
        for i in range(n)
    ]


def test_rows_land_once_across_a_lost_answer_and_a_restart(
    tmp_path: Path, snowflake: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'neve.db'}")
    store.migrate()
    ids = feedback(store, 5)
    log = RequestLogWriter(store, capacity=100)
    for status in (200, 200, 429):
        log.add({"time": dt.datetime.now(dt.UTC), "route": "/v1/chat/completions", "model": "m",
                 "latency_ms": 12.5, "status": status, "username": "ana"})  # fmt: skip
    assert log.flush()

    # Snowflake took the third batch, but its answer was lost before the store marked it.
    marks = 0
    real_mark = outbox.mark

    def lost(*args: object) -> None:
        nonlocal marks
        marks += 1
        if marks == 3:
            raise ConnectionError("the answer never came")
        real_mark(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(outbox, "mark", lost)
    tables = tables_for(store, snowflake)
    with pytest.raises(ConnectionError):
        tables.send()
    assert outbox.backlog(store, "feedback") == 1  # 2 + 2 marked, the fifth waits
    assert tables.send() == 1 + 3  # the fifth again, then the request log
    monkeypatch.setattr(outbox, "mark", real_mark)

    # A restarted hub: a new sender over the same store sends nothing twice.
    again = tables_for(store, snowflake)
    assert again.send() == 0
    ids += feedback(store, 1, score=-1)
    assert again.send() == 1

    landed = snowflake.rows(f"SELECT RUN_ID, SCORE, USER_PROMPT FROM {FEEDBACK}")
    assert sorted(r[0] for r in landed) == sorted(ids)  # each once
    assert sorted(r[1] for r in landed) == [-1, 1, 1, 1, 1, 1]
    statuses = snowflake.rows(f"SELECT STATUS, ROUTE, USERNAME FROM {REQUEST_LOG} ORDER BY ID")
    assert statuses == [(200, "/v1/chat/completions", "ana"), (200, "/v1/chat/completions", "ana"),
                        (429, "/v1/chat/completions", "ana")]  # fmt: skip


def test_rows_wait_in_the_store_while_snowflake_is_away(
    tmp_path: Path, snowflake: Emulator
) -> None:
    store = Store(f"sqlite:///{tmp_path / 'neve.db'}")
    store.migrate()
    tables = tables_for(store, snowflake)
    first = feedback(store, 1)
    assert tables.send() == 1

    snowflake.stop()
    waiting = feedback(store, 3)
    started = time.monotonic()
    with pytest.raises(Exception, match=r"connect|Connection"):
        tables.send()
    assert time.monotonic() - started < 60
    assert outbox.backlog(store, "feedback") == 3

    snowflake.start()  # the same databases, as an account that was briefly unreachable
    assert tables.send() == 3
    landed = snowflake.rows(f"SELECT RUN_ID FROM {FEEDBACK}")
    assert sorted(r[0] for r in landed) == sorted(first + waiting)


def test_a_hub_copies_feedback_and_its_requests(tmp_path: Path, snowflake: Emulator) -> None:
    env = offline_env(**snowflake.env)
    hub = start_hub(tmp_path, "snowflake_tables=on", "snowflake_export_interval=0.2", env=env)
    try:
        sent = hub.http.post("/v1/feedback", json={"score": 1, "prompt": "hi", "response": "yo"})
        assert sent.status_code in (200, 201), sent.text
        run_id = sent.json()["run_id"]
        assert hub.http.get("/v1/models").status_code == 200
        deadline = time.monotonic() + 30
        while True:
            try:  # the hub creates the tables with its first copy
                feedback_rows = snowflake.rows(f"SELECT RUN_ID FROM {FEEDBACK}")
                routes = {r[0] for r in snowflake.rows(f"SELECT ROUTE FROM {REQUEST_LOG}")}
            except ProgrammingError as exc:
                assert "does not exist" in str(exc)
                feedback_rows, routes = [], set()
            if feedback_rows and "/v1/models" in routes:
                break
            assert time.monotonic() < deadline, hub.stdout()
            time.sleep(0.2)
        assert "snowflake.connector" not in hub.stdout()  # its chatter kept out of the log
        assert feedback_rows == [(run_id,)]
    finally:
        stop_hub(hub)
