"""The `ray` engine on a real multi-node Ray cluster on this machine (a head and two worker
nodes, each its own raylet, from Ray's own test utility), with the shipped model in every
replica and the hub as a process in front, as users run it.

Every load here is bounded (a fixed count of requests, each with a timeout), and every
wait has a deadline."""

from __future__ import annotations

import concurrent.futures
import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
import yaml

ray = pytest.importorskip("ray")  # the neve[ray] extra; `make test` installs it
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.serve.context import _get_global_client  # noqa: E402
from ray.serve.schema import ServeDeploySchema  # noqa: E402

from neve.batch import read_table  # noqa: E402
from neve.config import load_settings  # noqa: E402
from neve.ray import cluster as ray_cluster  # noqa: E402
from neve.ray import kuberay  # noqa: E402
from tests.api.test_metrics import RAY_ONLY  # noqa: E402
from tests.api.test_relay import relay  # noqa: E402
from tests.conftest import (  # noqa: E402
    NEVE,
    AppHub,
    Hub,
    free_port,
    neve,
    offline_env,
    start_hub,
    stop_hub,
)

# Replicas: the shipped model, one llama.cpp thread, short contexts (memory and CPU of a
# 2-core machine shared by up to three replicas, the hub and the cluster).
ENGINE = ("n_threads=1", "max_num_seqs=8", "max_model_len=1024", "kv_cache_tokens=2048")
# Greedy answers are compared over Ray and locally, and the two engines' KV caches may
# hold this prompt computed in different batches (prefix caching): so a prompt whose
# answer leads by >= 0.78 logits at every token of its first 12 characters ("1. 1\n2. 2\n3.");
# "Name three colours." led by 0.11 at its fifth token, and CI's CPU flipped it.
PROMPT = [{"role": "user", "content": "Count from one to five in words."}]
LONG = 160  # tokens: answers still under way however slowly the fault takes effect


@dataclass
class Nodes:
    cluster: Cluster
    workers: list[Any] = field(default_factory=list)

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    def add_worker(self) -> Any:
        """A worker node with room for one replica (the `replica` resource)."""
        node = self.cluster.add_node(num_cpus=1, resources={"replica": 1})
        self.cluster.wait_for_nodes()
        self.workers.append(node)
        return node

    def remove_worker(self, node: Any) -> None:
        self.workers.remove(node)
        self.cluster.remove_node(node, allow_graceful=False)


@pytest.fixture(scope="module")
def nodes() -> Iterator[Nodes]:
    """The cluster: the head holds no replica (it has no `replica` resource), each worker
    one. This process joins it as a driver, to look at replicas and kill them."""
    head = {"num_cpus": 1, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    found = Nodes(cluster)
    for _ in range(2):
        found.add_worker()
    ray.init(address=cluster.address, namespace="neve-tests")
    yield found
    ray.shutdown()
    cluster.shutdown()


def ray_hub(tmp: Path, nodes: Nodes, app: str, *settings: str) -> Hub:
    return start_hub(
        tmp, "engine=ray", f"ray_address={nodes.address}", f"ray_app_name={app}",
        "ray_num_cpus=0", 'ray_resources={"replica": 1}', *ENGINE, *settings,
    )  # fmt: skip


@pytest.fixture
def hub_on(tmp_path: Path, nodes: Nodes) -> Iterator[Callable[..., Hub]]:
    """Start a hub over Ray (its application named after the test); stopped, and its
    application removed, afterwards."""
    started: list[tuple[Hub, str]] = []

    def start(app: str, *settings: str) -> Hub:
        hub = ray_hub(tmp_path / app, nodes, app, *settings)
        started.append((hub, app))
        return hub

    yield start
    for hub, app in started:
        stop_hub(hub)
        serve.delete(app)


def running(app: str) -> list[ray_cluster.Replica]:
    return [r for r in ray_cluster.describe(app, ongoing=False).replicas if r.state == "RUNNING"]


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.25)


