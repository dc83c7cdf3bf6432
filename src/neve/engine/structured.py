"""Structured output: a JSON schema as a llama.cpp grammar, so that sampling can only
produce text that parses and validates.

The grammar comes from llama.cpp's own converter (as llama-cpp-python ships it). It
enforces most of JSON Schema, and silently ignores the rest (bounds on numbers, say), which
would let an answer through that does not validate. So a schema is first walked, and a
keyword the grammar would not enforce is refused by name instead."""

from __future__ import annotations

import json
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from neve.errors import BadRequest

LOOSE_CHAR = r'char ::= [^"\\] |'
STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
# What the grammar enforces, and what only annotates.
ENFORCED = {
    "type", "properties", "required", "additionalProperties", "items", "prefixItems",
    "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "$defs",
    "definitions", "pattern", "format", "minLength", "maxLength",
}  # fmt: skip
ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment",
               "deprecated", "readOnly", "writeOnly", "strict"}  # fmt: skip
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
FORMATS = {"date", "time", "date-time", "uuid", "uuid1", "uuid2", "uuid3", "uuid4", "uuid5"}
# Keywords whose value is a schema, a list of them, or a mapping of names to them.
ONE = ("items", "additionalProperties")
MANY = ("anyOf", "oneOf", "allOf", "prefixItems")
MAPPING = ("properties", "$defs", "definitions")
# allOf is enforced only as a merge of objects' properties.
MERGEABLE = {"type", "properties", "required", "$ref"} | ANNOTATIONS


def check(schema: object, param: str, at: str = "#") -> None:
    """Refuse, naming the place and the keyword, what the grammar would not enforce."""

    def refuse(what: str) -> None:
        raise BadRequest(f"{param}: {what} at {at} is not supported for structured output",
                         param=param)  # fmt: skip

    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise BadRequest(f"{param}: the schema at {at} must be an object", param=param)
    for key in schema:
        if key not in ENFORCED and key not in ANNOTATIONS:
            refuse(f"the keyword {key!r}")
    types = schema.get("type", [])
    for t in types if isinstance(types, list) else [types]:
        if t not in TYPES:
            refuse(f"the type {t!r}")
    if "format" in schema and schema["format"] not in FORMATS:
        refuse(f"the format {schema['format']!r} (known: {', '.join(sorted(FORMATS))})")
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        refuse(f"the reference {ref!r} (only local ones, #/...)")
    for i, part in enumerate(schema.get("allOf") or []):
        if (
            not isinstance(part, dict)
            or set(part) - MERGEABLE
            or part.get("type", "object") != "object"
        ):
            refuse(f"allOf/{i}, which is not an object's properties,")
    for key in ONE:
        value = schema.get(key)
        if isinstance(value, list):  # items as a list: the old form of prefixItems
            for i, sub in enumerate(value):
                check(sub, param, f"{at}/{key}/{i}")
        elif isinstance(value, dict):
            check(value, param, f"{at}/{key}")
    for key in MANY:
        for i, sub in enumerate(schema.get(key) or []):
            check(sub, param, f"{at}/{key}/{i}")
    for key in MAPPING:
        for name, sub in (schema.get(key) or {}).items():
            check(sub, param, f"{at}/{key}/{name}")


def grammar(schema: dict[str, Any] | None, param: str = "response_format") -> str:
    """The GBNF grammar of answers valid under `schema`; any JSON object if None."""
    schema = {"type": "object"} if schema is None else schema
    check(schema, param)
    try:
        # The converter's string characters include control characters, which JSON
        # allows only escaped (json.loads refuses a raw newline in a string).
        return json_schema_to_gbnf(json.dumps(schema)).replace(LOOSE_CHAR, STRICT_CHAR)
    except (AssertionError, ValueError, KeyError, TypeError) as exc:
        raise BadRequest(f"{param}: the schema cannot be made a grammar: {exc}",
                         param=param) from None  # fmt: skip


def response_schema(response_format: object) -> tuple[bool, dict[str, Any] | None]:
    """From OpenAI's `response_format`: whether the answer must be JSON, and the schema it
    must follow (None: any JSON object)."""
    param = "response_format"
    if response_format is None:
        return False, None
    if not isinstance(response_format, dict):
        raise BadRequest(f"{param} must be an object with a type", param=param)
    kind = response_format.get("type")
    if kind in (None, "text"):
        return False, None
    if kind == "json_object":
        return True, None
    if kind != "json_schema":
        raise BadRequest(f"{param}: unknown type {kind!r} (use text, json_object or "
                         "json_schema)", param=param)  # fmt: skip
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("schema", {}), dict):
        raise BadRequest(f"{param}: json_schema must be an object holding the schema under "
                         "'schema'", param=param)  # fmt: skip
    return True, spec.get("schema", {})
