"""One request-log row per API request: who, which route and model, tokens, time to
first token, latency, status and error. Routes fill the request's Outcome; this ASGI
middleware writes the row when the response ends (or the client leaves)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from fastapi import Request

from neve.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neve.api.auth import RateLimiter
from neve.api.guards import OPEN_PATHS
from neve.errors import unexpected
from neve.protocol.openai import Usage
from neve.store.tables import now
from neve.store.usage import RequestLogWriter

NOT_LOGGED = OPEN_PATHS | {"/metrics"}  # probes and scrapes would drown the rest
ERROR_BYTES = 4096  # of an error body kept to find its message


@dataclass
class Outcome:
    model: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    ttft: float | None = None  # seconds
    error: str | None = None

    def used(self, usage: Usage | None) -> None:
        if usage is not None:
            self.prompt_tokens = usage.prompt_tokens
            self.completion_tokens = usage.completion_tokens


def outcome_of(request: Request) -> Outcome:
    """The request's Outcome; a detached one where the route is not logged."""
    found: Outcome | None = request.scope.get("state", {}).get("outcome")
    return found if found is not None else Outcome()


class RequestRecorder:
    def __init__(self, app: ASGIApp, writer: RequestLogWriter, limiter: RateLimiter) -> None:
        self.app = app
        self.writer = writer
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in NOT_LOGGED:
            return await self.app(scope, receive, send)
        outcome = Outcome()
        state = scope.setdefault("state", {})
        state["outcome"] = outcome
        started = time.perf_counter()
        status = 499  # nginx's "client closed": no response was started
        error_body = b""

        async def watched(message: Message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
            elif status >= 400 and len(error_body) < ERROR_BYTES:
                error_body += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            status = 500
            outcome.error = outcome.error or unexpected(exc).message
            raise
        finally:
            identity = state.get("identity")
            tokens = (outcome.prompt_tokens or 0) + (outcome.completion_tokens or 0)
            if identity is not None and tokens:
                self.limiter.spend(identity, tokens)
            route = scope.get("route")
            self.writer.add(
                {
                    "time": now(),
                    "username": identity.user if identity else None,
                    "key_id": identity.key_id if identity else None,
                    "route": getattr(route, "path", None) or scope["path"][:200],
                    "model": outcome.model,
                    "prompt_tokens": outcome.prompt_tokens,
                    "completion_tokens": outcome.completion_tokens,
                    "ttft_ms": outcome.ttft * 1000 if outcome.ttft is not None else None,
                    "latency_ms": (time.perf_counter() - started) * 1000,
                    "status": status,
                    "error": outcome.error or _message(error_body),
                }
            )


def _message(body: bytes) -> str | None:
    if not body:
        return None
    try:
        return str(json.loads(body)["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return body[:200].decode("utf-8", "replace")