def test_chat_streaming_and_relay_through_ray_replicas_equal_the_local_engine(
    hub_on: Callable[..., Hub], app_hub: AppHub
) -> None:
    hub = hub_on("answers")
    over_ray, local = hub.client(), app_hub.client()
    asked = {"model": "smollm2", "messages": PROMPT, "max_tokens": 24, "temperature": 0}
    whole = over_ray.chat.completions.create(**asked).choices[0].message.content  # type: ignore[call-overload]
    expected = local.chat.completions.create(**asked).choices[0].message.content  # type: ignore[call-overload]
    assert whole and expected
    # Batching makes long outputs drift a little: the answers agree on a prefix.
    assert whole[:12] == expected[:12]
    pieces = [c.choices[0].delta.content or "" for c in over_ray.chat.completions.create(
        **asked, stream=True) if c.choices]  # type: ignore[call-overload]  # fmt: skip
    assert len(pieces) > 3 and "".join(pieces)[:12] == expected[:12]

    rows = relay(hub, {"data": [[0, "Name a fruit.", {"max_tokens": 6, "temperature": 0}],
                                [1, None]]})  # fmt: skip
    assert rows.status_code == 200, rows.text
    by_index = dict(rows.json()["data"])
    assert by_index[0] and by_index[1] is None

    too_long = hub.http.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "word " * 2000}], "max_tokens": 8})  # fmt: skip
    assert too_long.status_code == 400
    assert too_long.json()["error"]["code"] == "context_length_exceeded"

    ready = hub.http.get("/ready").json()
    assert ready["status"] == "ready" and ready["replicas"] == {"RUNNING": 1}
    metrics = hub.http.get("/metrics").text
    assert 'neve:replicas{state="RUNNING"} 1.0' in metrics
    assert retries(hub) == 0
    exported = {line.split("{")[0].split()[0] for line in metrics.splitlines() if line[:1] != "#"}
    assert exported >= RAY_ONLY  # what the dashboard's replicas panel reads


def test_two_replicas_are_placed_on_two_nodes(hub_on: Callable[..., Hub], nodes: Nodes) -> None:
    hub_on("placed", "ray_min_replicas=2", "ray_max_replicas=2")
    wait_for("two replicas", lambda: len(running("placed")) == 2, 60)
    replicas = running("placed")
    assert len({r.node_id for r in replicas}) == 2
    worker_ids = {n.node_id for n in nodes.workers}
    assert {r.node_id for r in replicas} == worker_ids

    shown = neve("ray", "status", "--ray-address", nodes.address, NEVE_RAY_APP_NAME="placed")
    assert shown.returncode == 0, shown.stderr
    assert "application placed: RUNNING" in shown.stdout
    assert "autoscaling: 2 to 2 replicas" in shown.stdout
    for r in replicas:
        assert r.id in shown.stdout


def test_kuberays_serve_config_deploys_and_a_hub_that_did_not_deploy_it_serves(
    tmp_path: Path, nodes: Nodes
) -> None:
    """What `neve deploy kuberay` renders, run as KubeRay runs it: the RayService's
    serveConfigV2 validated and applied by the calls the Ray dashboard makes for KubeRay
    (ray/dashboard/modules/serve/serve_head.py), then a hub with the hub pod's environment
    (ray_deploy false) in front. Its ray_address is this cluster's, where the pod's
    `ray start` makes it `auto`."""
    flags = dict(s.split("=", 1) for s in ENGINE)
    settings = load_settings(environ={}, flags={
        **flags, "ray_app_name": "kuberay", "ray_num_cpus": "0", "ray_max_replicas": "2",
        "ray_resources": '{"replica": 1}',
    })  # fmt: skip
    rayservice = next(d for d in kuberay.manifest(settings) if d["kind"] == "RayService")
    text = kuberay.as_yaml([rayservice])  # through YAML, as kubectl hands it on
    config = ServeDeploySchema.model_validate(
        yaml.safe_load(yaml.safe_load(text)["spec"]["serveConfigV2"])
    )
    serve.start(proxy_location="Disabled")  # as the dashboard does; Serve may run already
    try:
        _get_global_client().deploy_apps(config)
        wait_for("KubeRay's application running", lambda: len(running("kuberay")) == 1, 120)
        assert ray_cluster.describe("kuberay").bounds["max_replicas"] == 2

        env = kuberay.hub_environment(settings) | {"NEVE_RAY_ADDRESS": nodes.address}
        hub = start_hub(tmp_path, env=offline_env(**env))
        try:
            asked = {"model": "smollm2", "messages": PROMPT, "max_tokens": 8}
            answer = hub.client().chat.completions.create(**asked)  # type: ignore[call-overload]
            assert answer.choices[0].message.content
            assert hub.http.get("/ready").json()["replicas"] == {"RUNNING": 1}
        finally:
            stop_hub(hub)
        # The hub leaves the application it did not deploy where it was.
        assert len(running("kuberay")) == 1
    finally:
        serve.delete("kuberay")


