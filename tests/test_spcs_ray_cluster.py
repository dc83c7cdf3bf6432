"""The Ray cluster `neve deploy spcs` renders for engine ray, run as Snowpark Container
Services would run it, on hosts made of network namespaces: the head service's host and
a worker service's host, each its own address on one link, the service DNS names
resolving to them (/etc/netns/<host>/hosts), and between them only the ports the
specifications declare (nftables in each namespace drops every other inbound port, as
SPCS admits traffic to a service only on its endpoints). Each container's command and
environment run as rendered; the image's paths (/data, /models) are the test's folders,
each host has its own /tmp/ray (a mount namespace), and the replicas' engine is sized
for this 2-core machine. The cluster forms and the hub answers a chat through a replica
on the worker.

Needs root and `ip netns` (CI runs as root); skipped with the reason where refused."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from neve.config import load_settings
from neve.snowflake import spcs
from neve.snowflake.ray_cluster import DNS_DOMAIN, head_host

BIN = Path(sys.executable).parent
DOMAIN = "k3x9q.svc.spcs.internal"  # what SYSTEM$GET_SERVICE_DNS_DOMAIN would answer
ENGINE = {"NEVE_N_THREADS": "1", "NEVE_MAX_MODEL_LEN": "1024", "NEVE_KV_CACHE_TOKENS": "2048",
          "NEVE_MAX_NUM_SEQS": "4"}  # fmt: skip


def _refused() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, nftables)"
    if not shutil.which("nft") and not Path("/usr/sbin/nft").exists():
        return "needs nftables (scripts/system-packages.sh test installs it)"
    probe = subprocess.run(["ip", "netns", "add", f"nvprobe{os.getpid()}"], capture_output=True)
    if probe.returncode != 0:
        return f"ip netns is refused here: {probe.stderr.decode().strip()}"
    subprocess.run(["ip", "netns", "del", f"nvprobe{os.getpid()}"], check=True)
    return None


pytestmark = pytest.mark.skipif(bool(_refused()), reason=_refused() or "")


def run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@dataclass
class Host:
    name: str
    address: str
    ports: list[str]  # nftables' form: "6380", "10002-10199"
    tmp: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, command: list[str], env: dict[str, str], log: str) -> None:
        """`command` in this host: its network namespace, and a mount namespace where
        /tmp/ray is this host's own."""
        ray_tmp = self.tmp / "ray"
        ray_tmp.mkdir(parents=True, exist_ok=True)
        inner = f"mount --bind {ray_tmp} /tmp/ray && exec {shlex.join(command)}"
        self.processes.append(subprocess.Popen(
            ["ip", "netns", "exec", self.name, "unshare", "-m", "sh", "-c", inner],
            env=env, stdout=(self.tmp / log).open("wb"), stderr=subprocess.STDOUT,
            start_new_session=True,
        ))  # fmt: skip

    def call(self, code: str, timeout: float) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code],
                              capture_output=True, text=True, timeout=timeout)  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout


def declared(spec: dict[str, Any]) -> list[str]:
    """The ports a service's endpoints declare, as nftables writes them."""
    return [str(e.get("port") or e["portRange"]) for e in spec["spec"]["endpoints"]]


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[tuple[Host, Host]]:
    tag = f"nv{os.getpid() % 100000}"
    Path("/tmp/ray").mkdir(exist_ok=True)  # the mount point each host binds its own over
    made: list[Host] = []
    try:
        for suffix, address in (("h", "10.231.7.1"), ("w", "10.231.7.2")):
            host = Host(f"{tag}{suffix}", address, [], tmp_path / suffix)
            host.tmp.mkdir()
            run("ip", "netns", "add", host.name)
            made.append(host)
        head, worker = made
        run("ip", "link", "add", f"{head.name}e", "type", "veth", "peer", "name", f"{worker.name}e")
        for host in made:
            run("ip", "link", "set", f"{host.name}e", "netns", host.name)
            ns = ("ip", "netns", "exec", host.name)
            run(*ns, "ip", "addr", "add", f"{host.address}/24", "dev", f"{host.name}e")
            run(*ns, "ip", "link", "set", f"{host.name}e", "up")
            run(*ns, "ip", "link", "set", "lo", "up")
            # Ray finds its node's address by the route out; SPCS nodes have one.
            run(*ns, "ip", "route", "add", "default", "dev", f"{host.name}e")
        yield head, worker
    finally:
        for host in made:
            for process in host.processes:
                with _quiet():
                    os.killpg(process.pid, signal.SIGKILL)
            pids = subprocess.run(["ip", "netns", "pids", host.name], capture_output=True,
                                  text=True).stdout.split()  # fmt: skip
            for pid in pids:
                with _quiet():
                    os.kill(int(pid), signal.SIGKILL)
            subprocess.run(["ip", "netns", "del", host.name], capture_output=True)
            shutil.rmtree(f"/etc/netns/{host.name}", ignore_errors=True)


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError | PermissionError)


