"""The Ray cluster `neve deploy spcs` makes for engine ray, as Snowflake's own Ray templates
lay it out: a head service (Ray's GCS and dashboard, Prometheus and Grafana, and the hub
in front of the cluster, as on KubeRay) in spcs.compute_pool, and one worker service per
pool of spcs.ray.workers, an instance per node, joining the head by its service DNS name.

SPCS lets services reach each other only on the ports their specifications declare, and
Ray opens many: every one is pinned on `ray start` and declared as a private TCP endpoint
(the range Ray gives its workers' processes as one portRange)."""

from __future__ import annotations

from typing import Any

from neve.snowflake.settings import RayPool, SpcsSettings

# Ray's ports, pinned: name → (ray start's flag, port). The head has them all; a worker
# node everything but the GCS, the dashboard and the client server.
GCS_PORT = 6379
DASHBOARD_PORT = 8265
GRAFANA_PORT = 3000
PROMETHEUS_PORT = 9090
NODE_PORTS = {
    "node-manager": ("--node-manager-port", 6380),
    "object-manager": ("--object-manager-port", 6381),
    "runtime-env-agent": ("--runtime-env-agent-port", 6382),
    "dashboard-agent-grpc": ("--dashboard-agent-grpc-port", 6383),
    "dashboard-agent": ("--dashboard-agent-listen-port", 6384),
    "metrics": ("--metrics-export-port", 6385),
}
HEAD_PORTS = {
    "gcs": ("--port", GCS_PORT),
    "ray-client": ("--ray-client-server-port", 10001),
    **NODE_PORTS,
}
WORKER_PORTS = (10002, 10199)  # every worker and driver process of a node
RAY_TMP = "/tmp/ray"  # Ray's session files, shared with Prometheus and Grafana
GRAFANA = f"{RAY_TMP}/session_latest/metrics/grafana"  # what Ray writes for Grafana
DASHBOARDS = f"{GRAFANA}/dashboards"
# Where neve's own dashboard is, in the installed package.
_DASHBOARD = (
    "import neve, pathlib; "
    "print(pathlib.Path(neve.__file__).parent / 'grafana' / 'neve-dashboard.json')"
)
DNS_DOMAIN = "${SPCS_DNS_DOMAIN}"  # filled in by `up` from SYSTEM$GET_SERVICE_DNS_DOMAIN


def head_service(spcs: SpcsSettings) -> str:
    """The hub's own service is the head: the SQL functions, the UI and the endpoints
    name it as they do without Ray."""
    return spcs.service


def worker_service(spcs: SpcsSettings, pool: RayPool) -> str:
    return f"{spcs.service}_RAY_{pool.name.upper()}"


def worker_pool(spcs: SpcsSettings, pool: RayPool) -> str:
    return f"{spcs.compute_pool}_{pool.name.upper()}"


def head_host(spcs: SpcsSettings) -> str:
    """The head's name inside Snowflake's network, as the workers' `ray start` uses it."""
    label = head_service(spcs).lower().replace("_", "-")
    if spcs.ray.dns == "legacy":
        where = f"{spcs.schema_name}.{spcs.database}".lower().replace("_", "-")
        return f"{label}.{where}.snowflakecomputing.internal"
    return f"{label}.{DNS_DOMAIN}"


def _pinned(ports: dict[str, tuple[str, int]]) -> list[str]:
    low, high = WORKER_PORTS
    return [f"{flag}={port}" for flag, port in ports.values()] + [
        f"--min-worker-port={low}", f"--max-worker-port={high}",
    ]  # fmt: skip


def head_command() -> list[str]:
    """The head holds no replica (no CPUs or GPUs for them): the cluster's state only."""
    return ["ray", "start", "--head", "--block", "--num-cpus=0", "--num-gpus=0",
            "--dashboard-host=0.0.0.0", f"--dashboard-port={DASHBOARD_PORT}",
            *_pinned(HEAD_PORTS)]  # fmt: skip


def worker_command(spcs: SpcsSettings, pool: RayPool) -> list[str]:
    return ["ray", "start", "--block", f"--address={head_host(spcs)}:{GCS_PORT}",
            f"--num-gpus={pool.gpus}", *_pinned(NODE_PORTS)]  # fmt: skip


def _tcp(ports: dict[str, tuple[str, int]]) -> list[dict[str, Any]]:
    low, high = WORKER_PORTS
    single = [{"name": name, "port": port, "protocol": "TCP"} for name, (_, port) in ports.items()]
    return [*single, {"name": "ray-workers", "portRange": f"{low}-{high}", "protocol": "TCP"}]


