"""Who is calling, and may they: API keys (configured or from the store), the identity a
trusted proxy names, and per-key rate limits. Plain ASGI, like the other guards."""

from __future__ import annotations

import asyncio
import hmac
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import psycopg
from fastapi import Request
from sqlalchemy.exc import SQLAlchemyError

from neve.api.asgi import ASGIApp, Receive, Scope, Send
from neve.api.errors import error_response
from neve.api.guards import OPEN_PATHS
from neve.errors import RateLimited, Unauthorized
from neve.store import keys, limits
from neve.store.db import Store
from neve.store.keys import Identity

log = logging.getLogger("neve.api")

# Without keys the hub is one person's: every caller is this local admin.
LOCAL = Identity(user="local", role="admin")
PROXY_HEADER = b"sf-context-current-user"  # set by Snowpark Container Services ingress


def caller(request: Request) -> Identity:
    identity: Identity = request.scope.get("state", {}).get("identity", LOCAL)
    return identity


class KeyRing:
    """The store's keys, in memory: a request costs no database round trip, and callers
    stay known while the database is away. Re-read every `interval` seconds, and on an
    unknown key (at most once a second), so a key made by `neve keys create` works at once,
    on every instance of a fleet."""

    def __init__(self, store: Store, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.loaded = time.monotonic()  # when the read behind `known` began
        self.known = keys.snapshot(store)
        self._lock = asyncio.Lock()

    async def refresh(self, unless_since: float) -> None:
        """Re-read the keys unless a read began at or after `unless_since`."""
        async with self._lock:
            if self.loaded >= unless_since:
                return
            # Stamped with when the read began, not ended: a key made while a read was on
            # its way is not in it, and a caller asking for that key must cause another.
            began = time.monotonic()
            try:
                self.known = await asyncio.to_thread(keys.snapshot, self.store)
            except SQLAlchemyError as exc:
                log.warning("cannot re-read API keys; using those known", extra={"error": str(exc)})
            self.loaded = began

    async def lookup(self, token: str) -> Identity | None:
        await self.refresh(time.monotonic() - self.interval)
        wanted = keys.digest(token)
        found = self.known.identities.get(wanted)
        if found is None:
            # Re-read for an unknown key, waiting out the second since the last read: a
            # key just made is found, and a flood of wrong keys costs one read a second.
            asked = time.monotonic()
            await asyncio.sleep(max(0.0, self.loaded + 1.0 - asked))
            await self.refresh(asked)
            found = self.known.identities.get(wanted)
        return found


@dataclass
class _Window:
    requests: deque[float] = field(default_factory=deque)
    tokens: deque[tuple[float, int]] = field(default_factory=deque)


class RateLimiter:
    """Requests and tokens per minute, per key, over a sliding minute, in this process's
    memory (one instance). Tokens are counted when a request ends, so one request may
    overshoot; the next waits until the minute has room again."""

    def __init__(self, default_rpm: int, default_tpm: int) -> None:
        self.default_rpm = default_rpm
        self.default_tpm = default_tpm
        self._windows: dict[str, _Window] = {}

    def limits(self, identity: Identity) -> tuple[int, int]:
        """The caller's (rpm, tpm); 0 is no limit."""
        rpm = self.default_rpm if identity.rpm is None else identity.rpm
        tpm = self.default_tpm if identity.tpm is None else identity.tpm
        return rpm, tpm

    def _window(self, identity: Identity, now: float) -> _Window:
        window = self._windows.setdefault(_key(identity), _Window())
        while window.requests and window.requests[0] <= now - limits.WINDOW:
            window.requests.popleft()
        while window.tokens and window.tokens[0][0] <= now - limits.WINDOW:
            window.tokens.popleft()
        return window

    async def admit(self, identity: Identity) -> tuple[str, int] | None:
        """None when the request may go; else what is exhausted and seconds until not."""
        now = time.monotonic()
        window = self._window(identity, now)
        rpm, tpm = self.limits(identity)
        if rpm and len(window.requests) >= rpm:
            return f"{rpm} requests per minute", _after(window.requests[0], now)
        if tpm and sum(n for _, n in window.tokens) >= tpm:
            return f"{tpm} tokens per minute", _after(window.tokens[0][0], now)
        window.requests.append(now)
        return None

    def spend(self, identity: Identity, tokens: int) -> None:
        now = time.monotonic()
        self._window(identity, now).tokens.append((now, tokens))

    async def close(self) -> None:
        """Nothing to let go of: the minute lives in this process."""


class SharedRateLimiter(RateLimiter):
    """The same limits with the minute kept in the database, counted by every instance of
    a fleet. A key without limits costs no round trip. While the database is away requests
    go unlimited (and say so in the log) rather than fail."""

    def __init__(self, windows: limits.SharedWindows, default_rpm: int, default_tpm: int) -> None:
        super().__init__(default_rpm, default_tpm)
        self.windows = windows
        self._spending: set[asyncio.Task[None]] = set()

    async def admit(self, identity: Identity) -> tuple[str, int] | None:
        rpm, tpm = self.limits(identity)
        if not (rpm or tpm):
            return None
        try:
            return await self.windows.admit(_key(identity), rpm, tpm)
        except psycopg.Error as exc:
            log.warning("cannot check rate limits; letting the request go",
                        extra={"error": str(exc).splitlines()[0]})  # fmt: skip
            return None

    def spend(self, identity: Identity, tokens: int) -> None:
        """Recorded in the background: a request's end does not wait on the database."""
        if not self.limits(identity)[1]:
            return
        task = asyncio.get_running_loop().create_task(self._spend(_key(identity), tokens))
        self._spending.add(task)
        task.add_done_callback(self._spending.discard)

    async def close(self) -> None:
        await asyncio.gather(*self._spending, return_exceptions=True)
        await self.windows.close()

    async def _spend(self, key: str, tokens: int) -> None:
        try:
            await self.windows.spend(key, tokens)
        except psycopg.Error as exc:
            log.warning("cannot record tokens spent", extra={"error": str(exc).splitlines()[0]})


def _after(oldest: float, now: float) -> int:
    return max(1, math.ceil(oldest + limits.WINDOW - now))


def _key(identity: Identity) -> str:
    return identity.key_id or f"user:{identity.user}"


class Auth:
    """Requires a key once one exists (in the store) or is configured (api_key); puts the
    caller's Identity in the request's state; applies the caller's rate limits."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        ring: KeyRing,
        limiter: RateLimiter,
        api_key: str | None,
        trust_proxy: bool,
    ) -> None:
        self.app = app
        self.ring = ring
        self.limiter = limiter
        self.api_key = api_key.encode() if api_key else None
        self.trust_proxy = trust_proxy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        identity = await self.identify(dict(scope["headers"]))
        if identity is None:
            refused = Unauthorized(
                "a valid API key is required: send Authorization: Bearer <key> (or x-api-key)"
            )
            return await error_response(
                refused, {"WWW-Authenticate": "Bearer"}, path=scope["path"]
            )(scope, receive, send)
        scope.setdefault("state", {})["identity"] = identity
        limited = await self.limiter.admit(identity)
        if limited is not None:
            what, wait = limited
            message = f"rate limit of {what} reached for this key; retry in {wait} s"
            return await error_response(RateLimited(message, retry_after=wait), path=scope["path"])(
                scope, receive, send
            )
        await self.app(scope, receive, send)

    async def identify(self, headers: dict[bytes, bytes]) -> Identity | None:
        given = headers.get(b"authorization", b"")
        token = given[len(b"Bearer ") :].strip() if given.startswith(b"Bearer ") else b""
        # Anthropic's clients send their key as x-api-key.
        token = token or headers.get(b"x-api-key", b"").strip()
        if token:
            if self.api_key is not None and hmac.compare_digest(token, self.api_key):
                return Identity(user="admin", role="admin", key_id="api_key")
            found = await self.ring.lookup(token.decode("utf-8", "replace"))
            if found is not None:
                return found
        if self.trust_proxy and headers.get(PROXY_HEADER):
            user = headers[PROXY_HEADER].decode("utf-8", "replace").strip('"')
            return Identity(user=user, groups=self.ring.known.groups.get(user, frozenset()))
        if self.api_key is None and not self.ring.known.exist:
            return LOCAL
        return None
