"""One hub, three instances: three real `neve serve` processes with their own data
directories, sharing one real PostgreSQL, behind a real HAProxy (Debian's, round-robin,
health-checked on /ready), as a fleet runs behind SPCS's or Kubernetes' load balancer.
Everything below goes through the balancer unless it names an instance."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.conftest import Hub, free_port, neve, start_hub, stop_hub
from tests.postgres import PgServer

INSTANCES = 3
REFRESH = 1.0  # auth_refresh_interval: how soon a revoked key is refused everywhere
SYNC = 0.5  # rag_sync_interval: how soon a document is searched everywhere


@dataclass
class Fleet:
    url: str  # the balancer
    hubs: list[Hub]
    database_url: str
    admin_key: str

    def cli(self, *args: str) -> str:
        ran = neve(*args, "--set", f"database_url={self.database_url}")
        assert ran.returncode == 0, ran.stderr
        return ran.stdout.strip()

    def http(self, url: str | None = None, key: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=url or self.url,
            headers={"Authorization": f"Bearer {key or self.admin_key}"},
            timeout=60,
        )


def haproxy_config(port: int, hubs: list[Hub]) -> str:
    servers = "\n".join(
        f"  server hub{i} {hub.url.removeprefix('http://')} check" for i, hub in enumerate(hubs)
    )
    # retry-on conn-failure: a request no instance has begun goes to another one; a
    # request an instance began is never sent twice.
    return f"""global
  maxconn 512
defaults
  mode http
  timeout connect 2s
  timeout client 120s
  timeout server 120s
  retries 3
  option redispatch 1
  retry-on conn-failure
frontend api
  bind 127.0.0.1:{port}
  default_backend hubs
backend hubs
  balance roundrobin
  option httpchk GET /ready
  default-server inter 300ms fall 2 rise 2
{servers}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory, postgres: PgServer) -> Iterator[Fleet]:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "no haproxy: `make test` installs Debian's"
    tmp = tmp_path_factory.mktemp("fleet")
    database_url = postgres.create_database(f"fleet_{uuid.uuid4().hex[:12]}")
    settings = [
        f"database_url={database_url}", f"instances={INSTANCES}", "n_threads=1",
        f"auth_refresh_interval={REFRESH}", f"rag_sync_interval={SYNC}", "max_model_len=1024",
        "kv_cache_tokens=2048",
    ]  # fmt: skip
    hubs: list[Hub] = []
    balancer: subprocess.Popen[bytes] | None = None
    try:
        # The first migrates the database; the others start on it together.
        hubs.append(start_hub(tmp / "a", *settings))
        with ThreadPoolExecutor(2) as pool:
            hubs += pool.map(lambda name: start_hub(tmp / name, *settings), ["b", "c"])
        admin = neve("keys", "create", "--name", "ops", "--role", "admin",
                     "--set", f"database_url={database_url}")  # fmt: skip
        assert admin.returncode == 0, admin.stderr
        port = free_port()
        config = tmp / "haproxy.cfg"
        config.write_text(haproxy_config(port, hubs))
        balancer = subprocess.Popen([haproxy, "-f", str(config), "-db"],
                                    stdout=(tmp / "haproxy.log").open("wb"),
                                    stderr=subprocess.STDOUT)  # fmt: skip
        found = Fleet(f"http://127.0.0.1:{port}", hubs, database_url, admin.stdout.strip())
        _wait_until_all_serve(found)
        yield found
    finally:
        if balancer is not None:
            balancer.terminate()
            balancer.wait(10)
        for hub in hubs:
            stop_hub(hub)


def _wait_until_all_serve(fleet: Fleet) -> None:
    """Until the balancer has every instance in its rotation."""
    deadline = time.monotonic() + 30
    seen: set[int] = set()
    with fleet.http() as http:
        while time.monotonic() < deadline:
            try:
                seen = {http.get("/v1/models").status_code for _ in range(2 * INSTANCES)}
            except httpx.TransportError:  # the balancer not listening yet
                seen = {0}
            if seen == {200}:
                return
            time.sleep(0.2)
    raise AssertionError(f"the balancer did not serve: {seen}")


def test_every_instance_says_it_shares_its_state(fleet: Fleet) -> None:
    for hub in fleet.hubs:
        (line,) = hub.lines_starting("one of 3 instances")
        assert "shared in postgresql" in line


def test_a_key_works_on_every_instance_at_once_and_a_revoked_one_nowhere(fleet: Fleet) -> None:
    key = fleet.cli("keys", "create", "--name", "ana")
    for hub in fleet.hubs:  # at once: no instance has re-read the keys yet
        with fleet.http(hub.url, key) as http:
            assert http.get("/v1/models").status_code == 200
    key_id = json.loads(fleet.cli("keys", "list", "--json").splitlines()[-1])["id"]
    fleet.cli("keys", "revoke", key_id)
    time.sleep(REFRESH + 0.5)
    for hub in fleet.hubs:
        with fleet.http(hub.url, key) as http:
            assert http.get("/v1/models").status_code == 401


def test_a_key_s_rpm_holds_across_the_fleet(fleet: Fleet) -> None:
    key = fleet.cli("keys", "create", "--name", "bo", "--rpm", "10")
    with fleet.http(key=key) as http:
        answers = [http.get("/v1/models") for _ in range(30)]
    ok = [a for a in answers if a.status_code == 200]
    limited = [a for a in answers if a.status_code == 429]
    # The fleet counts one minute per key in the database, under the key's lock: exact.
    assert (len(ok), len(limited)) == (10, 20), [a.status_code for a in answers]
    assert all(1 <= int(a.headers["retry-after"]) <= 60 for a in limited)