def wall(host: Host, names: dict[str, str]) -> None:
    """The host's names, and its firewall: inbound only on its declared ports."""
    etc = Path(f"/etc/netns/{host.name}")
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "hosts").write_text("127.0.0.1 localhost\n" + "".join(
        f"{address} {name}\n" for name, address in names.items()))  # fmt: skip
    rules = (
        "table inet spcs {\n chain input {\n  type filter hook input priority 0; policy drop;\n"
        '  iif "lo" accept\n  ct state established,related accept\n'
        "  icmp type echo-request accept\n"
        f"  tcp dport {{ {', '.join(host.ports)} }} accept\n }}\n}}\n"
    )
    rules_file = host.tmp / "rules.nft"
    rules_file.write_text(rules)
    run("ip", "netns", "exec", host.name, "nft", "-f", str(rules_file))


def container(spec: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in spec["spec"]["containers"] if c["name"] == name)


def command_of(found: dict[str, Any]) -> list[str]:
    return [*found.get("command", ["neve"]), *found.get("args", [])]


def test_the_rendered_cluster_forms_across_hosts_and_answers_a_chat(
    hosts: tuple[Host, Host], models_dir: Path
) -> None:
    head, worker = hosts
    settings = load_settings(
        {"engine": "ray", "ray_start_timeout": 150,
         "spcs": {"ray": {"workers": [{"name": "CPU", "instance_family": "CPU_X64_S"}]}}},
        environ={},
    )  # fmt: skip
    steps = spcs.plan("up", settings.spcs, settings)
    services = [s for s in steps if isinstance(s, spcs.Service)]
    head_spec = yaml.safe_load(services[0].spec.replace(DNS_DOMAIN, DOMAIN))
    worker_spec = yaml.safe_load(services[1].spec.replace(DNS_DOMAIN, DOMAIN))
    head.ports, worker.ports = declared(head_spec), declared(worker_spec)
    names = {head_host(settings.spcs).replace(DNS_DOMAIN, DOMAIN): head.address}
    for host in (head, worker):
        wall(host, names)

    # The test's DNS is a hosts file, which gRPC's own resolver (c-ares) does not read;
    # SPCS's names are real DNS. gRPC's native resolver reads both.
    path = {"PATH": f"{BIN}:{os.environ['PATH']}", "HOME": str(head.tmp),
            "HF_ENDPOINT": "http://127.0.0.1:9", "RAY_USAGE_STATS_ENABLED": "0",
            "GRPC_DNS_RESOLVER": "native"}  # fmt: skip
    volumes = {"NEVE_DATA_DIR": str(head.tmp / "data"), "NEVE_MODELS_DIR": str(models_dir)}
    ray_head = container(head_spec, "ray-head")
    head.start(command_of(ray_head), path | ray_head.get("env", {}), "ray-head.log")
    hub = container(head_spec, "hub")
    head.start(command_of(hub), path | hub["env"] | volumes | ENGINE, "hub.log")
    ray_worker = container(worker_spec, "ray-worker")
    worker.start(command_of(ray_worker),
                 path | ray_worker["env"] | {"NEVE_MODELS_DIR": str(models_dir)} | ENGINE,
                 "ray-worker.log")  # fmt: skip

    # The hub answers once its replica, on the worker, has loaded the model.
    ready = """
import httpx, time
deadline = time.monotonic() + 180
while True:
    try:
        r = httpx.get("http://127.0.0.1:8000/ready", timeout=5)
        if r.status_code == 200:
            break
    except httpx.TransportError:
        pass
    assert time.monotonic() < deadline, "not ready"
    time.sleep(1)
chat = httpx.post("http://127.0.0.1:8000/v1/chat/completions", timeout=120, json={
    "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8, "temperature": 0})
nodes = httpx.post("http://127.0.0.1:8001/relay/ray_nodes", json={"data": [[0]]}, timeout=30)
print(chat.status_code, chat.text)
print(nodes.text)
"""
    try:
        out = head.call(ready, timeout=240).splitlines()
    except (AssertionError, subprocess.TimeoutExpired):
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}"
                         for h in hosts for p in sorted(h.tmp.glob("*.log")))  # fmt: skip
        raise AssertionError(f"the cluster did not answer:\n{logs}") from None
    status, body = out[0].split(" ", 1)
    assert status == "200", body
    answer = json.loads(body)
    assert answer["choices"][0]["message"]["content"]
    nodes = json.loads(out[1])["data"][0][1]
    alive = {n["address"] for n in nodes if n["alive"]}
    assert alive == {head.address, worker.address}  # the worker joined by the head's name
    # Grafana's dashboards: Ray's, and neve's beside them.
    # (session_latest links to /tmp/ray/... as the head's host sees it: the session itself)
    (session,) = (head.tmp / "ray").glob("session_2*")
    folder = session / "metrics" / "grafana" / "dashboards"
    deadline = time.monotonic() + 30
    while not (folder / "neve-dashboard.json").exists():
        assert time.monotonic() < deadline, sorted(p.name for p in folder.iterdir())
        time.sleep(0.5)
    assert (folder / "serve_grafana_dashboard.json").exists()
