"""What `neve deploy spcs` deploys: the `spcs:` section of neve.yaml. The hub's own
settings (model, engine, limits) travel into the containers as NEVE_* variables."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Endpoint = Literal["api", "ui"]

# GPUs per node of each instance family (Snowflake's compute pool families, 2026-11).
GPU_FAMILIES = {
    "GPU_NV_XS": 1,
    "GPU_NV_S": 1,
    "GPU_NV_M": 4,
    "GPU_NV_L": 8,
    "GPU_NV_2M": 2,
    "GPU_NV_3M": 4,
    "GPU_NV_SM": 1,
    "GPU_GCP_NV_L4_1_24G": 1,
    "GPU_GCP_NV_L4_4_24G": 4,
    "GPU_GCP_NV_A100_8_40G": 8,
}
CPU_FAMILIES = (
    "CPU_X64_XS",
    "CPU_X64_S",
    "CPU_X64_M",
    "CPU_X64_SL",
    "CPU_X64_L",
    "HIGHMEM_X64_S",
    "HIGHMEM_X64_M",
    "HIGHMEM_X64_SL",
    "HIGHMEM_X64_L",
)
_OBJECT = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]{0,254}$")


class RayPool(BaseModel):
    """A compute pool of Ray worker nodes: one worker service, an instance per node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        "GPU", pattern=r"^[A-Za-z][A-Za-z0-9_]{0,30}$",
        description="its pool is <compute_pool>_<name>, its service <service>_RAY_<name>",
    )  # fmt: skip
    instance_family: str = Field("GPU_NV_M", description="its nodes (GPU or CPU families)")
    min_nodes: int = Field(1, ge=1, description="nodes (Ray workers) kept")
    max_nodes: int = Field(1, ge=1, description="nodes the pool may grow to")

    @field_validator("instance_family")
    @classmethod
    def _family(cls, value: str) -> str:
        return _known_family(value)

    @model_validator(mode="after")
    def _bounds(self) -> RayPool:
        if self.min_nodes > self.max_nodes:
            raise ValueError(f"spcs.ray.workers {self.name}: min_nodes exceeds max_nodes")
        return self

    @property
    def gpus(self) -> int:
        return GPU_FAMILIES.get(self.instance_family, 0)


