"""`neve deploy kuberay`: the Kubernetes manifest for neve on a KubeRay operator. A
RayService holds the Ray cluster (a head that runs no replica, one worker group of CPU or
GPU pods that Ray's autoscaler grows and shrinks) and, as its serveConfigV2, the model's
Serve application (serve_config.py: the same the hub would deploy itself). The hub runs
in front as a Deployment with its Service: each hub pod joins the cluster as a node
without resources (Serve's handles do not work through Ray Client) and uses the
application KubeRay deployed (ray_deploy false). Imports no Ray."""

from __future__ import annotations

import json
import math
from typing import Any

import yaml

from neve.config import Settings, changed, environment
from neve.errors import ConfigError
from neve.ray import layout, serve_config
from neve.ray.settings import KubeRaySettings

API_PORT = 8000
UI_PORT = 8501
GCS_PORT = 6379
DATA_PATH = "/data"
GPU = "nvidia.com/gpu"
_HUB_UID = 1000  # the image's user `neve`


def manifest(settings: Settings) -> list[dict[str, Any]]:
    """The objects to `kubectl apply`, in the order they may be applied."""
    k = settings.kuberay
    workers = _workers(settings)
    if k.data_volume_size and k.hub_replicas > 1:
        raise ConfigError(
            f"kuberay.hub_replicas ({k.hub_replicas}): hubs cannot share one ReadWriteOnce "
            "volume; set kuberay.data_volume_size empty and database_url to PostgreSQL "
            f"(in the Secret {k.secret})"
        )
    if k.hub_replicas > 1 and settings.database_url is not None and not settings.shared_database:
        raise ConfigError(
            f"kuberay.hub_replicas ({k.hub_replicas}): hubs share keys, limits and documents "
            "through PostgreSQL; database_url names another database"
        )
    docs = [ray_service(settings, workers), hub_deployment(settings), hub_service(k)]
    if k.data_volume_size:
        docs.insert(0, data_claim(k))
    return docs