def stream(
    hub: Hub, max_tokens: int, timeout: float = 120, on_text: Callable[[], None] = lambda: None
) -> str:
    """One streamed chat: 'done' when it ended with [DONE] after its answer, 'broken' when
    it ended with an error event and [DONE]; anything else fails the test. `on_text` is
    called once its answer's first text has arrived."""
    body = {"messages": PROMPT, "max_tokens": max_tokens, "ignore_eos": True, "stream": True}
    events = []
    with httpx.stream("POST", f"{hub.url}/v1/chat/completions", json=body,
                      timeout=timeout) as response:  # fmt: skip
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if len(events) == 2:  # after the role's announcement, the first text
                    on_text()
    assert events[-1] == "[DONE]", events[-3:]
    errors = [json.loads(e)["error"] for e in events[:-1] if '"error"' in e[:10]]
    if errors:
        assert len(errors) == 1 and errors[0]["code"] == "replica_lost", errors
        return "broken"
    return "done"


def whole(hub: Hub, max_tokens: int, timeout: float = 120) -> str:
    reply = hub.http.post("/v1/chat/completions", timeout=timeout, json={
        "messages": PROMPT, "max_tokens": max_tokens, "ignore_eos": True})  # fmt: skip
    assert reply.status_code == 200, reply.text
    assert reply.json()["usage"]["completion_tokens"] == max_tokens
    return "done"


def retries(hub: Hub) -> float:
    for line in hub.http.get("/metrics").text.splitlines():
        if line.startswith("neve:replica_retries_total "):
            return float(line.split()[1])
    raise AssertionError("no neve:replica_retries_total in /metrics")


def test_autoscaling_grows_under_load_and_shrinks_after(hub_on: Callable[..., Hub]) -> None:
    hub = hub_on(
        "scaling", "ray_min_replicas=1", "ray_max_replicas=2", "ray_target_ongoing_requests=1",
        "ray_upscale_delay=1", "ray_downscale_delay=4", "ray_look_back_period=2",
    )  # fmt: skip
    assert len(running("scaling")) == 1
    outcomes: list[concurrent.futures.Future[str]] = []
    grew = False
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not grew:  # bounded: stops once it grew
            while sum(not f.done() for f in outcomes) < 4:
                outcomes.append(pool.submit(stream, hub, 32))
            grew = len(running("scaling")) == 2
            time.sleep(0.25)
        # The load goes on a little on two replicas, then stops.
        outcomes += [pool.submit(stream, hub, 32) for _ in range(4)]
    assert grew, "the application did not grow to 2 replicas under load"
    assert [f.result() for f in outcomes] == ["done"] * len(outcomes)
    wait_for("back to one replica", lambda: len(running("scaling")) == 1, 60)
    wait_for(  # the hub follows the replicas every ray_probe_interval
        "/ready saying so", lambda: hub.http.get("/ready").json()["replicas"]["RUNNING"] == 1, 10
    )
    assert whole(hub, 8) == "done"  # and it still answers


def load_with_a_fault(hub: Hub, fault: Callable[[], None]) -> dict[str, int]:
    """16 requests at once over both replicas (half streamed, half whole, all long), with
    `fault` struck once every stream has its first text (so the streams on the replica
    that goes are cut part-way, and its whole answers are unfinished); the count of each
    outcome."""
    counts = {"whole done": 0, "stream done": 0, "stream broken": 0}
    texting = threading.Semaphore(0)
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        kinds = ["stream" if i % 2 else "whole" for i in range(16)]
        futures = [
            pool.submit(stream, hub, LONG, 240, on_text=texting.release)
            if kind == "stream"
            else pool.submit(whole, hub, LONG, 240)
            for kind in kinds
        ]
        for _ in range(kinds.count("stream")):
            assert texting.acquire(timeout=120), "the streams did not start"
        fault()
        for kind, future in zip(kinds, futures, strict=True):
            counts[f"{kind} {future.result(timeout=300)}"] += 1  # none hangs
    return counts


def lost_and_retried(counts: dict[str, int]) -> None:
    """Whole answers had sent nothing when their replica died: all were retried and
    succeeded. Streams cut part-way ended with an error event and [DONE]; the others
    finished."""
    assert counts["whole done"] == 8, counts
    assert counts["stream done"] + counts["stream broken"] == 8, counts
    assert counts["stream broken"] >= 1, counts  # the fault did strike streams under way


