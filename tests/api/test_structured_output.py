"""Structured output on the shipped model: every answer to a JSON-schema request parses and
validates, whatever the sampling; what the grammar could not enforce is refused by name."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest

from neve.engine import structured
from neve.errors import BadRequest
from tests.conftest import AppHub

ASK = [{"role": "user", "content": "Describe a city you like as JSON."}]
# Strings are bounded: a grammar makes an answer valid, not short, and a small model at a
# high temperature may ramble inside an open string until max_tokens cuts it.
SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "minLength": 1, "maxLength": 40},
            "population": {"type": "integer"},
            "coastal": {"type": "boolean"},
            "tags": {
                "type": "array",
                "items": {"type": "string", "maxLength": 20},
                "minItems": 1,
                "maxItems": 3,
            },
        },
        "required": ["city", "population", "coastal", "tags"],
        "additionalProperties": False,
    },
    {
        "$defs": {
            "place": {
                "type": "object",
                "properties": {"name": {"type": "string", "maxLength": 30}},
                "required": ["name"],
            }
        },
        "type": "object",
        "properties": {
            "kind": {"enum": ["capital", "port", "village"]},
            "places": {"type": "array", "items": {"$ref": "#/$defs/place"}, "maxItems": 2},
            "founded": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        },
        "required": ["kind", "places", "founded", "code"],
    },
]


def _json_schema(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}


@pytest.mark.parametrize("schema", SCHEMAS)
def test_every_sampled_answer_validates(client: openai.OpenAI, schema: dict[str, Any]) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        response_format=_json_schema(schema),  # type: ignore[arg-type]
        n=4,
        temperature=1.2,
        seed=3,
        max_tokens=300,
    )
    assert len(reply.choices) == 4
    for choice in reply.choices:
        assert choice.finish_reason == "stop", choice.message.content
        jsonschema.validate(json.loads(choice.message.content or ""), schema)


def test_a_streamed_answer_validates_once_whole(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        response_format=_json_schema(SCHEMAS[0]),  # type: ignore[arg-type]
        stream=True,
        temperature=0.9,
        seed=5,
        max_tokens=300,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    jsonschema.validate(json.loads(text), SCHEMAS[0])


def test_json_object_answers_are_objects(client: openai.OpenAI) -> None:
    # Any object may be as long as the model likes: an answer cut by max_tokens is the start
    # of one; every answer that ends is a whole one (and most end, with this prompt).
    short = [{"role": "system", "content": "Reply with a small JSON object of two fields."},
             {"role": "user", "content": "Describe Paris."}]  # fmt: skip
    reply = client.chat.completions.create(
        model="smollm2", messages=short, response_format={"type": "json_object"},
        n=8, temperature=0.3, seed=11, max_tokens=400,
    )  # fmt: skip
    ended = [c for c in reply.choices if c.finish_reason == "stop"]
    assert ended, "no answer ended within max_tokens"
    for choice in reply.choices:
        text = choice.message.content or ""
        if choice.finish_reason == "stop":
            assert isinstance(json.loads(text), dict)
        else:
            assert choice.finish_reason == "length" and text.lstrip().startswith("{")


def test_text_format_is_plain_text(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=ASK, response_format={"type": "text"}, max_tokens=5
    )
    assert reply.choices[0].message.content


@pytest.mark.parametrize(
    ("response_format", "words"),
    [
        (_json_schema({"type": "integer", "minimum": 0}), ["'minimum'", "#"]),
        (
            _json_schema(
                {"type": "object", "properties": {"a": {"type": "number", "multipleOf": 2}}}
            ),
            ["'multipleOf'", "#/properties/a"],
        ),
        (_json_schema({"type": "string", "format": "email"}), ["'email'"]),
        (_json_schema({"$ref": "https://example.com/s.json"}), ["only local"]),
        (_json_schema({"type": "decimal"}), ["'decimal'"]),
        ({"type": "xml"}, ["'xml'"]),
        ({"type": "json_schema"}, ["json_schema"]),
    ],
)
def test_what_the_grammar_cannot_enforce_is_refused_by_name(
    app_hub: AppHub, response_format: dict[str, Any], words: list[str]
) -> None:
    reply = app_hub.http.post(
        "/v1/chat/completions", json={"messages": ASK, "response_format": response_format}
    )
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == "response_format"
    for word in words:
        assert word in error["message"]


def test_annotations_are_accepted_and_bounds_anywhere_refused() -> None:
    annotated = {
        "title": "T",
        "description": "d",
        "type": "object",
        "properties": {"x": {"type": "string", "description": "x", "default": "a"}},
    }
    grammar = structured.grammar(annotated)
    assert "root ::=" in grammar and structured.STRICT_CHAR in grammar
    deep = {
        "type": "array",
        "items": {
            "anyOf": [
                {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMaximum": 3}}}
            ]
        },
    }
    with pytest.raises(BadRequest, match=r"exclusiveMaximum.*#/items/anyOf/0/properties/n"):
        structured.grammar(deep)
