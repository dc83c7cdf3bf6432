"""deploy/compose.yaml, checked by real parsers: Compose's own (Debian's docker-compose
validates and resolves a file without a container engine), Prometheus' `promtool`, and
neve's settings loader; its hub's environment starts a real hub on a real PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import yaml
from sqlalchemy import create_engine, text

from neve.config import Settings, load_settings
from neve.errors import ConfigError
from tests.conftest import offline_env, start_hub, stop_hub
from tests.postgres import PgServer

DEPLOY = Path(__file__).parents[1] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"


def compose(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("docker-compose")
    assert found, "no docker-compose: `make test` installs Debian's"
    # The file as a newcomer's shell resolves it: none of this machine's settings.
    clean = {k: v for k, v in os.environ.items() if k.startswith(("PATH", "HOME", "LANG"))}
    return subprocess.run(
        [found, "-f", str(COMPOSE), *args], env={**clean, **env},
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    ran = compose("--profile", "gpu", "config")
    assert ran.returncode == 0, ran.stderr
    return dict(yaml.safe_load(ran.stdout)["services"])


def binds(service: dict[str, Any]) -> dict[str, Path]:
    """A service's host files by where it mounts them."""
    out = {}
    for volume in service.get("volumes", []):
        source, target, *_ = volume.split(":")
        if source.startswith("/"):
            out[target] = Path(source)
    return out


def env_of(service: dict[str, Any]) -> dict[str, str]:
    return {k: "" if v is None else str(v) for k, v in service.get("environment", {}).items()}


def test_compose_validates_and_the_gpu_service_is_only_in_its_profile(
    services: dict[str, Any],
) -> None:
    assert set(services) == {"hub", "balancer", "ui", "postgres", "prometheus", "grafana", "vllm"}
    profiles = {name: s.get("profiles") for name, s in services.items() if s.get("profiles")}
    assert profiles == {"vllm": ["gpu"]}  # `up` starts the rest; `--profile gpu` adds vLLM
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and gpu["capabilities"] == ["gpu"]
    # Every file a service mounts is in the repository.
    for name, service in services.items():
        for source in binds(service).values():
            assert source.exists(), f"{name} mounts {source}, which does not exist"
    # A broken file is refused, naming the problem (the check above is not vacuous).
    broken = compose("config", "-q", NEVE_PORT="not-a-port")
    assert broken.returncode != 0 and "services.balancer.ports" in broken.stderr


def test_the_hubs_environment_is_valid_settings_and_the_ui_reaches_the_hub(
    services: dict[str, Any],
) -> None:
    hub = env_of(services["hub"])
    settings = load_settings(environ=hub)
    database = urlsplit(settings.database_url.get_secret_value())  # type: ignore[union-attr]
    pg = env_of(services["postgres"])
    assert database.hostname in services and services[database.hostname] is services["postgres"]
    assert (database.username, database.password, database.path) == (
        pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], f"/{pg['POSTGRES_DB']}",
    )  # fmt: skip
    # Clients reach the hub through the balancer, which sends them on to the hub's port.
    assert "ports" not in services["hub"]
    assert services["balancer"]["ports"][0]["target"] == settings.port
    config = binds(services["balancer"])["/usr/local/etc/haproxy/haproxy.cfg"].read_text()
    assert f"bind :{settings.port}" in config and f" hub:{settings.port} check" in config
    ui_args = services["ui"]["command"]
    hub_url = urlsplit(ui_args[ui_args.index("--url") + 1])
    assert (hub_url.hostname, hub_url.port) == ("balancer", settings.port)
    assert services["ui"]["ports"][0]["target"] == int(ui_args[ui_args.index("--port") + 1])

    # With vLLM: the settings neve.env's comments name, the upstream a service of the profile.
    gpu = load_settings(environ={**hub, "NEVE_ENGINE": "openai",
                                 "NEVE_UPSTREAM_URL": "http://vllm:8000/v1"})  # fmt: skip
    assert urlsplit(gpu.all_upstreams[0].url).hostname == "vllm"


def test_every_neve_variable_in_neve_env_is_a_setting(services: dict[str, Any]) -> None:
    """The hub reads only its settings' names: a misspelt one would be silently unused."""
    names = {f"NEVE_{key.upper()}" for key in Settings.model_fields}
    given = [n for n in env_of(services["hub"]) if n.startswith("NEVE_")]
    assert len(given) >= 5 and set(given) <= names, set(given) - names


