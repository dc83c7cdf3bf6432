"""Answers that stop when their client leaves."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

from neve.api.asgi import Receive
from neve.errors import ClientGone

T = TypeVar("T")


async def unless_client_leaves(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work`, cancelling it (and so freeing its sequences) if the client
    disconnects first. The body has been read, so the next ASGI message is the
    disconnect."""
    task = asyncio.ensure_future(work)

    async def gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(gone())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    raise ClientGone("the client left before its answer was ready")
