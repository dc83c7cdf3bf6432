"""Reaching the Ray cluster and reading what runs on it: the application's replicas, each
with its node, state and ongoing requests, and the autoscaler's bounds (`neve ray status`,
/ready and /metrics read the same)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import ray
from ray import serve
from ray.serve.context import _get_global_client
from ray.serve.exceptions import RayServeException

from neve.config import Settings
from neve.errors import Unavailable
from neve.ray.serve_config import DEPLOYMENT


class ClusterUnavailable(Unavailable):
    code = "ray_unavailable"


def join(settings: Settings) -> str:
    """Join the cluster the settings name, or start a private one for `local`. Returns the
    Ray dashboard's URL ("" when the cluster runs none)."""
    quiet = settings.log_level in ("warning", "error")
    if quiet:  # Ray and Serve log their starts and connections, and advice, on the driver
        quieten()
    if not ray.is_initialized():
        try:
            ray.init(
                # Ray reads "local" as a new private instance even where another runs (an
                # empty address would join that one), and "auto" as the running cluster.
                address=settings.ray_address,
                namespace="neve",
                logging_level=logging.ERROR if quiet else logging.INFO,
                log_to_driver=not quiet,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ClusterUnavailable(
                f"cannot reach the Ray cluster at {settings.ray_address!r} "
                f"(setting ray_address): {exc}"
            ) from None
    return dashboard_url()


def quieten() -> None:
    """Ray's and Serve's own lines to the hub's stderr: errors only (Serve sets its
    logger's level when it starts, so this runs again after serve.start)."""
    for name in ("ray", "ray.serve"):
        logging.getLogger(name).setLevel(logging.ERROR)


def dashboard_url() -> str:
    from ray._private.worker import get_dashboard_url  # what ray.init's context reports

    url = get_dashboard_url() or ""
    return f"http://{url}" if url and "://" not in url else url


def nodes() -> list[dict[str, Any]]:
    """Every node the cluster knows, dead ones too, as `neve deploy spcs` shows them."""
    return [
        {"node_id": n["NodeID"], "address": n["NodeManagerAddress"], "alive": n["Alive"],
         "head": "node:__internal_head__" in n["Resources"], "resources": n["Resources"]}
        for n in ray.nodes()
    ]  # fmt: skip


def gpus_per_node() -> list[int]:
    """GPUs of each node alive (as each node declared them to Ray)."""
    return [int(n["Resources"].get("GPU", 0)) for n in ray.nodes() if n["Alive"]]


@dataclass(frozen=True)
class Replica:
    id: str
    state: str
    node_ip: str
    node_id: str
    actor: str  # the replica's actor's name (namespace "serve"), to reach or kill it
    ongoing: int | None  # None when the replica did not answer in time


@dataclass(frozen=True)
class AppView:
    name: str
    status: str  # Serve's: DEPLOYING, RUNNING, UNHEALTHY, ... or NOT_DEPLOYED
    message: str = ""
    replicas: list[Replica] = field(default_factory=list)
    bounds: dict[str, Any] = field(default_factory=dict)  # min, max, target_ongoing_requests
    states: dict[str, int] = field(default_factory=dict)  # replicas by state


def states(app_name: str) -> AppView:
    """The application's status and its replicas' count by state, without a row for each
    replica: what the hub follows every `ray_probe_interval` (cheap for the controller)."""
    try:
        app = serve.status().applications.get(app_name)
    except RayServeException:  # Serve does not run on this cluster
        app = None
    if app is None:
        return AppView(app_name, "NOT_DEPLOYED")
    deployment = app.deployments.get(DEPLOYMENT)
    counts = deployment.replica_states if deployment else {}
    return AppView(app_name, _text(app.status), app.message,
                   states={_text(k): v for k, v in counts.items()})  # fmt: skip


def _text(value: Any) -> str:
    """Serve's states are str enums; on the wire and in metrics, their plain names."""
    return str(getattr(value, "value", value))


def describe(app_name: str, *, ongoing: bool = True, timeout: float = 2.0) -> AppView:
    """The application as Serve's controller sees it now; with `ongoing`, each running
    replica is asked how many requests it holds."""
    try:
        client = _get_global_client()
    except RayServeException:  # Serve does not run on this cluster
        client = None
    if client is None:
        return AppView(app_name, "NOT_DEPLOYED")
    details = client.get_serve_details()
    app = (details.get("applications") or {}).get(app_name)
    if app is None:
        return AppView(app_name, "NOT_DEPLOYED")
    deployment = app["deployments"].get(DEPLOYMENT, {})
    autoscaling = deployment.get("deployment_config", {}).get("autoscaling_config") or {}
    bounds = {k: autoscaling.get(k) for k in ("min_replicas", "max_replicas",
                                               "target_ongoing_requests")}  # fmt: skip
    rows = deployment.get("replicas", [])
    ongoing_of = _ongoing(rows, timeout) if ongoing else {}
    replicas = [
        Replica(
            id=r["replica_id"],
            state=_text(r["state"]),
            node_ip=r.get("node_ip") or "",
            node_id=r.get("node_id") or "",
            actor=r.get("actor_name") or "",
            ongoing=ongoing_of.get(r["replica_id"]),
        )
        for r in rows
    ]
    counts: dict[str, int] = {}
    for r in replicas:
        counts[r.state] = counts.get(r.state, 0) + 1
    return AppView(app_name, _text(app["status"]), app.get("message", ""), replicas, bounds,
                   counts)  # fmt: skip


def _ongoing(rows: list[dict[str, Any]], timeout: float) -> dict[str, int]:
    """Ask each running replica's actor for its ongoing requests (a method Serve's replica
    actors answer on their own thread, so a busy replica still answers)."""
    asked: dict[str, ray.ObjectRef[int]] = {}
    for r in rows:
        if r["state"] == "RUNNING" and r.get("actor_name"):
            try:
                actor = ray.get_actor(r["actor_name"], namespace="serve")
            except ValueError:  # gone since the controller answered
                continue
            asked[r["replica_id"]] = actor.get_num_ongoing_requests.remote()
    counts: dict[str, int] = {}
    for replica_id, ref in asked.items():
        try:
            counts[replica_id] = int(ray.get(ref, timeout=timeout))
        except (ray.exceptions.RayError, TimeoutError):
            continue
    return counts


def remove(app_name: str) -> None:
    serve.delete(app_name)
