"""Structured output: a JSON schema as a llama.cpp grammar, so that sampling can only
produce text that parses and validates.

The grammar comes from llama.cpp's own converter (as llama-cpp-python ships it). It
enforces most of JSON Schema, and silently ignores the rest (bounds on numbers, say), which
would let an answer through that does not validate. So a schema is first walked, and a
keyword the grammar would not enforce is refused by name instead."""

from __future__ import annotations

import json
import re
from typing import Any

from llama_cpp.llama_grammar import json_schema_to_gbnf

from neve.errors import BadRequest

LOOSE_CHAR = r'char ::= [^"\\] |'
STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'
CODE = "unsupported_schema"
MAX_REPEAT = 1000  # longest string, array or repetition a grammar may ask for
MAX_GRAMMAR = 256 * 1024  # characters of grammar, whatever made them
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


def _refuse(param: str, what: str, at: str) -> BadRequest:
    return BadRequest(f"{param}: {what} at {at} is not supported for structured output",
                      param=param, code=CODE)  # fmt: skip


def check(schema: object, param: str, at: str = "#") -> None:
    """Refuse, naming the place and the keyword, what the grammar would not enforce, and
    a schema that is not one."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _refuse(param, "a schema that is not an object", at)
    for key in schema:
        if key not in ENFORCED and key not in ANNOTATIONS:
            raise _refuse(param, f"the keyword {key!r}", at)
    types = schema.get("type", [])
    for t in types if isinstance(types, list) else [types]:
        if t not in TYPES:
            raise _refuse(param, f"the type {t!r}", at)
    if "format" in schema and schema["format"] not in FORMATS:
        known = ", ".join(sorted(FORMATS))
        raise _refuse(param, f"the format {schema['format']!r} (known: {known})", at)
    ref = schema.get("$ref")
    if ref is not None and not (isinstance(ref, str) and ref.startswith("#/")):
        raise _refuse(param, f"the reference {ref!r} (only local ones, #/...)", at)
    for key in ("minLength", "maxLength", "minItems", "maxItems"):
        bound = schema.get(key, 0)
        if isinstance(bound, bool) or not isinstance(bound, int) or not 0 <= bound <= MAX_REPEAT:
            raise _refuse(param, f"{key} {bound!r} (an integer from 0 to {MAX_REPEAT})", at)
    required = schema.get("required", [])
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise _refuse(param, "required that is not a list of names", at)
    if not isinstance(schema.get("enum", []), list):
        raise _refuse(param, "enum that is not a list", at)
    pattern = schema.get("pattern", "")
    if not isinstance(pattern, str):
        raise _refuse(param, "pattern that is not a string", at)
    # llama.cpp nests a rule per repetition: a{100000} would take the server's stack.
    counts = [int(x) for pair in re.findall(r"\{(\d+)(?:,(\d*))?\}", pattern) for x in pair if x]
    if any(n > MAX_REPEAT for n in counts):
        raise _refuse(param, f"a repetition beyond {MAX_REPEAT} in the pattern", at)
    for i, part in enumerate(schema.get("allOf") or []):
        if (
            not isinstance(part, dict)
            or set(part) - MERGEABLE
            or part.get("type", "object") != "object"
        ):
            raise _refuse(param, f"allOf/{i}, which is not an object's properties,", at)
    for key in ONE:
        value = schema.get(key)
        if isinstance(value, list) and key == "items":  # the old form of prefixItems
            for i, sub in enumerate(value):
                check(sub, param, f"{at}/{key}/{i}")
        elif value is not None:
            check(value, param, f"{at}/{key}")
    for key in MANY:
        value = schema.get(key, [])
        if not isinstance(value, list):
            raise _refuse(param, f"{key} that is not a list of schemas", at)
        for i, sub in enumerate(value):
            check(sub, param, f"{at}/{key}/{i}")
    for key in MAPPING:
        value = schema.get(key, {})
        if not isinstance(value, dict):
            raise _refuse(param, f"{key} that is not an object of schemas", at)
        for name, sub in value.items():
            check(sub, param, f"{at}/{key}/{name}")


def grammar(schema: dict[str, Any] | None, param: str = "response_format") -> str:
    """The GBNF grammar of answers valid under `schema`; any JSON object if None."""
    schema = {"type": "object"} if schema is None else schema
    check(schema, param)
    try:
        # The converter's string characters include control characters, which JSON
        # allows only escaped (json.loads refuses a raw newline in a string).
        gbnf = json_schema_to_gbnf(json.dumps(schema)).replace(LOOSE_CHAR, STRICT_CHAR)
    except (AssertionError, ValueError, KeyError, TypeError, AttributeError, IndexError,
            RecursionError, re.error) as exc:  # fmt: skip
        raise BadRequest(f"{param}: the schema cannot be made a grammar: {exc}",
                         param=param, code=CODE) from None  # fmt: skip
    if len(gbnf) > MAX_GRAMMAR:
        raise BadRequest(f"{param}: the schema's grammar is {len(gbnf)} characters, more than "
                         f"{MAX_GRAMMAR}", param=param, code=CODE)  # fmt: skip
    return gbnf


def response_schema(response_format: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
    """From OpenAI's `response_format` (its shape checked by the protocol): whether the
    answer must be JSON, and the schema it must follow (None: any JSON object)."""
    kind = (response_format or {}).get("type")
    if kind == "json_object":
        return True, None
    if kind == "json_schema":
        assert response_format is not None
        return True, response_format["json_schema"].get("schema", {})
    return False, None
