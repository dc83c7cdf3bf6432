"""What sharing state costs a hub: one hub on its local state (SQLite, limits in memory)
beside the same hub as one instance of a fleet (PostgreSQL, rate windows in the database),
then two fleet instances behind HAProxy, rounds interleaved in one run.

Every hub is a gateway over the stand-in upstream (tests/standins/openai_upstream.py,
which answers at almost no cost), so what is measured is the hub's own work per request:
the key checked, its rpm window counted (a key with a limit, so the shared window is
used), the request logged. Workload: 200 chat requests, 8 at a time, per round.

Prints added p50 and p99 per request (fleet instance minus local), the pair's throughput
through the balancer, and last throughput(one hub on shared stores) / throughput(one hub
on local state) (target >= 0.9).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from processes import NEVE, ROOT, free_port, start

sys.path.insert(0, str(ROOT))
from tests.postgres import PgServer

STANDIN = [sys.executable, "-m", "tests.standins.openai_upstream"]
REQUESTS, CONCURRENCY, WARM_UP = 200, 8, 3
BODY = {"model": "stand-in", "messages": [{"role": "user", "content": "abc" * 16}],
        "max_tokens": 16, "temperature": 0}  # fmt: skip


def make_key(*settings: str) -> str:
    made = subprocess.run(
        [*NEVE, "keys", "create", "--name", "bench", "--rpm", "1000000",
         *(a for s in settings for a in ("--set", s))],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    return made.stdout.strip()


def balancer(port: int, backends: list[int], folder: Path) -> subprocess.Popen[bytes]:
    servers = "\n".join(f"  server h{p} 127.0.0.1:{p} check" for p in backends)
    config = folder / "haproxy.cfg"
    config.write_text(
        "defaults\n  mode http\n  timeout connect 2s\n  timeout client 60s\n"
        f"  timeout server 60s\nfrontend api\n  bind 127.0.0.1:{port}\n  default_backend hubs\n"
        f"backend hubs\n  balance roundrobin\n{servers}\n"
    )
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    return start([haproxy, "-f", str(config), "-db"], f"http://127.0.0.1:{port}/health")


async def one_round(http: httpx.AsyncClient, url: str, key: str, latencies: list[float]) -> float:
    gate = asyncio.Semaphore(CONCURRENCY)
    headers = {"Authorization": f"Bearer {key}"}

    async def one() -> None:
        async with gate:
            began = time.perf_counter()
            answer = await http.post(f"{url}/v1/chat/completions", json=BODY, headers=headers)
            answer.raise_for_status()
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(REQUESTS)))
    return REQUESTS / (time.perf_counter() - began)


Found = dict[str, tuple[list[float], list[float]]]  # target: (latencies, rates per round)


async def measure(targets: dict[str, tuple[str, str]], rounds: int) -> Found:
    found: Found = {n: ([], []) for n in targets}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(timeout=120, limits=limits) as http:
        for _ in range(WARM_UP):  # each hub's first work done (connections, the embedder)
            for url, key in targets.values():
                await one_round(http, url, key, [])
        for _ in range(rounds):
            for name, (url, key) in targets.items():
                found[name][1].append(await one_round(http, url, key, found[name][0]))
    return found


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    processes: list[subprocess.Popen[bytes]] = []
    postgres = PgServer(free_port())
    with tempfile.TemporaryDirectory() as tmp:
        try:
            postgres.start()
            shared = [f"database_url={postgres.create_database('fleet')}", "instances=2"]
            upstream_port = free_port()
            processes.append(start([*STANDIN, "--port", str(upstream_port)],
                                   f"http://127.0.0.1:{upstream_port}/health"))  # fmt: skip
            upstream = f"http://127.0.0.1:{upstream_port}"
            local_dir = f"{tmp}/local"
            ports = {"local": free_port(), "fleet": free_port(), "fleet-2": free_port()}
            for name, port in ports.items():
                settings = shared if name.startswith("fleet") else []
                data = local_dir if name == "local" else f"{tmp}/{name}"
                flags = [a for s in settings for a in ("--set", s)]
                argv = [*NEVE, "serve", "--port", str(port), "--data-dir", data,
                        "--upstream", upstream, *flags]  # fmt: skip
                processes.append(start(argv, f"http://127.0.0.1:{port}/ready"))
            local_key = make_key(f"data_dir={local_dir}")
            fleet_key = make_key(*shared)
            pair = free_port()
            processes.append(balancer(pair, [ports["fleet"], ports["fleet-2"]], Path(tmp)))
            found = asyncio.run(measure({
                "local": (f"http://127.0.0.1:{ports['local']}", local_key),
                "fleet": (f"http://127.0.0.1:{ports['fleet']}", fleet_key),
                "two behind HAProxy": (f"http://127.0.0.1:{pair}", fleet_key),
            }, args.rounds))  # fmt: skip
        finally:
            for process in processes:
                process.terminate()
                process.wait()
            postgres.remove()
    (local_lat, local_rates), (fleet_lat, fleet_rates) = found["local"], found["fleet"]
    print(f"{REQUESTS} chat requests, {CONCURRENCY} at a time, {args.rounds} rounds (stand-in):")
    for name, (lat, rates) in found.items():
        p50, p99 = quantile(lat, 0.5) * 1000, quantile(lat, 0.99) * 1000
        rate = statistics.median(rates)
        print(f"  {name:<19} p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  {rate:6.1f} req/s")
    for q in (0.5, 0.99):
        added = (quantile(fleet_lat, q) - quantile(local_lat, q)) * 1000
        print(f"  added by shared state at p{int(q * 100)}: {added:+.2f} ms")
    ratio = statistics.median(f / o for f, o in zip(fleet_rates, local_rates, strict=True))
    print(f"throughput ratio (one hub on shared stores / one hub on local state): {ratio:.3f}")


if __name__ == "__main__":
    main()
