"""/metrics in Prometheus' format, read by a parser and scraped by a real Prometheus."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Hub, free_port, start_hub, stop_hub

ASK = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4, "temperature": 0}
DASHBOARD = Path(__file__).parents[2] / "src" / "neve" / "grafana" / "neve-dashboard.json"
RAY_ONLY = {"neve:replicas", "neve:replica_retries_total"}


@pytest.fixture(scope="module")
def fresh_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    """A hub of its own, so the counts below are exactly this module's traffic."""
    started = start_hub(tmp_path_factory.mktemp("metrics"))
    yield started
    stop_hub(started)


def samples(hub: Hub) -> dict[str, float]:
    text = httpx.get(f"{hub.url}/metrics").text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()) if k != "le")
            key = f"{s.name}{{{labels}}}" if labels else s.name
            if "le" not in s.labels:
                out[key] = out.get(key, 0) + s.value
    return out


def test_requests_tokens_latencies_and_errors_are_counted(fresh_hub: Hub) -> None:
    url = f"{fresh_hub.api}/chat/completions"
    for _ in range(2):
        assert httpx.post(url, json=ASK, timeout=60).status_code == 200
    with httpx.stream("POST", url, json={**ASK, "stream": True}, timeout=60) as r:
        list(r.iter_lines())
    assert httpx.post(url, json={**ASK, "max_tokens": -1}).status_code == 400
    assert (
        httpx.post(f"{fresh_hub.url}/relay", json={"data": [[0, None], [1, None]]}).status_code
        == 200
    )
    assert httpx.post(f"{fresh_hub.api}/feedback", json={"score": -1}).status_code == 201
    search = httpx.post(f"{fresh_hub.api}/rag/search", json={"query": "tides"}, timeout=120)
    assert search.json() == {"object": "list", "data": []}  # no documents yet

    m = samples(fresh_hub)
    assert m["neve:request_success_total{finish_reason=length}"] == 3
    assert m["neve:generation_tokens_total{model_name=smollm2}"] == 12
    assert m["neve:prompt_tokens_total{model_name=smollm2}"] > 30
    assert m["neve:time_to_first_token_seconds_count{model_name=smollm2}"] == 3
    assert m["neve:e2e_request_latency_seconds_count{model_name=smollm2}"] == 3
    assert m["neve:inter_token_latency_seconds_count{model_name=smollm2}"] == 9
    assert m["neve:request_errors_total{code=400}"] == 1
    assert m["neve:relay_rows_total"] == 2
    assert m["neve:feedback_total{score=-1}"] == 1
    assert m["neve:rag_queries_total{kind=search}"] == 1
    assert m["neve:num_requests_running"] == 0 and m["neve:num_requests_waiting"] == 0


def test_the_dashboard_reads_only_metrics_the_hub_exports(fresh_hub: Hub) -> None:
    exported = {name.split("{")[0] for name in samples(fresh_hub)}
    exported |= {n.removesuffix("_count") + "_bucket" for n in exported if n.endswith("_count")}
    dashboard = json.loads(DASHBOARD.read_text())
    used = {
        word
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for word in target["expr"].replace("(", " ").replace("{", " ").split()
        if word.startswith("neve:")
    }
    # The replicas' panel reads what only a hub over Ray exports (tests/test_ray.py checks
    # that it does).
    assert used and used <= exported | RAY_ONLY


def test_a_real_prometheus_scrapes_the_request_count(fresh_hub: Hub, tmp_path: Path) -> None:
    assert shutil.which("prometheus"), "no prometheus server: `make test` installs it"
    url = f"{fresh_hub.api}/chat/completions"
    before = samples(fresh_hub).get("neve:request_success_total{finish_reason=length}", 0)
    for _ in range(4):
        httpx.post(url, json=ASK, timeout=60).raise_for_status()
    expected = before + 4

    port = free_port()
    config = tmp_path / "prometheus.yml"
    target = fresh_hub.url.removeprefix("http://")
    config.write_text(
        "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: neve\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        query = 'sum(neve:request_success_total{job="neve"})'
        deadline = time.monotonic() + 60
        while True:
            assert prometheus.poll() is None, "prometheus exited"
            try:
                reply = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/query", params={"query": query}, timeout=5
                ).json()
                result = reply["data"]["result"]
                if result and float(result[0]["value"][1]) == expected:
                    break
            except (httpx.TransportError, ValueError, KeyError):
                pass
            assert time.monotonic() < deadline, "prometheus never saw the requests"
            time.sleep(0.5)
    finally:
        prometheus.terminate()
        prometheus.wait()
