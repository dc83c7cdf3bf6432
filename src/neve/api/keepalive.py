"""Keep-alive comments for server-sent events that wait.

A proxy in front of the hub drops a connection that stays silent too long (SPCS ingress
after about 90 s, nginx after 60 s by default), and a stream can wait that long for its
next event: a model still loading, a long prompt, a full queue. An SSE comment line
every `stream_keepalive` seconds keeps the connection open; SSE clients (the OpenAI
SDKs, browsers, neve's client) skip comments.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import TypeVar

KEEPALIVE = ": keep-alive\n\n"

T = TypeVar("T")


async def opened(call: Awaitable[T], interval: float) -> T | asyncio.Task[T]:
    """What `call` gives, when it gives it within `interval` seconds (0: however long),
    so a request refused at once keeps its own status; otherwise the task still at it,
    for a response that starts now and sends keep-alives until the task is done."""
    if interval <= 0:
        return await call
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait((task,), timeout=interval)
    except asyncio.CancelledError:
        task.cancel()  # the client left while the engine was still opening its stream
        raise
    return task.result() if done else task


async def paced(items: AsyncIterator[T], interval: float) -> AsyncGenerator[T | None, None]:
    """`items`, with None wherever `interval` seconds pass without one (0: never)."""
    if interval <= 0:
        async for item in items:
            yield item
        return
    # The next item is awaited in a task of its own, so that a timeout does not cancel
    # it: the engine goes on producing it while a keep-alive is sent.
    pending: asyncio.Future[T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait((pending,), timeout=interval)
            if not done:
                yield None
                continue
            arrived, pending = pending, None
            try:
                item = arrived.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        if pending is not None:
            pending.cancel()
            # Wait for it to unwind, so the caller may close `items` afterwards.
            await asyncio.wait((pending,))
