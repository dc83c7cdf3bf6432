"""How a replica bundles a stream's chunks (neve/ray/streaming.py): every chunk once, in
order; nothing held before the answer's first text; an engine's failure after what came
before it. Pure asyncio: no cluster needed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neve.protocol.openai import ChatCompletionChunk, ChunkChoice, Delta
from neve.ray.streaming import bundled


def _chunk(i: int, text: bool) -> ChatCompletionChunk:
    delta = Delta(content=f"t{i}") if text else Delta(role="assistant")
    return ChatCompletionChunk(
        id=str(i), created=0, model="m", choices=[ChunkChoice(index=0, delta=delta)]
    )


async def _engine(
    chunks: list[ChatCompletionChunk], gaps: list[float], fail: bool
) -> AsyncIterator[ChatCompletionChunk]:
    for chunk, gap in zip(chunks, gaps, strict=True):
        await asyncio.sleep(gap)
        yield chunk
    if fail:
        raise RuntimeError("engine failed")


async def _collect(
    stream: AsyncIterator[list[ChatCompletionChunk]],
) -> tuple[list[list[ChatCompletionChunk]], BaseException | None]:
    got = []
    try:
        async for bundle in stream:
            got.append(bundle)
    except RuntimeError as exc:
        return got, exc
    return got, None


@settings(max_examples=60, deadline=None)
@given(
    heads=st.integers(0, 2),
    texts=st.integers(0, 12),
    gaps=st.lists(st.sampled_from([0.0, 0.001, 0.004]), min_size=14, max_size=14),
    interval=st.sampled_from([0.0, 0.003, 0.01]),
    fail=st.booleans(),
)
def test_every_chunk_crosses_once_in_order_and_the_first_text_alone(
    heads: int, texts: int, gaps: list[float], interval: float, fail: bool
) -> None:
    chunks = [_chunk(i, text=i >= heads) for i in range(heads + texts)]
    stream = _engine(chunks, gaps[: len(chunks)], fail)
    got, failure = asyncio.run(_collect(bundled(stream, interval)))
    assert [c for bundle in got for c in bundle] == chunks
    assert all(got), "no empty bundle"
    first_text = min(heads, len(chunks))
    for i in range(min(first_text + 1, len(chunks))):
        assert got[i] == [chunks[i]], "held before the first text has gone"
    if interval == 0:
        assert all(len(b) == 1 for b in got)
    assert (failure is not None) == fail


def test_chunks_arriving_within_the_interval_travel_together() -> None:
    chunks = [_chunk(0, text=True)] + [_chunk(i, text=True) for i in range(1, 21)]
    got, _ = asyncio.run(_collect(bundled(_engine(chunks, [0.0] * 21, False), 0.05)))
    assert got[0] == chunks[:1]
    assert len(got) == 2 and got[1] == chunks[1:]


@pytest.mark.parametrize("interval", [0.0, 0.05])
def test_a_client_that_leaves_stops_the_engine_stream(interval: float) -> None:
    """Closing the bundles closes the engine's stream, freeing its sequence."""
    closed = asyncio.Event()

    async def endless() -> AsyncIterator[ChatCompletionChunk]:
        try:
            i = 0
            while True:
                await asyncio.sleep(0.001)
                yield _chunk(i, text=True)
                i += 1
        finally:
            closed.set()

    async def run() -> None:
        stream = bundled(endless(), interval)
        await anext(stream)
        await anext(stream)
        await stream.aclose()
        await asyncio.wait_for(closed.wait(), 1)

    asyncio.run(run())