class SpcsRay(BaseModel):
    """The Ray cluster `neve deploy spcs` makes for engine ray: a head service (GCS, the
    dashboard, Prometheus and Grafana, and the hub in front) in spcs.compute_pool, and a
    worker service per pool below, joining the head by its service DNS name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    workers: list[RayPool] = Field(
        default_factory=lambda: [RayPool()], min_length=1, description="worker pools"
    )
    public: list[Literal["dashboard", "grafana"]] = Field(
        default_factory=list, description="which of the Ray dashboard and Grafana are public"
    )
    dns: Literal["current", "legacy"] = Field(
        "current",
        description="how workers name the head: current (<service>.<id>.svc.spcs.internal, "
        "the id read with SYSTEM$GET_SERVICE_DNS_DOMAIN) or legacy "
        "(<service>.<schema>.<db>.snowflakecomputing.internal)",
    )
    prometheus_image: str = Field(
        "prometheus:v3.5.0", description="Prometheus's image, pushed to the repository"
    )
    grafana_image: str = Field(
        "grafana:12.1.0", description="Grafana's image, pushed to the repository"
    )
    join_timeout: float = Field(
        1800, gt=0, description="seconds `up` waits for every worker node to join Ray"
    )


def _known_family(value: str) -> str:
    value = value.upper()
    if value not in GPU_FAMILIES and value not in CPU_FAMILIES:
        raise ValueError(
            f"unknown instance family; use one of {', '.join([*CPU_FAMILIES, *GPU_FAMILIES])}"
        )
    return value


class SpcsSettings(BaseModel):
    """Where and how neve runs in Snowpark Container Services."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    connection: str | None = Field(
        None,
        description="connection name in ~/.snowflake/connections.toml (default: the "
        "SNOWFLAKE_* environment, else the file's default connection)",
    )
    database: str = Field("NEVE_DB", description="database holding the service's objects")
    schema_name: str = Field("PUBLIC", alias="schema", description="its schema")
    role: str = Field("NEVE_ADMIN", description="role that deploys (owns the objects)")
    user_role: str | None = Field(
        None, description="role granted the SQL functions and the endpoints (users' role)"
    )
    warehouse: str = Field("NEVE_WH", description="warehouse for the setup statements")
    compute_pool: str = Field("NEVE_POOL", description="compute pool the services run in")
    instance_family: str = Field(
        "CPU_X64_S", description="its nodes: CPU_X64_S, GPU_NV_S (1 A10G), GPU_NV_M (4) ..."
    )
    min_nodes: int = Field(1, ge=1, description="nodes the pool keeps")
    max_nodes: int = Field(1, ge=1, description="nodes the pool may grow to")
    auto_suspend_secs: int = Field(3600, ge=0, description="idle seconds before it suspends")
    image_repository: str = Field("NEVE_IMAGES", description="image repository's name")
    image: str = Field("neve:0.1.0", description="neve's image and tag pushed to it")
    vllm_image: str = Field(
        "vllm-openai:v0.11.0",
        description="vLLM's own image pushed to the repository, run beside the hub on GPU pools",
    )
    service: str = Field("NEVE", description="the hub's service (API and relay)")
    ui_service: str = Field("NEVE_UI", description="the web UI's service")
    min_instances: int = Field(1, ge=1, description="hub instances kept")
    max_instances: int = Field(1, ge=1, description="hub instances at most")
    public_endpoints: list[Endpoint] = Field(
        default_factory=lambda: list[Endpoint](["api", "ui"]),
        description="endpoints reachable from outside Snowflake (the relay never is)",
    )
    execute_as_caller: bool = Field(
        False, description="caller's rights: the service may act as the calling user"
    )
    api_key_secret: str | None = Field(
        None, description="a generic-string SECRET holding the hub's API key"
    )
    hf_token_secret: str | None = Field(
        None, description="a generic-string SECRET holding a Hugging Face token"
    )
    database_url_secret: str | None = Field(
        None,
        description="a generic-string SECRET holding a PostgreSQL database_url every instance "
        "shares (needed for max_instances above 1)",
    )
    external_access_integrations: list[str] = Field(
        default_factory=list,
        description="integrations the hub's service may reach out through (e.g. to its database)",
    )
    models_stage: str = Field(
        "NEVE_MODELS", description="stage mounted as the model cache (/models)"
    )
    data_volume_size: str = Field(
        "20Gi", pattern=r"^\d+Gi$", description="block volume for the data directory (/data)"
    )
    data_snapshot: str | None = Field(
        None, description="snapshot the data volume starts from (one `down` made)"
    )
    cpu: float | None = Field(None, gt=0, description="CPUs the hub container requests")
    memory: str | None = Field(
        None, pattern=r"^\d+(Mi|Gi)$", description="memory it requests, e.g. 6Gi"
    )
    feedback_table: str = Field(
        "NEVE_FEEDBACK", description="table the hub copies feedback into (ST_FEEDBACK's columns)"
    )
    request_log_table: str = Field(
        "NEVE_REQUEST_LOG", description="table the hub copies its request log into"
    )
    log_level: Literal["INFO", "ERROR", "NONE"] = Field(
        "INFO", description="container logs kept in the event table"
    )
    function_prefix: str = Field("NEVE", description="SQL functions are <prefix>_COMPLETE ...")
    max_batch_rows: int = Field(256, ge=1, description="rows Snowflake sends per batch")
    max_batch_retries: int = Field(3, ge=0, description="retries of a failed batch")
    on_batch_failure: Literal["ABORT", "RETURN_NULL"] = Field(
        "ABORT", description="what a batch that still fails does to the query"
    )
    batch_timeout_secs: int = Field(600, ge=1, description="seconds one batch may take")
    ray: SpcsRay = Field(
        default_factory=SpcsRay, description="the Ray cluster deployed for engine ray"
    )
    wait_timeout: float = Field(
        1800, gt=0, description="seconds `up` waits for the service to be READY"
    )
    status_interval: float = Field(5, gt=0, description="seconds between its status reads")

    @field_validator(
        "database", "schema_name", "role", "user_role", "warehouse", "compute_pool",
        "image_repository", "service", "ui_service", "api_key_secret", "hf_token_secret",
        "models_stage", "data_snapshot", "function_prefix", "feedback_table",
        "request_log_table",
    )  # fmt: skip
    @classmethod
    def _object_name(cls, value: str | None) -> str | None:
        if value is not None and not _OBJECT.match(value):
            raise ValueError(
                "must be a Snowflake identifier (letters, digits, _ and $, not first a digit)"
            )
        return value

    @field_validator("instance_family")
    @classmethod
    def _family(cls, value: str) -> str:
        return _known_family(value)

    @model_validator(mode="after")
    def _bounds(self) -> SpcsSettings:
        for low, high in (("min_nodes", "max_nodes"), ("min_instances", "max_instances")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"spcs.{low} must not exceed spcs.{high}")
        if self.gpus and self.max_instances > self.max_nodes:
            # Each instance asks for all the GPUs of a node.
            raise ValueError("spcs.max_instances must not exceed spcs.max_nodes on a GPU pool")
        return self

    @property
    def gpus(self) -> int:
        """GPUs on each node of the pool (0 on CPU families)."""
        return GPU_FAMILIES.get(self.instance_family, 0)

    @property
    def schema_path(self) -> str:
        return f"{self.database}.{self.schema_name}"

    def qualified(self, name: str) -> str:
        return f"{self.schema_path}.{name}"
