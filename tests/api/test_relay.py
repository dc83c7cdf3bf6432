"""/relay and /relay/embed: Snowflake's service-function batch protocol over the real model."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest

from tests.conftest import AppHub, Hub, start_hub, stop_hub

# What Snowflake sends with every batch (its documentation lists these headers).
SNOWFLAKE_HEADERS = {
    "sf-external-function-format": "json",
    "sf-external-function-format-version": "1.0",
    "sf-external-function-current-query-id": "01b2c3d4-0000-1111-0000-000000000001",
}


def relay(
    hub: AppHub | Hub, body: Any, *, path: str = "/relay", batch_id: str | None = None
) -> httpx.Response:
    headers = dict(SNOWFLAKE_HEADERS)
    if batch_id:
        headers["sf-external-function-query-batch-id"] = batch_id
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return hub.http.post(path, content=content, headers=headers)


def test_every_row_answered_once_with_its_own_index(app_hub: AppHub) -> None:
    body = {
        "data": [
            [7, "Say hello."],
            [3, None],
            [0, "Name a fruit.", {"max_tokens": 4, "temperature": 0}],
            [12, "Count: one, two,", None],
            [5, [{"role": "user", "content": "Hi"}], {"max_tokens": 3}],
        ]
    }
    reply = relay(app_hub, body)
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert [row[0] for row in data] == [7, 3, 0, 12, 5]
    answers = dict((i, r) for i, r in data)
    assert answers[3] is None  # SQL NULL in, NULL out
    assert all(isinstance(answers[i], str) and answers[i] for i in (7, 0, 12, 5))


def test_options_follow_cortex_names(app_hub: AppHub) -> None:
    # Greedy margins >= 0.8 logits: the asks after the first read the prompt from the cache.
    row = ["Count from 1 to 10.", {"max_tokens": 3, "temperature": 0, "system": "Be brief."}]
    first = relay(app_hub, {"data": [[0, *row]]}).json()["data"][0][1]
    again = relay(app_hub, {"data": [[0, *row]]}).json()["data"][0][1]
    assert first == again  # temperature 0
    as_json_text = relay(app_hub, {"data": [[0, row[0], json.dumps(row[1])]]}).json()
    assert as_json_text["data"][0][1] == first


def test_a_cortex_response_format_gives_json_that_validates(app_hub: AppHub) -> None:
    schema = {"type": "object", "properties": {"sentiment": {"enum": ["good", "bad"]},
                                               "stars": {"type": "integer"}},
              "required": ["sentiment", "stars"]}  # fmt: skip
    options = {"max_tokens": 60, "temperature": 0.8,
               "response_format": {"type": "json", "schema": schema}}  # fmt: skip
    rows = [[i, f"Review {i}: the soup was cold.", options] for i in range(4)]
    rows.append([4, "no schema", {"response_format": {"type": "json", "schema": {
        "type": "integer", "maximum": 3}}}])  # fmt: skip
    data = relay(app_hub, {"data": rows}).json()["data"]
    for _, answer in data[:4]:
        jsonschema.validate(json.loads(answer), schema)
    assert data[4] == [4, None]  # a schema the grammar cannot enforce fails its row


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (b"{not json", ["not valid JSON"]),
        ({"rows": []}, ['"data"']),
        ({"data": {"0": "x"}}, ['"data" must be an array']),
        ({"data": ["just text"]}, ["row 0", "array"]),
        ({"data": [[]]}, ["row 0", "array"]),
        ({"data": [["a", "x"]]}, ["row 0", "integer", "'a'"]),
        ({"data": [[1.5, "x"]]}, ["row 0", "integer"]),
        ({"data": [[True, "x"]]}, ["row 0", "integer"]),
        ({"data": [[0, "a"], [1, "b"], [0, "c"]]}, ["row index 0", "more than once"]),
        ({"data": [[0]]}, ["row 0", "1 or 2 arguments", "got 0"]),
        # Snowflake's documented example has three arguments: not a COMPLETE call.
        ({"data": [[0, 10, "Alex", "2014-01-01 16:00:00"]]}, ["1 or 2 arguments", "got 3"]),
        ({"data": [[i, None] for i in range(4097)]}, ["4097 rows", "relay_max_rows"]),
    ],
)
def test_malformed_batches_get_400_naming_the_problem(
    app_hub: AppHub, body: Any, words: list[str]
) -> None:
    reply = relay(app_hub, body)
    assert reply.status_code == 400, reply.text
    message = reply.json()["error"]["message"]
    for word in words:
        assert word in message


def test_an_oversized_body_is_a_400_too(app_hub: AppHub) -> None:
    huge = {"data": [[0, "x" * (9 * 1024 * 1024)]]}
    reply = relay(app_hub, huge)
    assert reply.status_code == 400
    assert "max_request_bytes" in reply.json()["error"]["message"]


def test_a_thousand_rows_come_back_complete(app_hub: AppHub) -> None:
    # A short system prompt replaces the template's long default: prompt processing is
    # most of the work here, and this machine does about 450 prompt tokens/s.
    short = {"max_tokens": 1, "system": "Be brief."}
    rows = [[i, f"Number {i}.", short] for i in range(1000)]
    rows.reverse()  # Snowflake may send rows in any order
    reply = relay(app_hub, {"data": rows})
    assert reply.status_code == 200, reply.text
    data = reply.json()["data"]
    assert [row[0] for row in data] == [row[0] for row in rows]
    assert sorted(row[0] for row in data) == list(range(1000))
    assert all(isinstance(result, str) for _, result in data)


def test_a_failing_row_gives_null_and_the_rest_are_answered(app_hub: AppHub) -> None:
    too_long = "word " * 6000
    body = {
        "data": [
            [0, "Say hi.", {"max_tokens": 3}],
            [1, too_long],
            [2, "Say hi.", {"temperature": 9}],
            [3, "Say hi.", {"bogus": 1}],
            [4, 42],
        ]
    }
    data = relay(app_hub, body).json()["data"]
    assert isinstance(data[0][1], str)
    assert [result for _, result in data[1:]] == [None, None, None, None]


def test_a_retried_batch_gets_the_stored_answer(app_hub: AppHub) -> None:
    # Sampling at temperature 1 makes a recomputation differ; the retry must not.
    body = {
        "data": [[i, "Invent a word.", {"temperature": 1.0, "max_tokens": 12}] for i in range(6)]
    }
    first = relay(app_hub, body, batch_id="batch-retry-1").json()
    again = relay(app_hub, body, batch_id="batch-retry-1").json()
    other = relay(app_hub, body, batch_id="batch-retry-2").json()
    assert again == first
    assert other != first


def test_a_retry_arriving_during_the_first_attempt_waits_for_it(app_hub: AppHub) -> None:
    """Two attempts of one batch at once: one is computed, the other waits and gets the
    same answer (sampled at temperature 1, a second computation would differ)."""
    body = {
        "data": [[i, "Invent a word.", {"temperature": 1.0, "max_tokens": 24}] for i in range(4)]
    }
    replies: list[httpx.Response] = []

    def send() -> None:
        replies.append(relay(app_hub, body, batch_id="batch-concurrent"))

    threads = [threading.Thread(target=send) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.status_code for r in replies] == [200, 200], [r.text for r in replies]
    first, second = (r.json()["data"] for r in replies)
    assert [i for i, _ in first] == [0, 1, 2, 3]
    assert all(isinstance(text, str) and text.strip() for _, text in first), first
    assert second == first
    recomputed = relay(app_hub, body, batch_id="batch-concurrent-other").json()["data"]
    assert recomputed != first


def test_embed_gives_384_unit_vectors_and_null_for_null(app_hub: AppHub) -> None:
    body = {
        "data": [
            [0, "The cat sat on the mat."],
            [1, "A cat was sitting on a rug."],
            [2, "Quarterly revenue rose by four percent."],
            [3, None],
            [4, "The cat sat on the mat."],
        ]
    }
    reply = relay(app_hub, body, path="/relay/embed")
    assert reply.status_code == 200, reply.text
    vectors = dict((i, v) for i, v in reply.json()["data"])
    assert vectors[3] is None
    assert all(len(vectors[i]) == 384 for i in (0, 1, 2, 4))
    assert math.isclose(sum(x * x for x in vectors[0]), 1.0, rel_tol=1e-4)
    assert vectors[4] == vectors[0]

    def cos(a: int, b: int) -> float:
        return sum(x * y for x, y in zip(vectors[a], vectors[b], strict=True))

    assert cos(0, 1) > cos(0, 2) + 0.2


def test_embed_takes_exactly_one_argument(app_hub: AppHub) -> None:
    reply = relay(app_hub, {"data": [[0, "a", "b"]]}, path="/relay/embed")
    assert reply.status_code == 400
    assert "got 2" in reply.json()["error"]["message"]


def test_openai_embeddings_in_both_encodings(app_hub: AppHub) -> None:
    client = app_hub.client()
    default = client.embeddings.create(input=["hello", "world"], model="all-minilm-l6-v2")
    assert [len(d.embedding) for d in default.data] == [384, 384]
    assert default.usage.prompt_tokens > 0
    plain = client.embeddings.create(
        input="hello", model="all-minilm-l6-v2", encoding_format="float"
    )
    assert plain.data[0].embedding == pytest.approx(default.data[0].embedding, abs=1e-6)
    assert "all-minilm-l6-v2" in [m.id for m in client.models.list().data]


# --- settings that change the relay's behaviour -------------------------------------------


@pytest.fixture(scope="module")
def strict_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    started = start_hub(tmp_path_factory.mktemp("strict"), "relay_on_row_error=fail")
    yield started
    stop_hub(started)


def test_on_row_error_fail_fails_the_batch_naming_the_row(strict_hub: Hub) -> None:
    body = {"data": [[0, "Say hi.", {"max_tokens": 2}], [41, "word " * 6000]]}
    reply = relay(strict_hub, body)
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert "row index 41" in message and "maximum context length" in message


def test_overload_gives_429_never_a_timeout(tmp_path: Path) -> None:
    hub = start_hub(tmp_path, "max_num_seqs=1", "max_queue=0", "relay_overload_wait=0")
    try:
        hog = {
            "messages": [{"role": "user", "content": "Tell a long story."}],
            "max_tokens": 3000,
            "ignore_eos": True,
            "stream": True,
        }
        with httpx.stream("POST", f"{hub.api}/chat/completions", json=hog, timeout=30) as r:
            assert r.status_code == 200
            next(r.iter_lines())
            reply = relay(hub, {"data": [[0, "Say hi."], [1, "Say bye."]]})
        assert reply.status_code == 429
        assert int(reply.headers["retry-after"]) >= 1
    finally:
        stop_hub(hub)


def test_ai_functions_answer_snowflake_batches_in_cortex_form(app_hub: AppHub) -> None:
    """The rows Snowflake's service functions send: NULL in gives NULL out, a row whose
    arguments the function does not take gives NULL (relay_on_row_error=null), and a
    batch retried under its batch id is answered from the first attempt."""
    categories = ["good", "bad"]
    multi = {"output_mode": "multi"}
    body = {"data": [[0, "Great phone!", categories], [1, None, categories],
                     [2, "Great phone!", 7], [3, "Awful.", categories, multi]]}  # fmt: skip
    first = relay(app_hub, body, path="/relay/ai/classify", batch_id="ai-1")
    assert first.status_code == 200, first.text
    answers = dict(first.json()["data"])
    assert answers[1] is None and answers[2] is None
    for n in (0, 3):
        assert answers[n]["labels"] and set(answers[n]["labels"]) <= {"good", "bad"}
    again = relay(app_hub, body, path="/relay/ai/classify", batch_id="ai-1")
    assert again.json() == first.json()

    pairs = {"data": [[0, "red apples", "red apples"], [1, "red apples", None], [2, 3, "x"]]}
    scores = dict(relay(app_hub, pairs, path="/relay/ai/similarity").json()["data"])
    assert scores[0] == pytest.approx(1, abs=1e-4) and scores[1] is None and scores[2] is None
    # A malformed batch is still refused whole, naming the problem.
    refused = relay(app_hub, {"data": [[0, "x"]]}, path="/relay/ai/translate")
    assert refused.status_code == 400 and "expected 3 arguments" in refused.text


def test_search_docs_rows_answer_null_for_what_they_cannot_take(app_hub: AppHub) -> None:
    body = {"data": [[0, "anything"], [1, None], [2, "anything", [1, 2]], [3, "anything", None, 0]]}
    answers = dict(relay(app_hub, body, path="/relay/search_docs").json()["data"])
    assert isinstance(answers[0], list)
    assert answers[1] is None and answers[2] is None and answers[3] is None