def _generated(fleet: Fleet) -> float:
    total = 0.0
    for hub in fleet.hubs:
        with fleet.http(hub.url) as http:
            found = re.search(r"^neve:generation_tokens_total(?:\{[^}]*\})? (\S+)$",
                              http.get("/metrics").text, re.M)  # fmt: skip
            total += float(found.group(1)) if found else 0.0
    return total


def test_a_relay_batch_retried_on_another_instance_is_not_generated_again(fleet: Fleet) -> None:
    body = {"data": [[i, "Invent a word.", {"temperature": 1.0, "max_tokens": 8}]
                     for i in range(3)]}  # fmt: skip
    headers = {"sf-external-function-query-batch-id": "fleet-batch-1"}
    with fleet.http(fleet.hubs[0].url) as first, fleet.http(fleet.hubs[1].url) as second:
        answer = first.post("/relay", json=body, headers=headers)
        assert answer.status_code == 200, answer.text
        before = _generated(fleet)
        retried = second.post("/relay", json=body, headers=headers)
    assert retried.status_code == 200
    assert retried.json() == answer.json()  # sampled at temperature 1: not recomputed
    assert _generated(fleet) == before


def test_a_document_uploaded_through_one_instance_is_cited_through_the_others(
    fleet: Fleet,
) -> None:
    note = b"# Harbour rules\n\nBoats in the Larsvik harbour must moor at the blue pier."
    with fleet.http(fleet.hubs[0].url) as a:
        sent = a.post("/v1/documents", files={"files": ("harbour.md", note, "text/markdown")})
    assert sent.status_code == 201, sent.text
    for hub in fleet.hubs[1:]:
        deadline = time.monotonic() + 10 * SYNC + 5
        with fleet.http(hub.url) as http:
            while True:
                found = http.post("/v1/rag/search", json={"query": "where do boats moor"})
                titles = [h["title"] for h in found.json()["data"]]
                if "Harbour rules" in titles or time.monotonic() > deadline:
                    break
                time.sleep(SYNC / 2)
            assert "Harbour rules" in titles
            answer = http.post("/v1/rag/query", json={
                "question": "Where must boats moor in Larsvik?", "max_tokens": 8,
            })  # fmt: skip
            assert answer.status_code == 200, answer.text
            cited = [c["title"] for c in answer.json()["citations"]]
            assert "Harbour rules" in cited


def test_neve_ingest_writes_to_the_fleet_s_documents(fleet: Fleet, tmp_path: Path) -> None:
    """`neve ingest` on any machine with the fleet's settings: its documents are searched
    through the balancer, whichever instance answers."""
    folder = tmp_path / "manuals"
    folder.mkdir()
    (folder / "kiln.md").write_text("# Kiln care\n\nFire the Ostervik kiln at 1240 degrees.")
    shared = ["--set", f"database_url={fleet.database_url}", "--set", f"instances={INSTANCES}"]
    ran = neve("ingest", str(folder), "--data-dir", str(tmp_path / "cli"), *shared)
    assert ran.returncode == 0, ran.stderr
    deadline = time.monotonic() + 10 * SYNC + 5
    with fleet.http() as http:
        while True:  # every instance in turn, until each has it
            seen = [
                "Kiln care" in [h["title"] for h in http.post(
                    "/v1/rag/search", json={"query": "kiln temperature"}).json()["data"]]
                for _ in range(INSTANCES)
            ]  # fmt: skip
            if all(seen) or time.monotonic() > deadline:
                break
            time.sleep(SYNC / 2)
    assert all(seen), seen


def test_an_instance_killed_under_load_loses_no_feedback(fleet: Fleet) -> None:
    victim = fleet.hubs[2]
    sent = 90
    done: list[int] = []
    lock = threading.Lock()

    def post(i: int) -> int:
        with fleet.http() as http:
            try:
                status = http.post("/v1/feedback", json={
                    "score": 1, "run_id": f"kill-{i}", "prompt": "q", "response": "a",
                }).status_code  # fmt: skip
            except httpx.TransportError:
                status = 0
        with lock:
            done.append(i)
            if len(done) == sent // 3:
                victim.process.send_signal(signal.SIGKILL)
        return status

    with ThreadPoolExecutor(4) as pool:
        statuses = list(pool.map(post, range(sent)))
    assert victim.process.wait(10) == -signal.SIGKILL
    stored = _feedback_rows(fleet.database_url, "kill-%")
    accepted = {f"kill-{i}" for i, s in enumerate(statuses) if s in (200, 201)}
    # Every row the fleet accepted is stored; a request fails only if the killed instance
    # had begun it (at most one per client in flight).
    assert accepted <= stored
    assert sent - len(accepted) <= 4, statuses
    after = [s for i, s in enumerate(statuses) if i >= sent // 3 + 4]
    assert set(after) <= {200, 201}, after


def _feedback_rows(database_url: str, pattern: str) -> set[str]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                text("SELECT run_id FROM feedback WHERE run_id LIKE :p"), {"p": pattern}
            )
            return {r[0] for r in rows}
    finally:
        engine.dispose()
