"""Answering another wire protocol through the chat path: the chat path's stream read back,
event by event, for a route to translate; and the stream it answers with."""

from __future__ import annotations

import json
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse


async def chat_events(
    source: AsyncIterator[str | bytes],
) -> AsyncGenerator[str | dict[str, Any], None]:
    """The chat path's server-sent events: a keep-alive comment as it came (every SSE
    client skips one), each data event as its JSON (a chunk, a citations head, an error);
    [DONE] is left out. Closing this closes the chat stream, which cancels generation
    when the client leaves."""
    try:
        async for piece in source:
            text = piece.decode() if isinstance(piece, bytes) else piece
            for block in text.split("\n\n"):
                if block.startswith(":"):
                    yield block + "\n\n"
                elif block.startswith("data: {"):
                    yield json.loads(block[6:])
    finally:
        await source.aclose()  # type: ignore[attr-defined]


def event_stream(events: AsyncIterator[str] | AsyncIterator[bytes]) -> StreamingResponse:
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
