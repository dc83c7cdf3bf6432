"""Two or more servers measured side by side in one run: the same streaming chat rounds
at 1, 8 and 16 concurrent, interleaved server by server and level by level (the order
reversed each round, so neither always goes first), every server warmed up at every level
before the first measured round; and the llama-cpp-python sdist neve runs, which the
builds being compared are made from."""

from __future__ import annotations

import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import httpx

from engine_concurrency import round_at

LEVELS = (1, 8, 16)
# Every server gets the same request, sampling named in full: OpenAI's meaning, which neve
# serves (the whole distribution at the temperature). llama-server would otherwise cut it
# to its defaults (top_k 40, top_p 0.95, min_p 0.05), a cheaper and different sampling.
SAMPLING = {"top_k": 0, "top_p": 1.0, "min_p": 0.0}


async def measure(
    bases: dict[str, str], tokens: int, repeats: int
) -> dict[str, dict[int, list[float]]]:
    """tok/s of each server's rounds, by level."""
    results: dict[str, dict[int, list[float]]] = {n: {lv: [] for lv in LEVELS} for n in bases}
    limits = httpx.Limits(max_connections=64)
    clients = {
        name: httpx.AsyncClient(base_url=b, timeout=600, limits=limits) for name, b in bases.items()
    }
    try:
        for http in clients.values():
            for level in LEVELS:
                await round_at(http, level, 8, SAMPLING)  # warm-up
        order = list(clients.items())
        for _ in range(repeats):
            for level in LEVELS:
                for name, http in order:
                    rate = await round_at(http, level, tokens, SAMPLING)
                    results[name][level].append(rate)
            order.reverse()
    finally:
        for http in clients.values():
            await http.aclose()
    return results


def report(results: dict[str, dict[int, list[float]]], ours: str, theirs: str) -> dict[int, float]:
    """Prints each level's medians and `ours` / `theirs`; returns those ratios by level.
    A ratio is the median of each round's ratio to the round beside it: this machine's
    speed drifts by a tenth and more within a minute, which falls on both rounds of a pair
    alike and so cancels in its ratio (the medians' ratio keeps it)."""
    ratios = {}
    for level in LEVELS:
        a, b = (statistics.median(results[n][level]) for n in (ours, theirs))
        pairs = zip(results[ours][level], results[theirs][level], strict=True)
        ratios[level] = statistics.median(x / y for x, y in pairs)
        spread = ", ".join(
            f"{n} {min(results[n][level]):.0f}-{max(results[n][level]):.0f}" for n in (ours, theirs)
        )
        print(
            f"  {level:>2} concurrent: {ours} {a:6.1f} tok/s, {theirs} {b:6.1f} tok/s"
            f" (medians' ratio {a / b:.2f}; rounds: {spread}),"
            f" {ours} / {theirs}, paired rounds {ratios[level]:.2f}"
        )
    return ratios


def llama_cpp_sdist(home: Path) -> tuple[str, Path]:
    """The public version of the installed llama-cpp-python (without neve's local tag) and
    its sdist, downloaded into `home` once."""
    version = metadata.version("llama_cpp_python").split("+")[0]
    home.mkdir(parents=True, exist_ok=True)
    sdist = home / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        print(f"downloading llama-cpp-python {version}'s source to {home}", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             "-d", str(home), f"llama-cpp-python=={version}"],
            check=True,
        )  # fmt: skip
    return version, sdist
