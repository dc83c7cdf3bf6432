"""Anthropic's Messages API through Anthropic's own SDK, on the shipped model: the same
answer as chat gives (it is the chat path underneath), streamed as Anthropic's events, tool
use both ways, token counting, keys in x-api-key, errors in Anthropic's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import jsonschema
import openai
import pytest

from tests.api.test_tool_calls import WEATHER
from tests.conftest import AppHub, app_hub_at

# A prompt whose greedy answer has wide margins at every token (see d0ceefb).
ASK: list[Any] = [{"role": "user", "content": "What is the capital of France? "
                                              "Answer in one sentence."}]  # fmt: skip
TOOL = {"name": "get_weather", "description": "Weather in a city", "input_schema": WEATHER}
WEATHER_ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]
# Anthropic's SDK no longer names the sampling fields (its newest models fix them); the
# API takes them, and so does neve.
GREEDY = {"temperature": 0}


def claude(hub: AppHub, api_key: str = "unused") -> anthropic.Anthropic:
    """Anthropic's SDK as a client of a hub in this process; no retries."""
    return anthropic.Anthropic(base_url=hub.url, api_key=api_key, http_client=hub.http,
                               max_retries=0)  # fmt: skip


def test_a_message_is_the_chat_answer_in_anthropic_form(
    app_hub: AppHub, client: openai.OpenAI
) -> None:
    chat = client.chat.completions.create(
        model="smollm2", messages=ASK, max_tokens=24, temperature=0
    )
    reply = claude(app_hub).messages.create(
        model="smollm2", messages=ASK, max_tokens=24, extra_body=GREEDY
    )
    assert reply.type == "message" and reply.role == "assistant" and reply.model == "smollm2"
    assert [b.type for b in reply.content] == ["text"]
    assert reply.content[0].text == chat.choices[0].message.content  # type: ignore[union-attr]
    expected = {"stop": "end_turn", "length": "max_tokens"}[chat.choices[0].finish_reason]
    assert reply.stop_reason == expected
    assert chat.usage is not None
    assert reply.usage.output_tokens == chat.usage.completion_tokens
    read = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert read == chat.usage.prompt_tokens


def test_a_stream_comes_as_anthropic_events_and_assembles_to_the_same(app_hub: AppHub) -> None:
    sdk = claude(app_hub)
    whole = sdk.messages.create(model="smollm2", messages=ASK, max_tokens=24, extra_body=GREEDY)
    with sdk.messages.stream(
        model="smollm2", messages=ASK, max_tokens=24, extra_body=GREEDY
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert kinds.count("content_block_start") == kinds.count("content_block_stop") == 1
    assert "message_delta" in kinds
    assert final.content[0].text == whole.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == whole.stop_reason
    assert final.usage.output_tokens == whole.usage.output_tokens > 0


@pytest.mark.parametrize("stream", [False, True])
def test_a_named_tool_comes_as_tool_use_with_its_input(app_hub: AppHub, stream: bool) -> None:
    sdk = claude(app_hub)
    ask: dict[str, Any] = {
        "model": "smollm2", "messages": WEATHER_ASK, "max_tokens": 120, "extra_body": GREEDY,
        "tools": [TOOL], "tool_choice": {"type": "tool", "name": "get_weather"},
    }  # fmt: skip
    if stream:
        with sdk.messages.stream(**ask) as events:
            reply = events.get_final_message()
    else:
        reply = sdk.messages.create(**ask)
    uses = [b for b in reply.content if b.type == "tool_use"]
    assert reply.stop_reason == "tool_use" and len(uses) == 1
    assert uses[0].name == "get_weather" and uses[0].id
    jsonschema.validate(uses[0].input, WEATHER)


def test_a_tool_result_goes_back_and_the_model_answers(app_hub: AppHub) -> None:
    sdk = claude(app_hub)
    result = "-3 degrees and snowing, wind from the north at 40 km/h"
    turns: list[Any] = [
        *WEATHER_ASK,
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
         "name": "get_weather", "input": {"city": "Oslo", "unit": "celsius"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                      "content": result}]},
    ]  # fmt: skip
    without = sdk.messages.count_tokens(model="smollm2", messages=turns[:2], tools=[TOOL])  # type: ignore[arg-type]
    reply = sdk.messages.create(
        model="smollm2",
        messages=turns,
        tools=[TOOL],
        max_tokens=48,
        extra_body=GREEDY,  # type: ignore[arg-type]
    )
    # What the model says next is its own; that the result reached its prompt is ours.
    read = reply.usage.input_tokens + (reply.usage.cache_read_input_tokens or 0)
    assert read > without.input_tokens + 10
    assert reply.content and reply.stop_reason in ("end_turn", "max_tokens", "tool_use")


def test_count_tokens_counts_what_a_message_reads(app_hub: AppHub) -> None:
    sdk = claude(app_hub)
    counted = sdk.messages.count_tokens(model="smollm2", messages=ASK, system="Be brief.")
    reply = sdk.messages.create(model="smollm2", messages=ASK, system="Be brief.",
                                max_tokens=4, extra_body=GREEDY)  # fmt: skip
    assert counted.input_tokens > 10
    assert counted.input_tokens == reply.usage.input_tokens + (
        reply.usage.cache_read_input_tokens or 0
    )


def test_errors_take_anthropics_shape(app_hub: AppHub) -> None:
    sdk = claude(app_hub)
    with pytest.raises(anthropic.BadRequestError) as bad:
        sdk.messages.create(model="smollm2", messages=ASK, max_tokens=0)
    body = bad.value.body
    assert isinstance(body, dict) and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as image:
        sdk.messages.create(model="smollm2", max_tokens=4, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": "iVBORw0KGgo="}}]}])  # fmt: skip
    assert "image blocks are not supported" in json.dumps(image.value.body)
    with pytest.raises(anthropic.NotFoundError) as unknown:
        sdk.messages.create(model="claude-opus-9", messages=ASK, max_tokens=4)
    assert unknown.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[AppHub]:
    with app_hub_at(tmp_path_factory.mktemp("keyed"), models_dir, "api_key=s3cret") as hub:
        yield hub


def test_the_key_comes_as_x_api_key(keyed: AppHub) -> None:
    reply = claude(keyed, "s3cret").messages.create(model="smollm2", messages=ASK, max_tokens=4)
    assert reply.usage.output_tokens > 0
    with pytest.raises(anthropic.AuthenticationError) as refused:
        claude(keyed, "wrong").messages.create(model="smollm2", messages=ASK, max_tokens=4)
    assert refused.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert "x-api-key" in refused.value.body["error"]["message"]  # type: ignore[index]
