"""complete() and embed() in DuckDB, answered by a real hub."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from tests.conftest import NEVE, Hub, offline_env, start_hub, stop_hub
from tests.sql.conftest import connected


@pytest.fixture(scope="module")
def logged_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub that logs each relay batch, so the tests can count them."""
    started = start_hub(tmp_path_factory.mktemp("duck"), "log_level=info")
    yield started
    stop_hub(started)


@pytest.fixture
def con(logged_hub: Hub) -> Iterator[duckdb.DuckDBPyConnection]:
    with connected(logged_hub) as connection:
        yield connection


def _relay_batches(hub: Hub) -> int:
    return hub.stdout().count("relay complete batch done")


def test_two_hundred_rows_give_two_hundred_completions_in_one_batch(
    con: duckdb.DuckDBPyConnection, logged_hub: Hub
) -> None:
    con.sql("CREATE TABLE tickets AS SELECT i AS id, 'Ticket ' || i AS body FROM range(200) t(i)")
    before = _relay_batches(logged_hub)
    rows = con.sql(
        "SELECT id, complete('Summarize: ' || body, {'max_tokens': 2, 'system': 'Be brief.'}) "
        "FROM tickets ORDER BY id"
    ).fetchall()
    assert [r[0] for r in rows] == list(range(200))
    assert all(isinstance(r[1], str) for r in rows)
    # DuckDB hands the function one vector of 200 rows: one /relay batch.
    assert _relay_batches(logged_hub) == before + 1


def test_nulls_stay_null_and_both_forms_work(con: duckdb.DuckDBPyConnection) -> None:
    row = con.execute(
        "SELECT complete(NULL), "
        "complete('Count: one, two,', '{\"max_tokens\": 3, \"temperature\": 0}'), "
        "complete('Count: one, two,', {'max_tokens': 3, 'temperature': 0})"
    ).fetchone()
    assert row is not None
    assert row[0] is None
    assert row[1] == row[2] and row[1]


def test_complete_takes_a_schema_as_cortex_does(con: duckdb.DuckDBPyConnection) -> None:
    options = (
        '{"max_tokens": 60, "response_format": {"type": "json", "schema": {"type": "object", '
        '"properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"]}}}'
    )
    rows = con.execute(
        "SELECT json_extract_string(complete('Name a city.', ?), '$.city') FROM range(3)",
        [options],
    ).fetchall()
    assert all(isinstance(r[0], str) for r in rows), rows


def test_embed_returns_float_384(con: duckdb.DuckDBPyConnection) -> None:
    row = con.execute(
        "SELECT typeof(embed('cats')), len(embed('cats')), "
        "list_cosine_similarity(embed('a cat on a mat'), embed('a kitten on a rug')) > "
        "list_cosine_similarity(embed('a cat on a mat'), embed('quarterly revenue')), "
        "embed(NULL) IS NULL"
    ).fetchone()
    assert row == ("FLOAT[384]", 384, True, True)


def test_register_finds_the_hub_through_neve_url(
    logged_hub: Hub, monkeypatch: pytest.MonkeyPatch
) -> None:
    import neve.sql

    monkeypatch.setenv("NEVE_URL", logged_hub.url)
    connection = duckdb.connect()
    neve.sql.register(connection)
    row = connection.execute("SELECT complete('Say hi.', {'max_tokens': 2})").fetchone()
    connection.close()
    assert row is not None and isinstance(row[0], str) and row[0]


def test_neve_sql_reads_csv_and_prints_a_table(logged_hub: Hub, tmp_path: Path) -> None:
    csv = tmp_path / "tickets.csv"
    csv.write_text("id,body\n1,Printer is on fire\n2,\n")
    query = (
        f"SELECT id, complete(body, {{'max_tokens': 3}}) IS NULL AS empty "
        f"FROM read_csv('{csv}') ORDER BY id"
    )
    result = subprocess.run(
        [*NEVE, "sql", query, "--url", logged_hub.url],
        env=offline_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if "│" in line]
    assert "False" in lines[0] and "True" in lines[1]


def test_neve_sql_reports_a_bad_query_in_one_line(logged_hub: Hub) -> None:
    result = subprocess.run(
        [*NEVE, "sql", "SELECT * FROM nowhere", "--url", logged_hub.url],
        env=offline_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr
