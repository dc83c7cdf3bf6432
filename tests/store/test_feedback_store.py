"""Feedback rows: written once, filtered, filled from the stored answer, exported."""

from __future__ import annotations

import datetime as dt
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from neve.store import conversations
from neve.store.db import Store
from neve.store.feedback import (
    COLUMNS,
    FeedbackFilter,
    NotYours,
    add_feedback,
    arrow_table,
    find_feedback,
)


def test_a_retried_run_id_is_stored_once(store: Store) -> None:
    first, new = add_feedback(store, {"score": 1, "run_id": "r-1", "comment": "good"}, "ann")
    again, new_again = add_feedback(store, {"score": -1, "run_id": "r-1"}, "ann")
    assert (new, new_again) == (True, False)
    assert again == first
    assert len(find_feedback(store, FeedbackFilter())) == 1


def test_one_new_run_id_written_at_once_by_many_gives_one_row(store: Store) -> None:
    # All threads look for the run_id before any has stored it; on PostgreSQL the losers'
    # inserts then break the primary key (SQLite serialises writers first).
    gate = threading.Barrier(8)

    def write(n: int) -> tuple[dict[str, object], bool]:
        gate.wait()
        return add_feedback(store, {"score": 1, "run_id": "same", "comment": f"w{n}"}, "ann")

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(write, range(8)))
    assert sum(new for _, new in results) == 1
    rows = find_feedback(store, FeedbackFilter())
    assert len(rows) == 1
    assert all(row == rows[0] for row, _ in results)


def test_filters(store: Store) -> None:
    for score, user, model in [(1, "ann", "a"), (-1, "ann", "b"), (1, "ben", "a")]:
        add_feedback(store, {"score": score, "model": model}, user)
    assert len(find_feedback(store, FeedbackFilter(score=1))) == 2
    assert [r["model"] for r in find_feedback(store, FeedbackFilter(user="ann"))] == ["a", "b"]
    assert len(find_feedback(store, FeedbackFilter(model="a", user="ben"))) == 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    assert find_feedback(store, FeedbackFilter(since=later)) == []
    assert len(find_feedback(store, FeedbackFilter(until=later))) == 3
    assert len(find_feedback(store, FeedbackFilter(), limit=2, offset=2)) == 1
    newest = find_feedback(store, FeedbackFilter(), limit=2, newest_first=True)
    assert [(r["username"], r["model"]) for r in newest] == [("ben", "a"), ("ann", "b")]


def test_a_message_id_fills_prompt_and_answer_for_its_owner_only(store: Store) -> None:
    chat = conversations.create(store, "ann", "t")
    conversations.add_message(store, "ann", chat["id"], {"role": "user", "content": "Q?"})
    answer = conversations.add_message(
        store, "ann", chat["id"], {"role": "assistant", "content": "A.", "model": "m"}
    )
    row, _ = add_feedback(store, {"score": -1, "message_id": answer["id"]}, "ann")
    assert (row["user_prompt"], row["assistant_response"], row["model"]) == ("Q?", "A.", "m")
    assert row["conversation_id"] == chat["id"]
    with pytest.raises(NotYours):
        add_feedback(store, {"score": -1, "message_id": answer["id"]}, "ben")


def test_concurrent_writers_lose_no_row(store: Store) -> None:
    def write(writer: int) -> None:
        for i in range(20):
            add_feedback(store, {"score": 1, "comment": f"{writer}-{i}"}, f"user{writer}")

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(write, range(50)))
    rows = find_feedback(store, FeedbackFilter())
    assert len(rows) == 1000
    assert len({r["comment"] for r in rows}) == 1000


def test_export_table_has_the_old_columns_even_when_empty(store: Store) -> None:
    empty = arrow_table([])
    assert empty.num_rows == 0 and empty.column_names == COLUMNS
    for old in ("run_id", "timestamp", "user_prompt", "assistant_response", "score", "comment"):
        assert old in COLUMNS
    add_feedback(store, {"score": 1, "prompt": "p", "response": "r"}, "ann")
    table = arrow_table(find_feedback(store, FeedbackFilter()))
    assert table.column("user_prompt").to_pylist() == ["p"]
