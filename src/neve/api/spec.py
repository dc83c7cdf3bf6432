"""The OpenAPI document, made to say what the server answers: FastAPI's defaults document a
422 that never comes (validation errors are 400 in OpenAI's shape, errors.py), and none of
the statuses that guards and routes give. Routes document their own successes (content
types, streams); this adds the errors every route shares, in one place."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from neve.api.errors import ANTHROPIC_ROUTES
from neve.api.guards import OPEN_PATHS, RELAY_PREFIX
from neve.config import Settings
from neve.protocol import anthropic
from neve.protocol.openai import ErrorResponse

ERROR = {"$ref": "#/components/schemas/ErrorResponse"}
ANTHROPIC_ERROR = {"$ref": "#/components/schemas/AnthropicError"}
RETRY_AFTER = {"Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}}

# Why each status comes; which routes may give it is decided in `_errors`.
REASONS = {
    "400": "a bad request: the message names the field",
    "401": "no valid API key",
    "403": "the key's role or groups do not allow it",
    "404": "a model, document, conversation or message that does not exist (for this caller)",
    "413": "a body over max_request_bytes (uploads: rag_max_upload_bytes)",
    "429": "a rate limit of the key, or the queue is full",
    "500": "an unexpected error (logged once; the connection stays usable)",
    "503": "the model is loading or the database is away",
}


def answers(whole: type[BaseModel], *, events: bool = False) -> dict[int | str, dict[str, Any]]:
    """A completion route's 200: the whole answer, or with `stream` its server-sent events
    (`data: <chunk JSON>` each, `data: [DONE]` last; with `events`, Anthropic's: each
    also named by an `event:` line, no [DONE])."""
    # Before OpenAPI 3.2 an event stream's `schema` describes each event.
    data = {"type": "string", "description": "a chunk as JSON; the last, [DONE]"}
    fields: dict[str, Any] = {"data": data}
    if events:
        data = {"type": "string", "description": "the event as JSON"}
        fields = {"event": {"type": "string"}, "data": data}
    event = {"type": "object", "required": ["data"], "properties": fields}
    return {200: {"model": whole, "content": {"text/event-stream": {"schema": event}}}}


def _errors(path: str, operation: dict[str, Any]) -> list[str]:
    """The error statuses an operation may answer."""
    if path in OPEN_PATHS:
        return ["500"]
    has_body = "requestBody" in operation
    names = {p.get("in") for p in operation.get("parameters", [])}
    statuses = ["401", "403", "429", "500", "503"]
    if has_body or names:
        statuses.append("400")
    if has_body and not path.startswith(RELAY_PREFIX):  # an oversized batch is a 400
        statuses.append("413")
    if has_body or "path" in names:
        statuses.append("404")
    return sorted(statuses)


def document(app: FastAPI, settings: Settings) -> dict[str, Any]:
    """The app's OpenAPI document, built once."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    spec = get_openapi(
        title=app.title, version=app.version, routes=app.routes, description=app.description
    )
    schemas = spec.setdefault("components", {}).setdefault("schemas", {})
    schemas["ErrorResponse"] = ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/{model}"
    )
    schemas.update(schemas["ErrorResponse"].pop("$defs", {}))
    schemas["AnthropicError"] = anthropic.ErrorResponse.model_json_schema(
        ref_template="#/components/schemas/Anthropic{model}"
    )
    schemas.update({f"Anthropic{k}": v for k, v in schemas["AnthropicError"].pop("$defs").items()})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            shape = ANTHROPIC_ERROR if path.startswith(ANTHROPIC_ROUTES) else ERROR
            for status in _errors(path, operation):
                answer = responses.setdefault(status, {"description": REASONS[status]})
                answer.setdefault("content", {"application/json": {"schema": shape}})
                if status in ("429", "503"):
                    answer.setdefault("headers", RETRY_AFTER)
    score = schemas.get("FeedbackIn", {}).get("properties", {}).get("score")
    if score is not None:  # only the configured scores are accepted
        allowed = list(settings.feedback_scores)
        score.pop("type", None)
        score.update(enum=allowed, description=f"one of {allowed} (setting feedback_scores)")
    app.openapi_schema = spec
    return spec
