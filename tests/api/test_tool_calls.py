"""Tool calls on the shipped model. It is small and may choose badly; what is checked is the
protocol: a required or named call always parses into its function's schema, streamed
calls assemble into the same, and results go back through the template. Calls are one at a
time (parallel_tool_calls false) where an answer must end: the functions' arguments are
bounded, a list of calls is not, and a small model at temperature 1 may go on calling."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from tests.conftest import AppHub

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 30},
        "unit": {"enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 30}},
    "required": ["zone"],
}
TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": WEATHER,
        },
    },
    {
        "type": "function",
        "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME},
    },
]
SCHEMAS = {"get_weather": WEATHER, "get_time": TIME}
ASK: list[Any] = [{"role": "user", "content": "What is the weather in Oslo?"}]


def _check_calls(calls: list[Any] | None, names: set[str]) -> None:
    assert calls, "no tool call"
    for call in calls:
        assert call.type == "function" and call.id.startswith("call_")
        assert call.function.name in names
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_a_required_call_always_parses_into_its_schema(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        n=4,
        temperature=1.0,
        seed=2,
        max_tokens=200,
    )
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content is None
        assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
        _check_calls(choice.message.tool_calls, set(SCHEMAS))


def test_a_named_function_is_the_one_called_once(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=TOOLS,
        n=3,
        temperature=1.0,
        seed=4,
        max_tokens=200,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    for choice in reply.choices:
        assert choice.finish_reason == "tool_calls"
        calls = choice.message.tool_calls
        assert calls is not None and len(calls) == 1
        _check_calls(calls, {"get_time"})


def test_auto_answers_with_calls_or_with_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=ASK, tools=TOOLS, parallel_tool_calls=False,
        n=4, temperature=1.0, seed=6, max_tokens=200,
    )  # fmt: skip
    for choice in reply.choices:
        if choice.finish_reason == "tool_calls":
            _check_calls(choice.message.tool_calls, set(SCHEMAS))
        elif choice.finish_reason == "stop":
            assert not choice.message.tool_calls and isinstance(choice.message.content, str)
            assert not choice.message.content.lstrip().startswith("{")  # the JSON was unwrapped
        else:  # a text answer is unbounded: max_tokens may cut it, never into a call
            assert choice.finish_reason == "length" and not choice.message.tool_calls


def test_none_means_no_calls(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=ASK, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    assert reply.choices[0].message.tool_calls is None
    assert reply.choices[0].finish_reason in ("stop", "length")


def test_streamed_calls_come_as_deltas_that_assemble(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        stream=True,
        parallel_tool_calls=False,
        temperature=0.8,
        seed=8,
        max_tokens=200,
    )
    calls: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for d in choice.delta.tool_calls or []:
                call = calls.setdefault(d.index, {"name": "", "arguments": ""})
                call["name"] += (d.function and d.function.name) or ""
                call["arguments"] += (d.function and d.function.arguments) or ""
    assert finish == "tool_calls" and len(calls) == 1
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), SCHEMAS[call["name"]])


def test_results_go_back_and_the_model_answers(client: openai.OpenAI) -> None:
    args = json.dumps({"city": "Oslo", "unit": "celsius"})
    messages: list[Any] = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": args},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "-3 degrees and snowing"},
    ]
    reply = client.chat.completions.create(
        model="smollm2", messages=messages, tools=TOOLS, max_tokens=60, temperature=0
    )
    choice = reply.choices[0]
    # What the model says next is its own; that it read the result and answered is ours.
    assert reply.usage is not None and reply.usage.prompt_tokens > 50
    assert choice.message.content or choice.message.tool_calls


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        (
            {"tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
            ["'nope'", "get_weather"],
        ),
        (
            {
                "tools": [
                    {
                        "type": "function",
                        "function": {
                            "name": "f",
                            "parameters": {
                                "type": "object",
                                "properties": {"n": {"type": "integer", "minimum": 1}},
                            },
                        },
                    }
                ]
            },
            "tools",
            ["'minimum'", "#/tools/0/function/parameters/properties/n"],
        ),
        ({"response_format": {"type": "json_object"}}, "response_format", ["tools"]),
    ],
)
def test_bad_tool_requests_are_refused_by_name(
    app_hub: AppHub, body: dict[str, Any], param: str, words: list[str]
) -> None:
    reply = app_hub.http.post(
        "/v1/chat/completions", json={"messages": ASK, "tools": TOOLS, **body}
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param
    for word in words:
        assert word in error["message"]
