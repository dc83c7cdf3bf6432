"""Cortex's AI functions and search_docs in DuckDB, answered by a real hub over the shipped
model, on a real table with NULLs and bad rows. The model is small: the tests hold the
answers to their shapes (a category given, a boolean, a sentiment of Cortex's set), not to
their wisdom."""

from __future__ import annotations

import json
from collections.abc import Iterator

import duckdb
import httpx
import pytest

from neve.snowflake.ai import SENTIMENTS
from tests.api.coding_agents import logged
from tests.conftest import Hub, start_hub, stop_hub
from tests.sql.conftest import connected

CONTEXT = 1024  # the hub's max_model_len: ai_agg's rows below hold several times it


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("ai"), f"max_model_len={CONTEXT}",
                        "kv_cache_tokens=8192", "relay_max_tokens=160")  # fmt: skip
    yield started
    stop_hub(started)


@pytest.fixture
def con(hub: Hub) -> Iterator[duckdb.DuckDBPyConnection]:
    with connected(hub) as connection:
        connection.execute(
            "CREATE TABLE reviews AS SELECT * FROM (VALUES "
            "(1, 'I love this phone, the battery lasts for days.'), "
            "(2, 'Terrible support. I want my money back.'), "
            "(3, NULL), "
            "(4, 'The parcel came on Tuesday.')) t(id, body)"
        )
        yield connection


def test_ai_classify_answers_one_of_the_categories_and_null_for_null(
    con: duckdb.DuckDBPyConnection,
) -> None:
    categories = ["praise", "complaint", "shipping"]
    rows = con.execute(
        f"SELECT id, ai_classify(body, {categories}) FROM reviews ORDER BY id"
    ).fetchall()
    assert rows[2] == (3, None)
    for _, answer in rows[:2] + rows[3:]:
        assert len(answer["labels"]) == 1 and answer["labels"][0] in categories
    multi = con.execute(
        "SELECT ai_classify(body, ['battery', 'support', 'delivery'], {'output_mode': 'multi', "
        "'task_description': 'What the review is about'}) FROM reviews WHERE id = 1"
    ).fetchone()
    assert multi is not None
    assert multi[0]["labels"] and set(multi[0]["labels"]) <= {"battery", "support", "delivery"}
    # Categories that describe themselves are taken too.
    described = con.execute(
        "SELECT ai_classify(body, [{'label': 'good', 'description': 'the customer is happy'}, "
        "{'label': 'bad', 'description': 'the customer is unhappy'}]) FROM reviews WHERE id = 2"
    ).fetchone()
    assert described is not None and described[0]["labels"][0] in ("good", "bad")


def test_bad_rows_answer_null_and_the_others_their_answer(con: duckdb.DuckDBPyConnection) -> None:
    rows = con.execute(
        "SELECT ai_classify('I love it', '\"not a list\"'), "  # categories that are no array
        "ai_classify('I love it', ['a', 'a']), "  # categories that repeat
        "ai_classify('I love it', ['yes', 'no'], {'mode': 'x'}), "  # an unknown option
        "ai_extract('Ann is 30.', '42'), "  # a response format that is none
        "ai_translate('Hello', 'English', ''), "  # no target language
        "ai_classify('I love it', ['good', 'bad'])"
    ).fetchone()
    assert rows is not None
    assert rows[:5] == (None, None, None, None, None)
    assert rows[5]["labels"][0] in ("good", "bad")


def test_ai_filter_sentiment_extract_summarize_translate_similarity(
    con: duckdb.DuckDBPyConnection,
) -> None:
    rows = con.execute(
        "SELECT id, ai_filter('This review is a complaint: ' || body), ai_sentiment(body), "
        "ai_sentiment(body, ['battery', 'price']), "
        "ai_extract(body, {'product': 'Which product is named?'}), ai_summarize(body), "
        "ai_translate(body, '', 'French'), ai_similarity(body, 'a happy customer') "
        "FROM reviews ORDER BY id"
    ).fetchall()
    assert rows[2] == (3, None, None, None, None, None, None, None)
    for _, keep, overall, aspects, extracted, summary, french, similarity in rows[:2] + rows[3:]:
        assert isinstance(keep, bool)
        assert [c["name"] for c in overall["categories"]] == ["overall"]
        assert [c["name"] for c in aspects["categories"]] == ["overall", "battery", "price"]
        assert {c["sentiment"] for c in overall["categories"] + aspects["categories"]} <= set(
            SENTIMENTS
        )
        assert set(json.loads(extracted)["response"]) == {"product"}
        assert isinstance(summary, str) and summary
        assert isinstance(french, str) and french
        assert -1 <= similarity <= 1
    # Similarity is the embeddings' cosine: a text is most like itself.
    same = con.execute("SELECT ai_similarity('red apples', 'red apples')").fetchone()
    assert same is not None and same[0] == pytest.approx(1, abs=1e-4)


def test_ai_agg_reads_every_row_of_a_group_larger_than_one_context(
    con: duckdb.DuckDBPyConnection, hub: Hub
) -> None:
    con.execute(
        "CREATE TABLE notes AS SELECT i % 2 AS team, 'Note ' || i || ': the build on the "
        "release branch failed again because the integration tests timed out.' AS body "
        "FROM range(120) t(i)"
    )
    rows = con.execute(
        "SELECT team, ai_agg(body, 'What keeps going wrong?') AS answer FROM notes "
        "GROUP BY team ORDER BY team"
    ).fetchall()
    assert [team for team, _ in rows] == [0, 1]
    assert all(isinstance(answer, str) and answer for _, answer in rows)
    # Every row was read: each team's rows hold more tokens than one context, and the
    # batch's prompts (both teams, groups and their combination) more than two.
    assert max(prompt for _, prompt, _ in logged(hub, "/relay/ai/agg")) > 2 * CONTEXT
    none = con.execute("SELECT ai_agg(body, 'x') FROM reviews WHERE body IS NULL").fetchone()
    assert none == (None,)


def test_search_docs_gives_the_passages_as_rows(con: duckdb.DuckDBPyConnection, hub: Hub) -> None:
    note = b"# Boat rules\n\nBoats in the Larsvik harbour must moor at the blue pier."
    files = {"files": ("boats.md", note, "text/markdown")}
    sent = httpx.post(f"{hub.url}/v1/documents", files=files, timeout=120)
    assert sent.status_code == 201, sent.text
    rows = con.execute(
        "SELECT title, text, score FROM search_docs('where do boats moor', k := 3)"
    ).fetchall()
    assert rows and rows[0][0] == "Boat rules" and "blue pier" in rows[0][1]
    filtered = con.execute(
        "SELECT title FROM search_docs('where do boats moor', {'title': 'Elsewhere'})"
    ).fetchall()
    assert filtered == []
