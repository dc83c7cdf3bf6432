"""A typed model of Snowflake's service specification (Snowpark Container Services), with
the rules Snowflake documents, so a spec is refused here, naming its field, rather than
by CREATE SERVICE minutes into a deployment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from neve.errors import ConfigError

# Containers, endpoints and volumes: DNS labels of at most 63 characters.
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$")
GPU = "nvidia.com/gpu"


class SpecError(ConfigError):
    """A specification Snowflake would refuse; the message names the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


def _name(value: str) -> str:
    if not _NAME.match(value):
        raise ValueError(
            f"{value!r}: names are at most 63 lowercase letters, digits and dashes, "
            "starting and ending with a letter or digit"
        )
    return value


class ReadinessProbe(_Strict):
    port: int = Field(ge=1, le=65535)
    path: str = Field(pattern=r"^/")


class VolumeMount(_Strict):
    name: str
    mount_path: str = Field(alias="mountPath", pattern=r"^/")


class Quantities(_Strict):
    memory: str | None = Field(None, pattern=_QUANTITY.pattern)
    cpu: float | None = Field(None, gt=0)
    gpu: int | None = Field(None, alias=GPU, ge=0)


class Resources(_Strict):
    requests: Quantities | None = None
    limits: Quantities | None = None


class SnowflakeSecret(_Strict):
    object_name: str | None = Field(None, alias="objectName")
    object_reference: str | None = Field(None, alias="objectReference")


class Secret(_Strict):
    snowflake_secret: SnowflakeSecret | str = Field(alias="snowflakeSecret")
    env_var_name: str | None = Field(None, alias="envVarName")
    directory_path: str | None = Field(None, alias="directoryPath")
    secret_key_ref: Literal["username", "password", "secret_string"] | None = Field(
        None, alias="secretKeyRef"
    )


class Container(_Strict):
    name: str
    image: str = Field(pattern=r"^/[^/]+/[^/]+/[^/]+/[^/:]+:[^/:]+$")
    command: list[str] | None = None
    args: list[str] | None = None
    env: dict[str, str] | None = None
    readiness_probe: ReadinessProbe | None = Field(None, alias="readinessProbe")
    volume_mounts: list[VolumeMount] = Field(default_factory=list, alias="volumeMounts")
    resources: Resources | None = None
    secrets: list[Secret] = Field(default_factory=list)

    _named = field_validator("name")(_name)


class Endpoint(_Strict):
    """A port, or a range of them (`portRange: "10002-10200"`); public endpoints speak
    HTTP or HTTPS, never plain TCP."""

    name: str
    port: int | None = Field(None, ge=1, le=65535)
    port_range: str | None = Field(None, alias="portRange", pattern=r"^\d{1,5}-\d{1,5}$")
    public: bool = False
    protocol: Literal["HTTP", "HTTPS", "TCP"] = "HTTP"

    _named = field_validator("name")(_name)

    @model_validator(mode="after")
    def _one_port(self) -> Endpoint:
        if (self.port is None) == (self.port_range is None):
            raise ValueError("an endpoint has a port or a portRange, not both or neither")
        if self.port_range is not None:
            low, high = (int(p) for p in self.port_range.split("-"))
            if not 1 <= low <= high <= 65535:
                raise ValueError(f"portRange {self.port_range!r}: from 1 to 65535, low to high")
            if self.protocol != "TCP":
                raise ValueError("a portRange endpoint is TCP")
        if self.public and self.protocol == "TCP":
            raise ValueError("a public endpoint is HTTP or HTTPS")
        return self

    @property
    def ports(self) -> range:
        if self.port_range is None:
            return range(self.port or 0, (self.port or 0) + 1)
        low, high = (int(p) for p in self.port_range.split("-"))
        return range(low, high + 1)


class StageConfig(_Strict):
    name: str = Field(pattern=r"^@")


class BlockConfig(_Strict):
    initial_contents: dict[str, str] | None = Field(None, alias="initialContents")
    iops: int | None = Field(None, ge=1)
    throughput: int | None = Field(None, ge=1)


class Volume(_Strict):
    name: str
    source: str
    size: str | None = Field(None, pattern=_QUANTITY.pattern)
    stage_config: StageConfig | None = Field(None, alias="stageConfig")
    block_config: BlockConfig | None = Field(None, alias="blockConfig")
    uid: int | None = None
    gid: int | None = None

    _named = field_validator("name")(_name)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if value.startswith("@"):
            raise ValueError(
                f"{value!r} is the deprecated stage volume form (refused for new services "
                "from the 2026_08 bundle): use source: stage with stageConfig.name"
            )
        if value not in ("local", "memory", "block", "stage"):
            raise ValueError(f"{value!r}: source is local, memory, block or stage")
        return value


