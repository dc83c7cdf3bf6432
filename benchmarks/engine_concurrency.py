"""Aggregate output tokens/s at 1, 4, 8 and 16 concurrent streaming requests against one
running `neve serve`, and the time from launch to /ready 200.

Every request generates exactly --tokens tokens (ignore_eos), so rounds differ only in
concurrency. Rounds are repeated and interleaved (1, 4, 8, 16, 1, 4, ...) so the noise of a
shared machine falls on all of them alike; each level reports its median round.

Prints the ratio of 8-concurrent to 1-concurrent throughput last (target >= 1.2).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from typing import Any

import httpx

from processes import NEVE, free_port, start

LEVELS = (1, 4, 8, 16)


async def stream_one(
    http: httpx.AsyncClient, i: int, tokens: int, extra: dict[str, Any] | None = None
) -> int:
    body = {
        "messages": [{"role": "user", "content": f"Tell story number {i} about a city."}],
        "max_tokens": tokens,
        "ignore_eos": True,
        "temperature": 0.8,
        "seed": i,
        "stream": True,
        "stream_options": {"include_usage": True},
        **(extra or {}),
    }
    generated = 0
    async with http.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                if event.get("usage"):
                    generated = event["usage"]["completion_tokens"]
    return generated


async def round_at(
    http: httpx.AsyncClient, level: int, tokens: int, extra: dict[str, Any] | None = None
) -> float:
    started = time.perf_counter()
    counts = await asyncio.gather(*(stream_one(http, i, tokens, extra) for i in range(level)))
    elapsed = time.perf_counter() - started
    assert all(c == tokens for c in counts), counts
    return sum(counts) / elapsed


async def measure(base: str, tokens: int, repeats: int) -> dict[int, list[float]]:
    results: dict[int, list[float]] = {level: [] for level in LEVELS}
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base, timeout=600, limits=limits) as http:
        await round_at(http, 2, 8)  # warm-up
        for _ in range(repeats):
            for level in LEVELS:
                results[level].append(await round_at(http, level, tokens))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=96, help="tokens per request")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per level")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        started = time.perf_counter()
        process = start([*NEVE, "serve", "--port", str(port), "--data-dir", data_dir],
                        f"http://127.0.0.1:{port}/ready")  # fmt: skip
        ready_s = time.perf_counter() - started
        try:
            results = asyncio.run(measure(f"http://127.0.0.1:{port}", args.tokens, args.repeats))
        finally:
            process.terminate()
            process.wait()

    print(f"neve serve -> /ready 200: {ready_s:.2f} s (target < 5 s)")
    print(f"{args.tokens} tokens per request, {args.repeats} interleaved rounds per level")
    medians = {level: statistics.median(v) for level, v in results.items()}
    for level in LEVELS:
        runs = ", ".join(f"{v:.0f}" for v in results[level])
        print(f"  {level:>2} concurrent: {medians[level]:6.1f} tok/s  (rounds: {runs})")
    print(f"throughput ratio 8-concurrent / 1-concurrent: {medians[8] / medians[1]:.2f}")


if __name__ == "__main__":
    main()
