"""The request size limit in front of every route (auth.py holds the keys), and which
paths are open to all."""

from __future__ import annotations

from neve.api.asgi import ASGIApp, Message, Receive, Scope, Send
from neve.api.errors import error_response
from neve.errors import BadRequest, NeveError, TooLarge

# Probes must answer without credentials (load balancers and orchestrators call them).
OPEN_PATHS = frozenset({"/health", "/ready"})
# Snowflake's batch routes: their protocol wants 400 for every malformed batch.
RELAY_PREFIX = "/relay"


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

        def too_large() -> NeveError:
            kind = BadRequest if path.startswith(self.status_400_prefix) else TooLarge
            return kind(
                f"the request body is larger than the limit of {limit} bytes (setting {setting})",
                code="request_too_large",
            )

        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await error_response(too_large(), path=path)(scope, receive, send)
        seen = 0
        exceeded: NeveError | None = None

        async def counted() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    exceeded = too_large()
                    raise exceeded
            return message

        async def unless_exceeded(message: Message) -> None:
            # What the app answers to a body cut short (FastAPI: "error parsing the
            # body") gives way to the answer that names the limit.
            if exceeded is None:
                await send(message)

        try:
            await self.app(scope, counted, unless_exceeded)
        except NeveError as exc:
            if exc is not exceeded:
                raise
        if exceeded is not None:
            await error_response(exceeded, path=path)(scope, receive, send)