def head_containers(spcs: SpcsSettings, hub: dict[str, Any], image: str) -> list[dict[str, Any]]:
    """The head's containers: Ray's head, the hub (`hub`, as hub_spec made it, now a
    driver of the cluster beside the head), Prometheus and Grafana on Ray's session
    files (Ray writes its Grafana dashboards and Prometheus targets there)."""

    def shared() -> dict[str, str]:  # a new one each: YAML would alias one object
        return {"name": "ray-tmp", "mountPath": RAY_TMP}

    head = {
        "name": "ray-head",
        "image": image,
        "command": head_command(),
        "env": {
            "RAY_GRAFANA_HOST": f"http://localhost:{GRAFANA_PORT}",
            "RAY_PROMETHEUS_HOST": f"http://localhost:{PROMETHEUS_PORT}",
            "RAY_GRAFANA_IFRAME_HOST": "/grafana",
        },
        "volumeMounts": [shared()],
    }
    # The hub waits for the head it drives (containers of a service start together);
    # its dashboard goes beside those Ray writes for Grafana, once Ray has written them.
    serve = " ".join(hub["args"])
    hub = hub | {
        "command": [
            "sh",
            "-c",
            f"until ray health-check --address=127.0.0.1:{GCS_PORT}; do sleep 2; done; "
            f"(until [ -d {DASHBOARDS} ]; do sleep 2; done; "
            f'cp "$(python3 -c "{_DASHBOARD}")" {DASHBOARDS}/) & exec neve {serve}',
        ],
        "env": hub["env"] | {"NEVE_ENGINE": "ray", "NEVE_RAY_ADDRESS": f"127.0.0.1:{GCS_PORT}"},
        "volumeMounts": [*hub["volumeMounts"], shared()],
    }
    hub.pop("args")
    targets = f"{RAY_TMP}/prom_metrics_service_discovery.json"
    config = (
        "global: {scrape_interval: 15s}\nscrape_configs:\n"
        f"- {{job_name: ray, file_sd_configs: [{{files: ['{targets}']}}]}}\n"
        "- {job_name: neve, static_configs: [{targets: ['localhost:8000']}]}\n"
    )
    prometheus = {
        "name": "prometheus",
        "image": f"{image.rsplit('/', 1)[0]}/{spcs.ray.prometheus_image}",
        "command": [
            "sh",
            "-c",
            f"printf '%s' \"{config}\" > /tmp/prometheus.yml && exec "
            f"prometheus --config.file=/tmp/prometheus.yml "
            f"--web.listen-address=:{PROMETHEUS_PORT}",
        ],
        "volumeMounts": [shared()],
    }
    grafana = {
        "name": "grafana",
        "image": f"{image.rsplit('/', 1)[0]}/{spcs.ray.grafana_image}",
        # Grafana reads its provisioning once, at start: after Ray has written it.
        "command": [
            "sh",
            "-c",
            f"until [ -d {GRAFANA}/provisioning/dashboards ]; do sleep 2; done; exec /run.sh",
        ],
        "env": {
            "GF_PATHS_PROVISIONING": f"{GRAFANA}/provisioning",
            "GF_SERVER_HTTP_PORT": str(GRAFANA_PORT),
            "GF_AUTH_ANONYMOUS_ENABLED": "true",
            "GF_SECURITY_ALLOW_EMBEDDING": "true",
        },
        "volumeMounts": [shared()],
    }
    return [head, hub, prometheus, grafana]


def head_endpoints(spcs: SpcsSettings) -> list[dict[str, Any]]:
    public = spcs.ray.public
    return [
        {"name": "dashboard", "port": DASHBOARD_PORT, "public": "dashboard" in public},
        {"name": "grafana", "port": GRAFANA_PORT, "public": "grafana" in public},
        {"name": "prometheus", "port": PROMETHEUS_PORT, "public": False},
        *_tcp(HEAD_PORTS),
    ]


def head_listening() -> dict[str, list[int]]:
    return {
        "ray-head": [DASHBOARD_PORT, *(port for _, port in HEAD_PORTS.values())],
        "prometheus": [PROMETHEUS_PORT],
        "grafana": [GRAFANA_PORT],
    }


def worker_spec(
    spcs: SpcsSettings, pool: RayPool, image: str, secrets: list[dict[str, Any]]
) -> dict[str, Any]:
    """A worker node: Ray's raylet, whose replicas load models into /models (the models
    stage, shared with the head's hub)."""
    container: dict[str, Any] = {
        "name": "ray-worker",
        "image": image,
        "command": worker_command(spcs, pool),
        "env": {"NEVE_MODELS_DIR": "/models", "NEVE_LOG_LEVEL": "info"},
        "volumeMounts": [{"name": "models", "mountPath": "/models"}],
    }
    if pool.gpus:
        gpus = {"nvidia.com/gpu": pool.gpus}
        container["resources"] = {"requests": dict(gpus), "limits": dict(gpus)}
    if secrets:  # a Hugging Face token, for replicas that download their model
        container["secrets"] = secrets
    return {
        "spec": {
            "containers": [container],
            "endpoints": _tcp(NODE_PORTS),
            "volumes": [{"name": "models", "source": "stage",
                         "stageConfig": {"name": f"@{spcs.qualified(spcs.models_stage)}"}}],
            "logExporters": {"eventTableConfig": {"logLevel": spcs.log_level}},
        }
    }  # fmt: skip


def worker_listening() -> dict[str, list[int]]:
    return {"ray-worker": [port for _, port in NODE_PORTS.values()]}
