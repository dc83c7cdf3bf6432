"""What a neve gateway adds in front of an OpenAI-compatible upstream.

The same workloads go directly to an upstream and through `neve serve --upstream` in
front of it, rounds interleaved in one run: 64 concurrent streams of 16 chunks, and 200
non-streaming requests (8 at a time). Added latency is the gateway's percentile minus the
direct one, per workload.

First against a minimal OpenAI-compatible stand-in responder written for this benchmark
(tests/standins/openai_upstream.py: it echoes the prompt in pieces, at almost no cost),
which isolates the proxy's own cost; then against a real llamacpp neve as the upstream.

Prints p50 and p99 added latency in ms and the throughput ratio gateway/direct (the median
over rounds of each gateway round's rate over the direct round's just before it), that of
the stand-in run last (targets: p50 <= 2 ms, p99 <= 10 ms, ratio >= 0.95).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

from processes import NEVE, free_port, start

STANDIN = [sys.executable, "-m", "tests.standins.openai_upstream"]
PROMPT_16_PIECES = "abc" * 16  # the stand-in echoes it in 16 three-character pieces


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    rates: list[float] = field(default_factory=list)  # requests/s, one per round

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q * 100) - 1]

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)


async def timed_round(
    requests: list[Callable[[], Awaitable[None]]], concurrency: int, into: Samples
) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(send: Callable[[], Awaitable[None]]) -> None:
        async with gate:
            started = time.perf_counter()
            await send()
            into.latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    into.rates.append(len(requests) / (time.perf_counter() - started))


def workloads(model: str, tokens: int) -> dict[str, tuple[int, int, dict[str, object]]]:
    """name: (requests per round, concurrency, body)."""
    ask = {"model": model, "messages": [{"role": "user", "content": PROMPT_16_PIECES}],
           "max_tokens": tokens, "temperature": 0}  # fmt: skip
    return {
        "64 streams": (64, 64, {**ask, "stream": True}),
        "200 requests": (200, 8, ask),
    }


async def measure(
    direct: str, gateway: str, model: str, tokens: int, rounds: int
) -> dict[str, dict[str, Samples]]:
    results = {name: {"direct": Samples(), "gateway": Samples()} for name in workloads(model, 0)}
    limits = httpx.Limits(max_connections=128, max_keepalive_connections=128)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:

        def sender(base: str, body: dict[str, object]) -> Callable[[], Awaitable[None]]:
            async def send() -> None:
                if body.get("stream"):
                    async with http.stream("POST", f"{base}/v1/chat/completions", json=body) as r:
                        r.raise_for_status()
                        async for _ in r.aiter_lines():
                            pass
                else:
                    (await http.post(f"{base}/v1/chat/completions", json=body)).raise_for_status()

            return send

        for name, (count, concurrency, body) in workloads(model, tokens).items():
            for base in (direct, gateway):  # warm-up
                await timed_round([sender(base, body)] * 8, concurrency, Samples())
            for _ in range(rounds):
                for target, base in (("direct", direct), ("gateway", gateway)):
                    await timed_round(
                        [sender(base, body)] * count, concurrency, results[name][target]
                    )
    return results


def report(title: str, results: dict[str, dict[str, Samples]]) -> float:
    print(title)
    ratios = []
    for name, by_target in results.items():
        d, g = by_target["direct"], by_target["gateway"]
        p50 = (g.quantile(0.5) - d.quantile(0.5)) * 1000
        p99 = (g.quantile(0.99) - d.quantile(0.99)) * 1000
        # Rounds alternate direct and gateway, so each pair saw the same machine: the median
        # of the pairs' ratios is steadier than a ratio of totals on a noisy machine.
        ratio = statistics.median(gr / dr for gr, dr in zip(g.rates, d.rates, strict=True))
        ratios.append(ratio)
        print(f"  {name:<13} direct p50 {d.quantile(0.5) * 1000:7.1f} ms  "
              f"added p50 {p50:+6.2f} ms  added p99 {p99:+7.2f} ms  "
              f"throughput {d.rate:7.1f} -> {g.rate:7.1f} req/s (ratio {ratio:.3f})")  # fmt: skip
    return min(ratios)


def run_against(upstream_argv: list[str], upstream_port: int, model: str, tokens: int,
                rounds: int) -> dict[str, dict[str, Samples]]:  # fmt: skip
    gateway_port = free_port()
    upstream = start(upstream_argv, f"http://127.0.0.1:{upstream_port}/v1/models")
    with tempfile.TemporaryDirectory() as data_dir:
        gateway = start(
            [*NEVE, "serve", "--port", str(gateway_port),
             "--data-dir", data_dir, "--upstream", f"http://127.0.0.1:{upstream_port}"],
            f"http://127.0.0.1:{gateway_port}/ready",
        )  # fmt: skip
        try:
            return asyncio.run(
                measure(f"http://127.0.0.1:{upstream_port}", f"http://127.0.0.1:{gateway_port}",
                        model, tokens, rounds)
            )  # fmt: skip
        finally:
            for process in (gateway, upstream):
                process.terminate()
                process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (stand-in)")
    parser.add_argument("--skip-llamacpp", action="store_true")
    args = parser.parse_args()

    if not args.skip_llamacpp:
        port = free_port()
        with tempfile.TemporaryDirectory() as data_dir:
            real = run_against(
                [*NEVE, "serve", "--port", str(port),
                 "--data-dir", data_dir], port, "smollm2", 16, 1,
            )  # fmt: skip
        report("real llamacpp upstream (neve serve, SmolLM2-135M, 16 tokens):", real)

    port = free_port()
    standin = run_against([*STANDIN, "--port", str(port)], port, "stand-in", 16, args.rounds)
    ratio = report("minimal stand-in upstream (written for this benchmark):", standin)
    print(f"throughput ratio gateway/direct (stand-in, worst workload): {ratio:.3f}")


if __name__ == "__main__":
    main()