def test_prometheus_passes_promtool_and_scrapes_the_hub_service(
    services: dict[str, Any], tmp_path: Path
) -> None:
    prometheus = services["prometheus"]
    mounted = binds(prometheus)["/etc/prometheus/prometheus.yml"]
    # Prometheus resolves the key file beside its configuration, where the entry point
    # writes it: give promtool the same layout.
    shutil.copy(mounted, tmp_path / "prometheus.yml")
    script = prometheus["command"][0]
    assert "> /etc/prometheus/neve-api-key" in script
    assert "--config.file=/etc/prometheus/prometheus.yml" in script
    (tmp_path / "neve-api-key").write_text("")
    assert shutil.which("promtool"), "no promtool: `make test` installs Prometheus"
    check = subprocess.run(
        ["promtool", "check", "config", str(tmp_path / "prometheus.yml")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr

    config = yaml.safe_load(mounted.read_text())
    job = config["scrape_configs"][0]
    (found,) = job["dns_sd_configs"]  # every instance of the hub, by the service's name
    (host,) = found["names"]
    assert services[host] is services["hub"] and found["type"] == "A"
    assert found["port"] == load_settings(environ=env_of(services["hub"])).port
    assert job["metrics_path"] == "/metrics"
    assert job["authorization"]["credentials_file"] == "neve-api-key"


def test_haproxy_accepts_its_configuration() -> None:
    haproxy = shutil.which("haproxy") or "/usr/sbin/haproxy"
    assert Path(haproxy).exists(), "no haproxy: `make test` installs Debian's"
    checked = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_several_instances_are_one_fleet_on_the_postgresql_service() -> None:
    ran = compose("config", NEVE_INSTANCES="3")
    assert ran.returncode == 0, ran.stderr
    scaled = yaml.safe_load(ran.stdout)["services"]
    assert scaled["hub"]["deploy"]["replicas"] == 3
    hub = env_of(scaled["hub"])
    assert load_settings(environ=hub).instances == 3
    # The hub itself refuses a fleet whose state would not be shared.
    with pytest.raises(ConfigError, match="database_url"):
        load_settings(environ={**hub, "NEVE_DATABASE_URL": "sqlite:////data/neve.db"})


def test_grafana_is_provisioned_with_prometheus_and_the_dashboard(
    services: dict[str, Any],
) -> None:
    grafana = binds(services["grafana"])
    provisioning = grafana["/etc/grafana/provisioning"]
    sources = yaml.safe_load((provisioning / "datasources" / "prometheus.yaml").read_text())
    source = sources["datasources"][0]
    url = urlsplit(source["url"])
    assert services[url.hostname] is services["prometheus"] and url.port == 9090
    assert source["type"] == "prometheus" and source["isDefault"]

    providers = yaml.safe_load((provisioning / "dashboards" / "neve.yaml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    dashboards = [t for t in grafana if t.startswith(folder + "/")]
    assert dashboards, f"nothing mounted in {folder}, which Grafana reads dashboards from"
    dashboard = json.loads(grafana[dashboards[0]].read_text())
    shipped = DEPLOY.parent / "src" / "neve" / "grafana" / "neve-dashboard.json"
    assert dashboard == json.loads(shipped.read_text())
    home = env_of(services["grafana"])["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == dashboards[0]
    variable = next(v for v in dashboard["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == source["type"]


def test_the_compose_hub_runs_on_postgresql_with_its_own_environment(
    services: dict[str, Any], postgres: PgServer, tmp_path: Path
) -> None:
    """The hub's environment as Compose gives it, its database host pointed at this test's
    PostgreSQL (the compose service's name resolves only inside Compose's network)."""
    hub_env = env_of(services["hub"])
    url = urlsplit(hub_env["NEVE_DATABASE_URL"])
    database = url.path.lstrip("/")
    postgres.create_database(database)
    here = url._replace(netloc=f"{url.username}:{url.password}@127.0.0.1:{postgres.port}")
    hub_env["NEVE_DATABASE_URL"] = here.geturl()
    hub = start_hub(tmp_path, env=offline_env(**hub_env))
    try:
        asked = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
        reply = httpx.post(f"{hub.api}/chat/completions", json=asked, timeout=120)
        assert reply.status_code == 200, reply.text
    finally:
        stop_hub(hub)
    engine = create_engine(postgres.url(database))
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT route FROM request_log")).scalars().all()
    engine.dispose()
    assert "/v1/chat/completions" in rows
