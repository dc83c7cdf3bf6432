"""Schemathesis hooks: constraints of neve's API that JSON Schema cannot state, given to the
fuzzer so that the data it calls valid is valid (loaded through SCHEMATHESIS_HOOKS)."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis.internal import lambda_sources

from neve.api.errors import ANTHROPIC_ROUTES
from neve.api.guards import RELAY_PREFIX

_describe_lambda = lambda_sources._lambda_description


def _described(f: Any, *args: Any, **kwargs: Any) -> str:
    """Hypothesis parses a lambda's source only to name it in messages; on CPython 3.11.7
    that parse can raise "SystemError: AST constructor recursion depth mismatch" deep in a
    stack (python/cpython#106905, fixed in later 3.11 releases), which failed whole runs."""
    try:
        return str(_describe_lambda(f, *args, **kwargs))
    except SystemError:
        return "lambda: <unknown>"


lambda_sources._lambda_description = _described


SERVED = "smollm2"  # the model the fuzzed hub serves


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: Any) -> Any:
    """A Snowflake batch's row indices are distinct (a schema can make rows unique, not
    one item of each). Anthropic's requests must name a model, and which one is served is
    known at run time (any other is a 404, as Anthropic answers)."""
    operation = context.operation
    if operation is not None and operation.path.startswith(ANTHROPIC_ROUTES):
        if isinstance(body, dict) and "model" in body:
            body["model"] = SERVED
        return body
    if operation is None or not operation.path.startswith(RELAY_PREFIX):
        return body
    rows = body.get("data") if isinstance(body, dict) else None
    if isinstance(rows, list):
        for n, row in enumerate(rows):
            if isinstance(row, list) and row and isinstance(row[0], int):
                row[0] = n
    return body


# Refusals of schema-valid requests that a schema cannot foresee, each named with why.
UNFORESEEABLE = {
    # Whether a prompt plus max_tokens fits the context depends on the prompt's token count.
    "context_length_exceeded": "the request needs more tokens than the model's context",
    # The vocabulary's size is the model's, known once it is loaded.
    "invalid_token_id": "prompt token ids beyond the model's vocabulary",
    # Which characters the tokenizer drops (a prompt of control characters) is the model's.
    "empty_prompt": "a prompt whose text tokenizes to nothing",
    # OpenAPI can describe a multipart file, not which file names (types) are taken.
    "unsupported_file": "an upload whose file name has no supported type",
    # A JSON schema (response_format's, a tool's parameters) is any object to OpenAPI; the
    # keywords a grammar can enforce are a subset of JSON Schema's.
    "unsupported_schema": "a JSON schema using what a grammar cannot enforce",
    # Constraints across fields: a named tool_choice among the tools, tools without a
    # JSON response_format.
    "unknown_tool": "a tool_choice naming a function the request's tools do not hold",
    "conflicting_fields": "tools and a JSON response_format in one request",
}


@schemathesis.hook
def filter_failure(
    context: schemathesis.HookContext, failure: Any, case: Any, response: Any
) -> bool:
    """Keep every failure but these two kinds:
    - a schema-valid request refused for a reason in UNFORESEEABLE;
    - a Snowflake batch answered although a row holds what its function does not take:
      that row answers NULL, as a SQL function's would (relay_on_row_error=fail fails the
      batch instead), so the schema states what a row should hold, not what is refused."""
    if failure.code == "ST201":  # schema-violating request accepted
        return not (case.operation.path.startswith(RELAY_PREFIX) and response.status_code == 200)
    if failure.code != "ST202":  # schema-valid request rejected
        return True
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return True
    return code not in UNFORESEEABLE
