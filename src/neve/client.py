"""The one Python client of a running hub: used by the CLI's client commands, the UI,
and people in notebooks."""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx

from neve.errors import NeveError

DEFAULT_TIMEOUT = httpx.Timeout(10.0, read=300.0)


class HubError(NeveError):
    """The hub answered with an error, or could not be reached; the message says which,
    and `hub_status` is the status the hub answered (None when it gave none)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.hub_status = status


@dataclass
class ChatDelta:
    content: str = ""
    reasoning: str = ""
    finish_reason: str | None = None
    citations: list[dict[str, Any]] | None = None  # a grounded answer's sources, first


class NeveClient:
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url.rstrip("/")
        sent = dict(headers or {})
        if api_key:
            sent["Authorization"] = f"Bearer {api_key}"
        self._sent, self._timeout = sent, timeout
        self._http = httpx.Client(base_url=self.url, headers=sent, timeout=timeout)

    def __reduce__(self) -> tuple[Any, ...]:
        """The same client in another process (a Ray Data worker), with its own
        connections."""
        return functools.partial(NeveClient, headers=self._sent, timeout=self._timeout), (self.url,)

    @classmethod
    def from_environment(cls, url: str | None = None) -> NeveClient:
        """The hub at `url`, else NEVE_URL, else the configured host and port; the key
        from NEVE_API_KEY, else the configured api_key (VLLM_API_KEY)."""
        from neve.config import load_settings

        settings = load_settings()
        key = os.environ.get("NEVE_API_KEY") or (
            settings.api_key.get_secret_value() if settings.api_key else None
        )
        return cls(url or os.environ.get("NEVE_URL") or settings.url, api_key=key)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> NeveClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        _raise_for_error(response)
        return response

    def _unreachable(self, exc: Exception) -> HubError:
        return HubError(
            f"no hub answers at {self.url} ({exc.__class__.__name__}); start one "
            "with `neve up`, or point --url / NEVE_URL at it"
        )

    def ask(
        self, question: str, *, model: str | None = None, top_k: int | None = None
    ) -> dict[str, Any]:
        """An answer grounded in the hub's documents: a chat completion with `citations`."""
        body: dict[str, Any] = {"question": question}
        if model:
            body["model"] = model
        if top_k:
            body["top_k"] = top_k
        reply: dict[str, Any] = self._request("POST", "/v1/rag/query", json=body).json()
        return reply

    def health(self) -> bool:
        try:
            return self._http.get("/health").status_code == 200
        except httpx.TransportError:
            return False

    def readiness(self) -> tuple[bool, str, float | None]:
        """(ready, what the hub is doing, seconds it asks us to wait)."""
        try:
            response = self._http.get("/ready")
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None
        body = response.json()
        retry = response.headers.get("retry-after")
        return response.status_code == 200, body.get("detail", ""), float(retry) if retry else None

    def wait_ready(
        self, timeout: float = 120.0, on_wait: Callable[[str, float], None] | None = None
    ) -> None:
        deadline = time.monotonic() + timeout
        while True:
            ready, detail, retry = self.readiness()
            if ready:
                return
            if retry is None:
                raise HubError(f"the hub cannot serve: {detail}", 503)
            if time.monotonic() + retry > deadline:
                raise HubError(f"the hub was not ready after {timeout:.0f} s: {detail}", 503)
            if on_wait:
                on_wait(detail, retry)
            time.sleep(min(retry, 1.0))

    def models(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/models").json()["data"])

    def relay(
        self, rows: list[list[Any]], *, embed: bool = False, function: str | None = None
    ) -> list[Any]:
        """One Snowflake-style batch through /relay (or /relay/embed, or an AI function's
        /relay/ai/<function>, or /relay/search_docs): results by row."""
        path = "/relay/embed" if embed else f"/relay/{function}" if function else "/relay"
        answer = self._request("POST", path, json={"data": rows}).json()["data"]
        by_index = {index: result for index, result in answer}
        return [by_index[row[0]] for row in rows]

    def chat(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        body = {"messages": messages, **params, "stream": False}
        return dict(self._request("POST", "/v1/chat/completions", json=body).json())

    def chat_stream(
        self, messages: list[dict[str, str]], **params: Any
    ) -> Generator[ChatDelta, None, None]:
        """The answer as it is generated; closing the generator ends the request (and the
        generation)."""
        body = {"messages": messages, **params, "stream": True}
        try:
            with self._http.stream("POST", "/v1/chat/completions", json=body) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for_error(response)
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    event = json.loads(line[6:])
                    if "error" in event:
                        raise HubError(event["error"].get("message", "generation failed"))
                    if event.get("citations") is not None:
                        yield ChatDelta(citations=event["citations"])
                    for choice in event.get("choices", []):
                        delta = choice.get("delta", {})
                        yield ChatDelta(
                            content=delta.get("content") or "",
                            reasoning=delta.get("reasoning_content") or "",
                            finish_reason=choice.get("finish_reason"),
                        )
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from None

    def me(self) -> dict[str, Any]:
        """Who the hub takes this client for: user, role and groups."""
        return dict(self._request("GET", "/v1/me").json())

    # Conversations: the UI's history, kept by the hub per user.

    def conversations(self, limit: int = 100) -> list[dict[str, Any]]:
        found = self._request("GET", "/v1/conversations", params={"limit": limit})
        return list(found.json()["data"])

    def create_conversation(self, title: str) -> dict[str, Any]:
        return dict(self._request("POST", "/v1/conversations", json={"title": title}).json())

    def conversation(self, conversation_id: str) -> dict[str, Any]:
        return dict(self._request("GET", f"/v1/conversations/{conversation_id}").json())

    def delete_conversation(self, conversation_id: str) -> None:
        self._request("DELETE", f"/v1/conversations/{conversation_id}")

    def add_message(self, conversation_id: str, **message: Any) -> dict[str, Any]:
        path = f"/v1/conversations/{conversation_id}/messages"
        return dict(self._request("POST", path, json=message).json())

    # Feedback and monitoring.

    def send_feedback(self, score: int, **fields: Any) -> dict[str, Any]:
        body = {"score": score, **{k: v for k, v in fields.items() if v is not None}}
        return dict(self._request("POST", "/v1/feedback", json=body).json())

    def feedback(self, **filters: Any) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/feedback", params=_given(filters)).json()["data"])

    def feedback_csv(self, **filters: Any) -> bytes:
        params = {**_given(filters), "format": "csv"}
        return self._request("GET", "/v1/feedback", params=params).content

    def monitoring(self, window: str = "24h", buckets: int = 30) -> dict[str, Any]:
        params = {"window": window, "buckets": buckets}
        return dict(self._request("GET", "/v1/monitoring/summary", params=params).json())

    # Documents.

    def documents(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/documents").json()["data"])

    def upload_documents(
        self, files: list[tuple[str, bytes]], groups: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """Upload and index files (name, content); the hub answers once they are indexed."""
        parts = [("files", (name, content)) for name, content in files]
        data = {"groups": ",".join(groups)} if groups else None
        return list(self._request("POST", "/v1/documents", files=parts, data=data).json()["data"])

    def delete_document(self, document_id: str) -> None:
        self._request("DELETE", f"/v1/documents/{document_id}")

    def reindex_document(self, document_id: str) -> dict[str, Any]:
        return dict(self._request("POST", f"/v1/documents/{document_id}/reindex").json())


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in (None, "")}


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    raise HubError(f"{message} (HTTP {response.status_code})", response.status_code)
