"""The OpenAPI document tells the truth (in process: no hub needed). The fuzzer
(tests/fuzz) holds the running hub to it."""

from __future__ import annotations

from typing import Any

import pytest

from neve.api.app import create_app
from neve.config import Settings


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    settings = Settings(data_dir=tmp_path_factory.mktemp("spec"), feedback_scores=[1, 2, 3])
    document: dict[str, Any] = create_app(settings).openapi()
    return document


def _operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(p, m, o) for p, ops in spec["paths"].items() for m, o in ops.items()]


def test_validation_errors_are_documented_as_400_in_the_routes_shape(
    spec: dict[str, Any],
) -> None:
    """OpenAI's error shape, but on Anthropic's routes Anthropic's."""
    for path, method, operation in _operations(spec):
        responses = operation["responses"]
        assert "422" not in responses, (method, path)
        if "requestBody" in operation or operation.get("parameters"):
            error = responses["400"]["content"]["application/json"]["schema"]
            shape = "AnthropicError" if path.startswith("/v1/messages") else "ErrorResponse"
            assert error == {"$ref": f"#/components/schemas/{shape}"}, (method, path)
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    anthropic = spec["components"]["schemas"]["AnthropicError"]
    assert anthropic["properties"]["error"] == {"$ref": "#/components/schemas/AnthropicErrorDetail"}


def test_statuses_the_guards_and_routes_give_are_documented(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    for path, method, operation in _operations(spec):
        if path not in ("/health", "/ready"):
            assert {"401", "429", "503"} <= set(operation["responses"]), (method, path)
        if "{" in path:
            assert "404" in operation["responses"], (method, path)
    assert "Retry-After" in paths["/v1/chat/completions"]["post"]["responses"]["429"]["headers"]
    assert "404" in paths["/v1/chat/completions"]["post"]["responses"]  # model_not_found
    assert "413" not in paths["/relay"]["post"]["responses"]  # an oversized batch is a 400
    assert set(paths["/v1/feedback"]["post"]["responses"]) >= {"200", "201"}  # 200: a retry


def test_bodies_and_content_types_are_described(spec: dict[str, Any]) -> None:
    paths = spec["paths"]
    for route in ("/relay", "/relay/embed"):
        body = paths[route]["post"]["requestBody"]["content"]["application/json"]["schema"]
        assert body["required"] == ["data"] and body["properties"]["data"]["type"] == "array"
    assert "text/plain" in paths["/metrics"]["get"]["responses"]["200"]["content"]
    downloads = paths["/v1/feedback"]["get"]["responses"]["200"]["content"]
    assert {"application/json", "text/csv", "application/x-ndjson"} <= set(downloads)
    for route in ("/v1/chat/completions", "/v1/completions", "/v1/rag/query"):
        assert "text/event-stream" in paths[route]["post"]["responses"]["200"]["content"]


def test_fields_say_what_the_server_takes(spec: dict[str, Any]) -> None:
    schemas = spec["components"]["schemas"]
    assert schemas["FeedbackIn"]["properties"]["score"]["enum"] == [1, 2, 3]
    prompt = schemas["CompletionRequest"]["properties"]["prompt"]["anyOf"]
    assert {"type": "string", "minLength": 1} in prompt
    assert all(form.get("minItems") == 1 for form in prompt if form.get("type") == "array")
    assert "suffix" not in schemas["CompletionRequest"]["properties"]
    stop = schemas["ChatCompletionRequest"]["properties"]["stop"]["anyOf"]
    assert {"type": "string", "minLength": 1} in stop
    filters = schemas["RagSearchRequest"]["properties"]["filters"]
    assert filters["additionalProperties"] is False and "page" in filters["properties"]
