"""Scale-out on Ray: does a second replica on a second node double the hub's throughput,
and what does Ray's routing cost against the engine in the hub's own process?

A Ray cluster of a head and two worker nodes runs on this machine (each worker 1 CPU).
Three hubs run side by side, each `neve serve` on the shipped model with 1 llama.cpp
thread per engine: over a local engine; over Ray with one replica; over Ray with two
replicas placed on the two nodes by custom resources. Every round sends the same
workload to each hub in turn (8 concurrent streams, 64 tokens each, `ignore_eos`), rounds
interleaved, so the three are compared under the same conditions; idle hubs and replicas
cost almost nothing meanwhile.

Each round also sends half the streams to the local hub ("half"): what each of the two
replicas serves. Two engines that each had a core of their own would give twice that, so
half ÷ local is the efficiency that batching alone allows (a smaller batch uses a core
less well); on a 2-core machine the two replicas share their cores with the hub, the
client and Ray, which one replica leaves a core for.

Prints each round's tokens/s, then the medians, then the hub-over-Ray ÷ hub-over-local
ratio for one replica (target >= 0.9: what Ray's routing costs), the efficiency batching
alone allows, and last the scale-out efficiency tokens/s(2 replicas) ÷ (2 x tokens/s(1
replica)) (target >= 0.8).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from ray.cluster_utils import Cluster

from processes import NEVE, free_port, start


def start_hub(
    name: str, data: Path, settings: dict[str, object]
) -> tuple[subprocess.Popen[bytes], str]:
    """`neve serve` with `settings` (as NEVE_* variables), its output in data/<name>.log."""
    port = free_port()
    env = {f"NEVE_{k.upper()}": v if isinstance(v, str) else json.dumps(v)
           for k, v in settings.items()}  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    argv = [*NEVE, "serve", "--port", str(port), "--data-dir", str(data / name)]
    with (data / f"{name}.log").open("wb") as log:
        return start(argv, f"{url}/ready", env=env, log=log, timeout=300), url


async def one_round(url: str, concurrency: int, requests: int, tokens: int) -> float:
    """Aggregate completion tokens/s of `requests` streams, `concurrency` at a time."""
    gate = asyncio.Semaphore(concurrency)
    body = {"messages": [{"role": "user", "content": "Tell me a long story about a fox."}],
            "max_tokens": tokens, "ignore_eos": True, "temperature": 0.7, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with httpx.AsyncClient(base_url=url, timeout=300) as client:

        async def one() -> int:
            async with gate, client.stream("POST", "/v1/chat/completions", json=body) as r:
                r.raise_for_status()
                used = 0
                async for line in r.aiter_lines():
                    if line.startswith("data: {") and '"usage":{' in line:
                        used = json.loads(line[6:])["usage"]["completion_tokens"]
                return used

        started = time.perf_counter()
        done = await asyncio.gather(*(one() for _ in range(requests)))
        took = time.perf_counter() - started
    if sum(done) != requests * tokens:
        raise SystemExit(f"{url}: {sum(done)} tokens, expected {requests * tokens}")
    return sum(done) / took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32, help="streams per round")
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()

    engine = {"n_threads": 1, "max_num_seqs": 16, "max_model_len": 2048}
    # Node A holds the one-replica application and one of the two-replica one's replicas;
    # node B the other: so the two replicas are on two nodes.
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False}
    )
    cluster.add_node(num_cpus=1, resources={"one": 1, "two": 1})
    cluster.add_node(num_cpus=1, resources={"two": 1})
    ray_settings = {"engine": "ray", "ray_address": cluster.address, "ray_num_cpus": 0}
    hubs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="neve-ray-bench-") as tmp:
        data = Path(tmp)
        try:
            urls = {}
            for name, settings in (
                ("local", engine),
                ("ray-1", {**engine, **ray_settings, "ray_app_name": "one",
                           "ray_resources": {"one": 1}, "ray_max_replicas": 1}),
                ("ray-2", {**engine, **ray_settings, "ray_app_name": "two",
                           "ray_resources": {"two": 1}, "ray_min_replicas": 2,
                           "ray_max_replicas": 2}),
            ):  # fmt: skip
                process, urls[name] = start_hub(name, data, settings)
                hubs.append(process)
            loads = {name: (url, args.concurrency, args.requests) for name, url in urls.items()}
            loads["half"] = (urls["local"], args.concurrency // 2, args.requests // 2)
            rates: dict[str, list[float]] = {name: [] for name in loads}
            asyncio.run(one_round(urls["local"], 2, 2, 8))  # warm up
            for r in range(args.rounds):
                for name, (url, concurrency, requests) in loads.items():
                    rate = asyncio.run(one_round(url, concurrency, requests, args.tokens))
                    rates[name].append(rate)
                    print(f"round {r + 1} {name:6} {rate:7.1f} tok/s", flush=True)
        finally:
            for process in hubs:
                process.terminate()
            for process in hubs:
                process.wait(30)
            cluster.shutdown()
    median = {name: statistics.median(values) for name, values in rates.items()}
    for name, value in median.items():
        print(f"median {name:6} {value:7.1f} tok/s")
    print(
        f"hub over Ray / hub over local engine, 1 replica: {median['ray-1'] / median['local']:.2f}"
    )
    print(
        "scale-out efficiency if each replica had a core to itself "
        f"(local, half the streams ÷ all): {median['half'] / median['local']:.2f}"
    )
    efficiency = median["ray-2"] / (2 * median["ray-1"])
    print(f"scale-out efficiency, 2 replicas on 2 nodes: {efficiency:.2f}")


if __name__ == "__main__":
    main()
