"""What `neve deploy kuberay` renders: the `kuberay:` section of neve.yaml. The Serve
application's own knobs (replicas, autoscaling, each replica's CPUs and GPUs) are the
hub's ray_* settings, the same whether the hub deploys it or KubeRay does."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

_NAME = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"  # KubeRay adds suffixes to a RayService's name
_QUANTITY = r"^\d+(\.\d+)?(m|Mi|Gi|Ti)?$"
_CPUS = r"^\d+(\.\d+)?m?$"  # cores, or millicores (500m)


class KubeRaySettings(BaseModel):
    """Where and how neve runs on Kubernetes with KubeRay."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "neve", pattern=_NAME, description="the RayService (and the hub's Deployment, Service)"
    )
    namespace: str | None = Field(None, description="Kubernetes namespace (default: kubectl's)")
    image: str = Field(
        "neve:ray", description="image of every pod: neve with neve[ray] (make image EXTRAS=ray)"
    )
    ray_version: str = Field(
        "2.60.0",
        pattern=r"^\d+\.\d+\.\d+$",
        description="the Ray in that image (KubeRay's rayVersion)",
    )
    image_pull_policy: Literal["IfNotPresent", "Always", "Never"] = Field(
        "IfNotPresent", description="when the kubelet pulls it"
    )
    head_cpu: str = Field("2", pattern=_CPUS, description="CPUs of the Ray head (no replica)")
    head_memory: str = Field("8Gi", pattern=_QUANTITY, description="memory of the Ray head")
    worker_cpu: str = Field("4", pattern=_CPUS, description="CPUs of each Ray worker pod")
    worker_memory: str = Field("16Gi", pattern=_QUANTITY, description="memory of each worker")
    worker_gpus: int = Field(
        0, ge=0, description="GPUs of each worker (nvidia.com/gpu); 0: a CPU worker group"
    )
    min_workers: int | None = Field(
        None, ge=0, description="worker pods kept (default: room for ray_min_replicas)"
    )
    max_workers: int | None = Field(
        None, ge=1, description="worker pods Ray's autoscaler may add (default: room for "
        "ray_max_replicas)",
    )  # fmt: skip
    hub_replicas: int = Field(1, ge=1, description="hub pods in front (API, relay, UI)")
    hub_cpu: str = Field("2", pattern=_CPUS, description="CPUs of each hub pod")
    hub_memory: str = Field("4Gi", pattern=_QUANTITY, description="memory of each hub pod")
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = Field(
        "ClusterIP", description="how the hub's Service is exposed"
    )
    secret: str = Field(
        "neve-secrets",
        description="Kubernetes Secret whose keys become the hub's environment "
        "(NEVE_API_KEY, NEVE_DATABASE_URL, HF_TOKEN); optional",
    )
    data_volume_size: str | None = Field(
        "10Gi",
        pattern=r"^\d+(Mi|Gi|Ti)$",
        description="PersistentVolumeClaim for the hub's data directory; empty: none (with "
        "hub_replicas > 1, set database_url to PostgreSQL in the secret)",
    )

    @field_validator("data_volume_size", mode="before")
    @classmethod
    def _none_when_empty(cls, value: object) -> object:
        return None if value == "" else value
