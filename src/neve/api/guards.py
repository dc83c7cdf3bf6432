"""ASGI guards in front of every route: the request size limit (auth.py holds the keys).

Written as plain ASGI middleware (not BaseHTTPMiddleware) so streamed responses pass
through untouched and unbuffered.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes must answer without credentials (load balancers and orchestrators call them).
OPEN_PATHS = frozenset({"/health", "/ready"})
# Snowflake's batch routes: their protocol wants 400 for every malformed batch.
RELAY_PREFIX = "/relay"


async def reject(
    send: Send,
    status: int,
    message: str,
    code: str,
    headers: list[tuple[bytes, bytes]],
    type: str = "invalid_request_error",
) -> None:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": type,
                "param": None,
                "code": code,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), *headers],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses bodies over `limit` bytes with 413, by Content-Length or as they stream.
    `overrides` gives paths under a prefix their own limit (and the setting to name).

    Snowflake's relay protocol wants 400 for every malformed batch, an oversized one
    included, so paths under a `status_400_prefix` get 400 instead."""

    def __init__(
        self,
        app: ASGIApp,
        limit: int,
        overrides: dict[str, tuple[int, str]] | None = None,
        status_400_prefix: str = RELAY_PREFIX,
    ) -> None:
        self.app = app
        self.limit = limit
        self.overrides = overrides or {}
        self.status_400_prefix = status_400_prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit, setting = next(
            (v for prefix, v in self.overrides.items() if path.startswith(prefix)),
            (self.limit, "max_request_bytes"),
        )
        declared = dict(scope["headers"]).get(b"content-length")
        status = 400 if path.startswith(self.status_400_prefix) else 413
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _too_large(send, status, limit, setting)
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return message

        try:
            await self.app(scope, counted, send)
        except _TooLarge:
            await _too_large(send, status, limit, setting)


async def _too_large(send: Send, status: int, limit: int, setting: str) -> None:
    await reject(
        send,
        status,
        f"the request body is larger than the limit of {limit} bytes (setting {setting})",
        "request_too_large",
        [],
    )


class _TooLarge(Exception):
    pass
