"""OpenAI's Responses API through OpenAI's own SDK, on the shipped model: the same answer as
chat gives (it is the chat path underneath), streamed as the Responses events, function
tools both ways, structured output, reasoning items, and stored responses: continued,
fetched, listed, deleted, each user's alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from pydantic import BaseModel

from neve.store.db import Store
from neve.store.keys import create_key
from tests.api.test_tool_calls import WEATHER
from tests.conftest import AppHub, Hub, app_hub_at, openai_client

# A prompt whose greedy answer has wide margins at every token (see d0ceefb).
ASK = "What is the capital of France? Answer in one sentence."
TOOL: Any = {"type": "function", "name": "get_weather", "description": "Weather in a city",
        "parameters": WEATHER}  # fmt: skip
GREEDY: dict[str, Any] = {"model": "smollm2", "temperature": 0}


def test_a_response_is_the_chat_answer_in_responses_form(
    app_hub: AppHub, client: openai.OpenAI
) -> None:
    chat = client.chat.completions.create(
        model="smollm2", messages=[{"role": "user", "content": ASK}], max_tokens=24,
        temperature=0,
    )  # fmt: skip
    reply = client.responses.create(input=ASK, max_output_tokens=24, store=False, **GREEDY)
    assert reply.object == "response" and reply.model == "smollm2"
    assert [item.type for item in reply.output] == ["message"]
    assert reply.output_text == chat.choices[0].message.content
    cut = chat.choices[0].finish_reason == "length"
    assert reply.status == ("incomplete" if cut else "completed")
    assert (reply.incomplete_details is not None) == cut
    assert chat.usage is not None and reply.usage is not None
    assert reply.usage.output_tokens == chat.usage.completion_tokens
    assert reply.usage.input_tokens == chat.usage.prompt_tokens


def test_a_stream_comes_as_responses_events_and_assembles_to_the_same(
    client: openai.OpenAI,
) -> None:
    whole = client.responses.create(input=ASK, max_output_tokens=24, store=False, **GREEDY)
    with client.responses.stream(input=ASK, max_output_tokens=24, store=False, **GREEDY) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == ("response.completed" if whole.status == "completed"
                         else "response.incomplete")  # fmt: skip
    for kind in ("response.output_item.added", "response.content_part.added",
                 "response.output_text.done", "response.output_item.done"):  # fmt: skip
        assert kinds.count(kind) == 1, kind
    assert "response.output_text.delta" in kinds
    assert final.output_text == whole.output_text
    assert final.usage is not None and whole.usage is not None
    assert final.usage.output_tokens == whole.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_function_call_and_its_output_make_a_round_trip(
    client: openai.OpenAI, stream: bool
) -> None:
    ask: dict[str, Any] = {
        "input": "What is the weather in Oslo?", "tools": [TOOL], "max_output_tokens": 120,
        "tool_choice": {"type": "function", "name": "get_weather"}, **GREEDY,
    }  # fmt: skip
    if stream:
        with client.responses.stream(**ask) as events:
            kinds = [event.type for event in events]
            first = events.get_final_response()
        assert "response.function_call_arguments.delta" in kinds
        assert "response.function_call_arguments.done" in kinds
    else:
        first = client.responses.create(**ask)
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and len(calls) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    result = "-3 degrees and snowing, wind from the north at 40 km/h"
    answer = client.responses.create(
        previous_response_id=first.id, tools=[TOOL], max_output_tokens=32,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": result}],
        **GREEDY,
    )  # fmt: skip
    # What the model says next is its own; that the call and its output reached its
    # prompt is ours: the second reads all the first read and wrote, and the result.
    assert first.usage is not None and answer.usage is not None
    assert answer.usage.input_tokens > first.usage.total_tokens + 10
    assert answer.output and answer.status in ("completed", "incomplete")
    # The same conversation sent whole, with no stored state, reads the same prompt.
    again = client.responses.create(
        tools=[TOOL], max_output_tokens=32, store=False,
        input=[{"role": "user", "content": ask["input"]},
               {"type": "function_call", "call_id": call.call_id, "name": call.name,
                "arguments": call.arguments},
               {"type": "function_call_output", "call_id": call.call_id, "output": result}],
        **GREEDY,
    )  # fmt: skip
    assert again.usage is not None and again.usage.input_tokens == answer.usage.input_tokens
    assert again.output_text == answer.output_text


class City(BaseModel):
    city: str
    country: str


def test_text_format_json_schema_gives_valid_json(client: openai.OpenAI) -> None:
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "country"],
              "properties": {"city": {"type": "string", "maxLength": 20},
                             "country": {"type": "string", "maxLength": 20}}}  # fmt: skip
    reply = client.responses.create(
        input="Name the capital of France as JSON.", max_output_tokens=60, store=False,
        text={"format": {"type": "json_schema", "name": "capital", "schema": schema,
                         "strict": True}},
        **GREEDY,
    )  # fmt: skip
    jsonschema.validate(json.loads(reply.output_text), schema)
    parsed = client.responses.parse(
        input="Name the capital of France as JSON.", max_output_tokens=60, store=False,
        text_format=City, **GREEDY,
    )  # fmt: skip
    assert isinstance(parsed.output_parsed, City)


def test_a_stored_response_is_fetched_listed_continued_and_deleted(
    client: openai.OpenAI, app_hub: AppHub
) -> None:
    first = client.responses.create(
        input="My name is Ada. Say hello.", instructions="Be brief.", max_output_tokens=16,
        metadata={"case": "stored"}, **GREEDY,
    )  # fmt: skip
    fetched = client.responses.retrieve(first.id)
    assert fetched.output_text == first.output_text and fetched.metadata == {"case": "stored"}
    assert fetched.instructions == "Be brief."
    second = client.responses.create(
        previous_response_id=first.id, input="What is my name?", max_output_tokens=16,
        **GREEDY,
    )  # fmt: skip
    assert second.previous_response_id == first.id
    assert first.usage is not None and second.usage is not None
    # Instructions are not carried on (as OpenAI does); the earlier turn is.
    assert second.usage.input_tokens > first.usage.output_tokens + 15
    listed = client.responses.input_items.list(second.id, order="asc")
    texts = [item.content[0].text for item in listed.data if item.type == "message"]  # type: ignore[union-attr]
    assert texts == ["My name is Ada. Say hello.", first.output_text, "What is my name?"]
    newest = client.responses.input_items.list(second.id, limit=1)
    assert [i.id for i in newest.data] == [listed.data[-1].id] and newest.has_more
    # Feedback names a stored response as it names a message: its text is filled in.
    row = app_hub.http.post("/v1/feedback", json={"message_id": second.id, "score": 1})
    assert row.status_code == 201, row.text
    assert row.json()["user_prompt"] == "What is my name?"
    assert row.json()["assistant_response"] == second.output_text
    client.responses.delete(first.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as broken:
        client.responses.create(previous_response_id=second.id, input="And?", **GREEDY)
    assert "deleted" in str(broken.value)


def test_a_response_not_stored_cannot_be_continued(client: openai.OpenAI) -> None:
    reply = client.responses.create(input=ASK, max_output_tokens=4, store=False, **GREEDY)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(reply.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(previous_response_id=reply.id, input="And?", **GREEDY)


def test_what_neve_cannot_honour_is_refused_by_name(client: openai.OpenAI) -> None:
    refusals = [
        ({"input": [{"role": "user", "content": [
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo="}]}]},
         "input_image parts are not supported"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]},
         "item_reference items are not supported"),
        ({"input": ASK, "background": True}, "background"),
        ({"input": ASK, "tools": [{"type": "web_search"}], "tool_choice": "required"},
         "tool_choice: required needs a function tool"),
        ({"input": ASK, "max_output_tokens": 0}, "max_output_tokens"),
    ]  # fmt: skip
    for body, said in refusals:
        with pytest.raises(openai.BadRequestError) as refused:
            client.responses.create(model="smollm2", extra_body=body)
        assert said in str(refused.value), (body, refused.value)


def test_tools_the_model_is_not_offered_are_taken_and_left_out(client: openai.OpenAI) -> None:
    plain = client.responses.create(input=ASK, max_output_tokens=8, store=False, **GREEDY)
    reply = client.responses.create(
        input=ASK, max_output_tokens=8, store=False, tool_choice="auto",
        tools=[{"type": "web_search"}, {"type": "file_search", "vector_store_ids": ["vs_1"]}],
        **GREEDY,
    )  # fmt: skip
    assert reply.output_text == plain.output_text
    assert plain.usage is not None and reply.usage is not None
    assert reply.usage.input_tokens == plain.usage.input_tokens
    assert [t.type for t in reply.tools] == ["web_search", "file_search"]


def test_a_thinking_model_answers_with_a_reasoning_item(thinking_hub: Hub) -> None:
    sdk = openai_client(thinking_hub.api)
    reply = sdk.responses.create(input="Is 7 prime?", max_output_tokens=48, store=False,
                                 **GREEDY)  # fmt: skip
    assert reply.output[0].type == "reasoning"
    reasoning = reply.output[0].content
    assert reasoning and reasoning[0].type == "reasoning_text" and reasoning[0].text.strip()
    with sdk.responses.stream(input="Is 7 prime?", max_output_tokens=48, store=False,
                              **GREEDY) as stream:  # fmt: skip
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert "response.reasoning_text.delta" in kinds
    assert final.output[0].type == "reasoning"
    assert final.output[0].content[0].text == reasoning[0].text  # type: ignore[index]


@dataclass
class TwoUsers:
    hub: AppHub
    ada: openai.OpenAI
    bo: openai.OpenAI


@pytest.fixture(scope="module")
def two_users(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[TwoUsers]:
    tmp = tmp_path_factory.mktemp("users")
    store = Store(f"sqlite:///{tmp / 'data' / 'neve.db'}")
    store.migrate()
    keys = {name: create_key(store, name)[0] for name in ("ada", "bo")}
    store.close()
    with app_hub_at(tmp, models_dir) as hub:
        yield TwoUsers(hub, hub.client(api_key=keys["ada"]), hub.client(api_key=keys["bo"]))


def test_each_user_sees_only_their_own_responses(two_users: TwoUsers) -> None:
    mine = two_users.ada.responses.create(input=ASK, max_output_tokens=4, **GREEDY)
    assert two_users.ada.responses.retrieve(mine.id).id == mine.id
    theirs = two_users.bo
    with pytest.raises(openai.NotFoundError):
        theirs.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.input_items.list(mine.id)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(previous_response_id=mine.id, input="And?", **GREEDY)
    with pytest.raises(openai.NotFoundError):
        theirs.responses.delete(mine.id)
    assert two_users.ada.responses.retrieve(mine.id).id == mine.id
    assert two_users.hub.http.post("/v1/responses", json={"input": ASK}).status_code == 401