class EventTableConfig(_Strict):
    log_level: Literal["INFO", "ERROR", "NONE"] = Field(alias="logLevel")


class LogExporters(_Strict):
    event_table_config: EventTableConfig = Field(alias="eventTableConfig")


class Spec(_Strict):
    containers: list[Container] = Field(min_length=1)
    endpoints: list[Endpoint] = Field(default_factory=list)
    volumes: list[Volume] = Field(default_factory=list)
    log_exporters: LogExporters | None = Field(None, alias="logExporters")


class SecurityContext(_Strict):
    execute_as_caller: bool = Field(alias="executeAsCaller")


class Capabilities(_Strict):
    security_context: SecurityContext = Field(alias="securityContext")


class ServiceRole(_Strict):
    name: str
    endpoints: list[str] = Field(min_length=1)


class ServiceSpec(_Strict):
    spec: Spec
    capabilities: Capabilities | None = None
    service_roles: list[ServiceRole] = Field(default_factory=list, alias="serviceRoles")


def check(
    document: Mapping[str, Any], *, gpus_per_node: int, listening: Mapping[str, list[int]]
) -> ServiceSpec:
    """`document` as Snowflake would take it on a pool whose nodes have `gpus_per_node`
    GPUs, with `listening`: the ports each container's program opens (the spec does not
    say, so the renderer does). Raises SpecError naming the field."""
    try:
        parsed = ServiceSpec.model_validate(document)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _path(err["loc"])
        raise SpecError(f"{field}: {err['msg'].removeprefix('Value error, ')}") from None
    spec = parsed.spec
    _unique("spec.containers", [c.name for c in spec.containers])
    _unique("spec.endpoints", [e.name for e in spec.endpoints])
    _unique("spec.volumes", [v.name for v in spec.volumes])
    volumes = {v.name for v in spec.volumes}
    for v_at, volume in enumerate(spec.volumes):
        where = f"spec.volumes[{v_at}]"
        if volume.source == "stage" and volume.stage_config is None:
            raise SpecError(f"{where}.stageConfig: a stage volume names its stage here")
        if volume.source in ("memory", "block") and volume.size is None:
            raise SpecError(f"{where}.size: a {volume.source} volume needs a size")
    opened: dict[int, str] = {}
    for c_at, container in enumerate(spec.containers):
        where = f"spec.containers[{c_at}]"
        ports = listening.get(container.name, [])
        for port in ports:
            opened[port] = container.name
        for m_at, mount in enumerate(container.volume_mounts):
            if mount.name not in volumes:
                raise SpecError(f"{where}.volumeMounts[{m_at}].name: no volume {mount.name!r}")
        probe = container.readiness_probe
        if probe is not None and probe.port not in ports:
            raise SpecError(
                f"{where}.readinessProbe.port: {container.name} does not listen on {probe.port}"
            )
        for kind in ("requests", "limits"):
            quantities = getattr(container.resources, kind, None) if container.resources else None
            gpu = quantities.gpu if quantities else None
            if gpu and not gpus_per_node:
                raise SpecError(
                    f"{where}.resources.{kind}.{GPU}: the compute pool's nodes have no GPU"
                )
            if gpu and gpu > gpus_per_node:
                raise SpecError(
                    f"{where}.resources.{kind}.{GPU}: {gpu} asked, a node has {gpus_per_node}"
                )
    if len(spec.endpoints) > 100:
        raise SpecError("spec.endpoints: at most 100")
    for e_at, endpoint in enumerate(spec.endpoints):
        if endpoint.port is not None and endpoint.port not in opened:
            raise SpecError(f"spec.endpoints[{e_at}].port: no container listens on {endpoint.port}")
    endpoints = {e.name for e in spec.endpoints}
    for r_at, role in enumerate(parsed.service_roles):
        for name in role.endpoints:
            if name not in endpoints:
                raise SpecError(f"serviceRoles[{r_at}].endpoints: no endpoint {name!r}")
    return parsed


def _unique(field: str, names: list[str]) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise SpecError(f"{field}: the name {name!r} is used twice")
        seen.add(name)


def _path(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