class _Dumper(yaml.SafeDumper):
    """Text of several lines (serveConfigV2) as a literal block, as people write it."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _text)


def as_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.dump_all(docs, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def _object(
    k: KubeRaySettings, api: str, kind: str, name: str, component: str, spec: dict[str, Any]
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": _labels(k, component)}
    if k.namespace:
        meta["namespace"] = k.namespace
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


def _labels(k: KubeRaySettings, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "neve",
        "app.kubernetes.io/instance": k.name,
        "app.kubernetes.io/component": component,
    }


def _cpus(quantity: str) -> float:
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def _workers(s: Settings) -> tuple[int, int, int]:
    """Replicas one worker pod holds (0: a replica spans pods), and the pods kept and
    allowed: by default enough for ray_min_replicas and ray_max_replicas."""
    k = s.kuberay
    shape = layout.layout(s)
    if shape is not None:  # one replica over shape.gpus GPUs, across pods if it must
        if not k.worker_gpus:
            raise ConfigError(f"{shape} needs GPUs: set kuberay.worker_gpus")
        pods = -(-shape.gpus // k.worker_gpus)
        least = k.min_workers if k.min_workers is not None else pods * s.ray_min_replicas
        most = k.max_workers if k.max_workers is not None else pods * s.ray_max_replicas
        layout.check(s, [k.worker_gpus] * most, "kuberay's GPU worker group (max_workers)")
        if least > most:
            raise ConfigError(f"kuberay.min_workers ({least}) exceeds kuberay.max_workers ({most})")
        return 0, least, most
    if s.ray_num_gpus and not k.worker_gpus:
        raise ConfigError(
            f"kuberay.worker_gpus is 0 but each replica asks ray_num_gpus={s.ray_num_gpus:g}: "
            "give the workers GPUs"
        )
    fits = []
    if s.ray_num_cpus:
        fits.append(math.floor(_cpus(k.worker_cpu) / s.ray_num_cpus))
    if s.ray_num_gpus:
        fits.append(math.floor(k.worker_gpus / s.ray_num_gpus))
    per_pod = min(fits) if fits else 1
    if per_pod < 1:
        raise ConfigError(
            f"no worker pod holds a replica: kuberay.worker_cpu={k.worker_cpu}, "
            f"kuberay.worker_gpus={k.worker_gpus}, but each replica asks "
            f"ray_num_cpus={s.ray_num_cpus:g}, ray_num_gpus={s.ray_num_gpus:g}"
        )
    least = k.min_workers if k.min_workers is not None else -(-s.ray_min_replicas // per_pod)
    most = k.max_workers if k.max_workers is not None else -(-s.ray_max_replicas // per_pod)
    if least > most:
        raise ConfigError(f"kuberay.min_workers ({least}) exceeds kuberay.max_workers ({most})")
    return per_pod, least, most


def _container(
    k: KubeRaySettings, name: str, cpu: str, memory: str, gpus: int = 0
) -> dict[str, Any]:
    amounts: dict[str, Any] = {"cpu": cpu, "memory": memory}
    if gpus:
        amounts[GPU] = gpus
    return {
        "name": name,
        "image": k.image,
        "imagePullPolicy": k.image_pull_policy,
        # Requests equal to limits: Ray reads its node's CPUs and GPUs from the limits.
        "resources": {"requests": dict(amounts), "limits": dict(amounts)},
    }


def ray_service(s: Settings, workers: tuple[int, int, int]) -> dict[str, Any]:
    k = s.kuberay
    per_pod, least, most = workers
    head = _container(k, "ray-head", k.head_cpu, k.head_memory)
    head["ports"] = [
        {"containerPort": GCS_PORT, "name": "gcs-server"},
        {"containerPort": 8265, "name": "dashboard"},
        {"containerPort": 10001, "name": "client"},
        {"containerPort": 8000, "name": "serve"},
    ]
    worker = _container(k, "ray-worker", k.worker_cpu, k.worker_memory, k.worker_gpus)
    worker_params: dict[str, str] = {}
    if s.ray_resources:  # the custom resources replicas ask for, as many as fit
        held = {name: amount * per_pod for name, amount in s.ray_resources.items()}
        # KubeRay puts it on `ray start`'s command line, read by a shell.
        worker_params["resources"] = f"'{json.dumps(held)}'"
    group = {
        "groupName": "gpu" if k.worker_gpus else "cpu",
        "replicas": least,
        "minReplicas": least,
        "maxReplicas": most,
        "rayStartParams": worker_params,
        "template": {"spec": {"containers": [worker]}},
    }
    cluster = {
        "rayVersion": k.ray_version,
        # Ray's autoscaler adds worker pods when Serve's asks for replicas.
        "enableInTreeAutoscaling": True,
        "headGroupSpec": {
            # No replica on the head: it holds the cluster's state.
            "rayStartParams": {"num-cpus": "0", "dashboard-host": "0.0.0.0"},
            "template": {"spec": {"containers": [head]}},
        },
        "workerGroupSpecs": [group],
    }
    spec = {
        "serveConfigV2": yaml.safe_dump(serve_config.config(s), sort_keys=False),
        "rayClusterConfig": cluster,
    }
    return _object(k, "ray.io/v1", "RayService", k.name, "ray", spec)


def hub_environment(s: Settings) -> dict[str, str]:
    """The hub pod's settings: the user's own (no secrets: those come from the Secret),
    over the Ray cluster the pod joined and the application KubeRay deployed."""
    carried = {k: v for k, v in changed(s).items() if k not in serve_config.MACHINE}
    # Several hub pods are one fleet: each refuses to start unless the Secret's
    # NEVE_DATABASE_URL is PostgreSQL, and shares its state there.
    fleet = {"NEVE_INSTANCES": str(s.kuberay.hub_replicas)} if s.kuberay.hub_replicas > 1 else {}
    return {
        **environment(carried),
        "NEVE_ENGINE": "ray",
        "NEVE_RAY_ADDRESS": "auto",
        "NEVE_RAY_DEPLOY": "false",
        "NEVE_DATA_DIR": DATA_PATH,
        **fleet,
    }


def hub_deployment(s: Settings) -> dict[str, Any]:
    k = s.kuberay

    def secret() -> list[dict[str, Any]]:  # one list each, or YAML writes an alias
        return [{"secretRef": {"name": k.secret, "optional": True}}]

    hub = _container(k, "hub", k.hub_cpu, k.hub_memory)
    join = (
        f"ray start --address={k.name}-head-svc:{GCS_PORT} --num-cpus=0 --num-gpus=0 "
        f"--disable-usage-stats && exec neve serve --host 0.0.0.0 --port {API_PORT}"
    )
    hub |= {
        "command": ["/bin/bash", "-c"],
        "args": [join],
        "env": [{"name": n, "value": v} for n, v in hub_environment(s).items()],
        "envFrom": secret(),
        "ports": [{"containerPort": API_PORT, "name": "api"}],
        "readinessProbe": {"httpGet": {"path": "/ready", "port": "api"}, "periodSeconds": 10},
        "livenessProbe": {"httpGet": {"path": "/health", "port": "api"}, "periodSeconds": 30},
    }
    ui = _container(k, "ui", "500m", "1Gi")
    ui |= {
        "args": [
            "ui",
            "--url",
            f"http://127.0.0.1:{API_PORT}",
            "--host",
            "0.0.0.0",
            "--port",
            str(UI_PORT),
        ],
        "envFrom": secret(),
        "ports": [{"containerPort": UI_PORT, "name": "ui"}],
        "readinessProbe": {"httpGet": {"path": "/_stcore/health", "port": "ui"}},
    }
    pod: dict[str, Any] = {
        "securityContext": {"fsGroup": _HUB_UID},  # the data volume writable by `neve`
        "containers": [hub, ui],
    }
    if k.data_volume_size:
        hub["volumeMounts"] = [{"name": "data", "mountPath": DATA_PATH}]
        pod["volumes"] = [
            {"name": "data", "persistentVolumeClaim": {"claimName": f"{k.name}-data"}}
        ]
    spec = {
        "replicas": k.hub_replicas,
        "selector": {"matchLabels": _labels(k, "hub")},
        "template": {"metadata": {"labels": _labels(k, "hub")}, "spec": pod},
    }
    return _object(k, "apps/v1", "Deployment", f"{k.name}-hub", "hub", spec)


def hub_service(k: KubeRaySettings) -> dict[str, Any]:
    ports = [
        {"name": "api", "port": API_PORT, "targetPort": "api"},
        {"name": "ui", "port": UI_PORT, "targetPort": "ui"},
    ]
    spec = {"type": k.service_type, "selector": _labels(k, "hub"), "ports": ports}
    return _object(k, "v1", "Service", f"{k.name}-hub", "hub", spec)


def data_claim(k: KubeRaySettings) -> dict[str, Any]:
    spec = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": k.data_volume_size}},
    }
    return _object(k, "v1", "PersistentVolumeClaim", f"{k.name}-data", "hub", spec)
