"""The model's replicas as Ray Serve's configuration describes them: one application whose
`Engine` deployment has the options below, built by `neve.ray.replica:build` from the
settings it is given. The hub deploys exactly this (replica.application) unless KubeRay
does, from the serveConfigV2 of a RayService (kuberay.py). Imports no Ray, so rendering a
manifest needs none."""

from __future__ import annotations

from typing import Any

from neve.config import Settings, changed
from neve.ray.layout import placement

DEPLOYMENT = "Engine"
BUILDER = "neve.ray.replica:build"
# Settings of the machine they were written on, which a deployment's pods set their own.
MACHINE = frozenset({"host", "port", "data_dir", "models_dir", "ray_address"})
# ... and those that only a hub reads, which mean nothing to a replica.
_HUB_ONLY = MACHINE | {"ui_port", "relay_port", "engine", "ray_deploy"}


def deployment_options(s: Settings) -> dict[str, Any]:
    """The deployment's options, by Serve's names (serve.deployment's arguments and the
    config's `deployments` entries are the same)."""
    spread = placement(s)
    # A spread replica's GPUs are its group's; its actor takes the first bundle, CPU only.
    gpus = 0 if spread else s.ray_num_gpus
    actor: dict[str, Any] = {"num_cpus": s.ray_num_cpus, "num_gpus": gpus}
    if s.ray_resources:
        actor["resources"] = dict(s.ray_resources)
    return {
        **spread,
        "ray_actor_options": actor,
        "max_ongoing_requests": s.ray_max_ongoing_requests,
        "max_queued_requests": s.ray_max_queued_requests,
        "autoscaling_config": {
            "min_replicas": s.ray_min_replicas,
            "initial_replicas": s.ray_min_replicas,
            "max_replicas": s.ray_max_replicas,
            "target_ongoing_requests": s.ray_target_ongoing_requests,
            "upscale_delay_s": s.ray_upscale_delay,
            "downscale_delay_s": s.ray_downscale_delay,
            "look_back_period_s": s.ray_look_back_period,
        },
        "graceful_shutdown_timeout_s": s.ray_graceful_shutdown_timeout,
        "health_check_period_s": s.ray_health_check_period,
    }


def replica_settings(s: Settings) -> dict[str, Any]:
    """What a replica is built from: the settings that differ from the defaults, but the
    hub's own (a replica also reads NEVE_* from its node's environment, below these)."""
    return {k: v for k, v in changed(s).items() if k not in _HUB_ONLY}


def application(s: Settings) -> dict[str, Any]:
    """The application's entry in a Serve config (`applications:`)."""
    return {
        "name": s.ray_app_name,
        "import_path": BUILDER,
        "route_prefix": None,  # no HTTP route: the hub reaches the replicas by handle
        "args": {"settings": replica_settings(s)},
        "deployments": [{"name": DEPLOYMENT, **deployment_options(s)}],
    }


def config(s: Settings) -> dict[str, Any]:
    """A whole Serve config: what `serve deploy` and KubeRay's serveConfigV2 take."""
    # Serve's HTTP proxy carries none of neve's traffic; KubeRay still wants one, on
    # the head only.
    return {"proxy_location": "HeadOnly", "applications": [application(s)]}
