"""Rows/s of one 256-row /relay batch against the same 256 prompts sent straight to the
chat API at the same concurrency, both on one running hub, after an unmeasured round of
each (which fills the prefix cache both then read), rounds interleaved. Also the
rows/s of one-row-at-a-time /relay calls, which is what the old relay did, and of
AI_CLASSIFY (/relay/ai/classify) over the same rows beside COMPLETE, in the same rounds.

Each relay row is a chat request (the prompt as the user message), so the direct requests
are the same chat requests: same messages, same settings, greedy, so the same tokens.

Prints the ratio AI_CLASSIFY/COMPLETE per row (target >= 0.9), and relay/direct last
(target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time

import httpx

from processes import NEVE, free_port, start

SYSTEM = "Be brief."
OPTIONS = {"max_tokens": 16, "temperature": 0, "system": SYSTEM}
CATEGORIES = ["hardware", "network", "software"]


def prompts(n: int) -> list[str]:
    return [
        f"Summarize ticket {i}: the printer on floor {i % 7} is jammed again." for i in range(n)
    ]


async def via_relay(http: httpx.AsyncClient, batch: list[str]) -> float:
    rows = [[i, p, OPTIONS] for i, p in enumerate(batch)]
    started = time.perf_counter()
    reply = await http.post("/relay", json={"data": rows})
    reply.raise_for_status()
    assert len(reply.json()["data"]) == len(batch)
    return len(batch) / (time.perf_counter() - started)


async def via_classify(http: httpx.AsyncClient, batch: list[str]) -> float:
    rows = [[i, p, CATEGORIES] for i, p in enumerate(batch)]
    started = time.perf_counter()
    reply = await http.post("/relay/ai/classify", json={"data": rows})
    reply.raise_for_status()
    answers = [labels for _, labels in reply.json()["data"]]
    assert all(a is not None and a["labels"][0] in CATEGORIES for a in answers), answers
    return len(batch) / (time.perf_counter() - started)


async def direct(http: httpx.AsyncClient, batch: list[str], concurrency: int) -> float:
    gate = asyncio.Semaphore(concurrency)

    async def one(prompt: str) -> None:
        body = {
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": prompt},
            ],
            "max_tokens": OPTIONS["max_tokens"],
            "temperature": 0,
        }
        async with gate:
            (await http.post("/v1/chat/completions", json=body)).raise_for_status()

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in batch))
    return len(batch) / (time.perf_counter() - started)


async def one_row_at_a_time(http: httpx.AsyncClient, batch: list[str]) -> float:
    started = time.perf_counter()
    for i, prompt in enumerate(batch):
        reply = await http.post("/relay", json={"data": [[i, prompt, OPTIONS]]})
        reply.raise_for_status()
    return len(batch) / (time.perf_counter() - started)


async def measure(base: str, rows: int, repeats: int, concurrency: int) -> dict[str, list[float]]:
    batch = prompts(rows)
    results: dict[str, list[float]] = {"relay": [], "direct": [], "single": [], "classify": []}
    limits = httpx.Limits(max_connections=concurrency + 8)
    async with httpx.AsyncClient(base_url=base, timeout=900, limits=limits) as http:
        # Warm-up: one unmeasured round of each over the whole batch. The first to read a
        # prompt computes it; everyone after finds it in the prefix cache. Measured rounds
        # then all read the same warm cache, and alternate which side goes first.
        await via_relay(http, batch)
        await direct(http, batch, concurrency)
        await via_classify(http, batch)
        for round_ in range(repeats):
            sides = [
                ("relay", via_relay(http, batch)),
                ("direct", direct(http, batch, concurrency)),
                ("classify", via_classify(http, batch)),
            ]
            for name, work in sides if round_ % 2 == 0 else reversed(sides):
                results[name].append(await work)
        results["single"].append(await one_row_at_a_time(http, batch[:32]))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=4, help="interleaved rounds")
    args = parser.parse_args()

    from neve.config import Settings

    concurrency = Settings().relay_concurrency  # the relay's own bound, matched by direct
    with tempfile.TemporaryDirectory() as data_dir:
        port = free_port()
        process = start([*NEVE, "serve", "--port", str(port), "--data-dir", data_dir],
                        f"http://127.0.0.1:{port}/ready")  # fmt: skip
        try:
            results = asyncio.run(
                measure(f"http://127.0.0.1:{port}", args.rows, args.repeats, concurrency)
            )
        finally:
            process.terminate()
            process.wait()

    relay_rate = statistics.median(results["relay"])
    direct_rate = statistics.median(results["direct"])
    ratio = statistics.median(
        r / d for r, d in zip(results["relay"], results["direct"], strict=True)
    )
    print(f"{args.rows} rows, {OPTIONS['max_tokens']} tokens each, concurrency {concurrency}")
    print(f"  /relay, one batch:          {relay_rate:6.2f} rows/s  {results['relay']}")
    print(f"  /v1/chat/completions:       {direct_rate:6.2f} rows/s  {results['direct']}")
    print(f"  /relay, one row per call:   {results['single'][0]:6.2f} rows/s (the old relay)")
    print(f"  /relay/ai/classify:         {statistics.median(results['classify']):6.2f} rows/s  "
          f"{results['classify']}")  # fmt: skip
    print(f"batch gain over one row per call: {relay_rate / results['single'][0]:.1f}x")
    classify = statistics.median(
        c / r for c, r in zip(results["classify"], results["relay"], strict=True)
    )
    print(f"AI_CLASSIFY / COMPLETE per row (median of rounds): {classify:.2f}")
    print(f"throughput ratio relay / direct (median of rounds): {ratio:.2f}")


if __name__ == "__main__":
    main()