def test_a_killed_replica_and_a_removed_node_lose_no_request_that_had_not_started(
    hub_on: Callable[..., Hub], nodes: Nodes
) -> None:
    # Each replica takes 8 requests at most, so the 16 of a load are on both.
    hub = hub_on("faults", "ray_min_replicas=2", "ray_max_replicas=2", "ray_retries=3",
                 "ray_max_ongoing_requests=8")  # fmt: skip
    wait_for("two replicas", lambda: len(running("faults")) == 2, 60)

    def busiest() -> ray_cluster.Replica:
        """The replica holding the most requests now (the router may not have sent any to
        a replica it has only just learnt of)."""
        replicas = [r for r in ray_cluster.describe("faults").replicas if r.state == "RUNNING"]
        return max(replicas, key=lambda r: r.ongoing or 0)

    def kill_a_replica() -> None:
        ray.kill(ray.get_actor(busiest().actor, namespace="serve"), no_restart=True)

    def remove_a_node() -> None:
        node_id = busiest().node_id
        nodes.remove_worker(next(n for n in nodes.workers if n.node_id == node_id))

    lost_and_retried(load_with_a_fault(hub, kill_a_replica))
    assert retries(hub) >= 1
    wait_for("the replica replaced", lambda: len(running("faults")) == 2, 60)
    assert whole(hub, 8) == "done"

    before = retries(hub)
    lost_and_retried(load_with_a_fault(hub, remove_a_node))
    assert retries(hub) > before
    nodes.add_worker()  # a new node joins; Serve places the lost replica on it
    wait_for("serving at full count again", lambda: len(running("faults")) == 2, 90)
    wait_for(  # the hub follows the replicas every ray_probe_interval
        "/ready saying so", lambda: hub.http.get("/ready").json()["replicas"] == {"RUNNING": 2}, 10
    )
    assert whole(hub, 8) == "done"


def test_batch_on_ray_data_answers_every_row_in_order_and_resumes(
    hub_on: Callable[..., Hub], nodes: Nodes, tmp_path: Path
) -> None:
    hub = hub_on("batch", "ray_min_replicas=2", "ray_max_replicas=2")
    prompts = [None if i % 50 == 7 else f"Say the number {i}." for i in range(200)]
    source = tmp_path / "in.csv"
    pa_csv.write_csv(pa.table({"id": list(range(200)), "prompt": prompts}), source)
    out = tmp_path / "out.parquet"
    checkpoint = tmp_path / "out.parquet.partial.jsonl"
    args = [*NEVE, "batch", str(source), "-o", str(out), "--url", hub.url, "--ray",
            "--ray-address", nodes.address, "--max-tokens", "4", "--concurrency", "4"]  # fmt: skip
    first = subprocess.Popen(args, env=offline_env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 180
    while not checkpoint.exists() or len(checkpoint.read_text().splitlines()) < 40:
        assert time.monotonic() < deadline and first.poll() is None, first.stderr
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert not out.exists()
    saved = {}
    for line in checkpoint.read_text().splitlines():
        if line.endswith("}"):
            record = json.loads(line)
            saved[record["row"]] = record
    assert 40 <= len(saved) < 200

    second = subprocess.run(args, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert f"resuming: {len(saved)} of 200 rows already done" in second.stderr
    rows = read_table(out).to_pylist()
    assert [r["id"] for r in rows] == list(range(200))
    assert list(rows[0]) == ["id", "prompt", "completion", "error", "prompt_tokens",
                             "completion_tokens"]  # fmt: skip
    for i, row in enumerate(rows):
        assert row["prompt"] == prompts[i]
        assert (row["completion"] is None) == (prompts[i] is None), row  # NULL in, NULL out
    for index, record in saved.items():
        assert rows[index]["completion"] == record["completion"]  # kept, not redone
    assert not checkpoint.exists()


def children(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.add(int(entry.name))
    return found


def test_a_local_cluster_is_the_hubs_own_and_stops_with_it(tmp_path: Path, nodes: Nodes) -> None:
    hub = start_hub(tmp_path, "engine=ray", "ray_address=local", "ray_app_name=own", *ENGINE)
    assert hub.http.get("/ready").json()["replicas"] == {"RUNNING": 1}
    # Private: another cluster runs on this machine (this module's), and the hub did not
    # join it.
    assert ray_cluster.states("own").status == "NOT_DEPLOYED"
    started = children(hub.process.pid)  # the private cluster's processes (GCS, raylet, ...)
    assert started
    stop_hub(hub)  # SIGTERM: the hub shuts down in order, and its cluster with it
    assert hub.process.returncode is not None
    wait_for("the private cluster gone", lambda: not any(Path(f"/proc/{p}").exists()
                                                         for p in started), 30)  # fmt: skip


def test_a_ray_client_address_is_refused_with_its_reason(tmp_path: Path) -> None:
    ran = subprocess.run(
        [*NEVE, "serve", "--engine", "ray", "--ray-address", "ray://127.0.0.1:9",
         "--port", str(free_port()), "--data-dir", str(tmp_path)],
        env=offline_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert ran.returncode != 0
    assert "Serve's handles do not work through Ray Client" in ran.stderr + ran.stdout
    assert "Traceback" not in ran.stderr
