"""`neve deploy spcs`: the service specifications and the SQL that deploy neve into
Snowpark Container Services, as data. Each action is a list of steps in the order they
run; `dry-run` prints them, `neve.snowflake.session` runs them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import yaml

from neve.config import Settings, changed, environment
from neve.engine import vllm
from neve.errors import ConfigError
from neve.ray import layout
from neve.snowflake import ray_cluster
from neve.snowflake.settings import RayPool, SpcsSettings
from neve.snowflake.spec import GPU, check
from neve.snowflake.sql import Function, functions
from neve.snowflake.stage import STAGES_PATH, StageRef
from neve.snowflake.tables import FEEDBACK, REQUEST_LOG, Table

API_PORT = 8000
RELAY_PORT = 8001
VLLM_PORT = 8002
UI_PORT = 8501
MODELS_PATH = "/models"
DATA_PATH = "/data"

# Hub settings that travel into the container when they are set (the rest keep the
# image's defaults): the model and how it is served.
_HUB_KEYS = (
    "model", "model_file", "served_model_name", "max_model_len", "max_num_seqs",
    "kv_cache_tokens", "max_queue", "embedding_model", "gpu_memory_utilization", "dtype",
    "vllm_extra_args", "reasoning_parser", "default_rpm", "default_tpm", "stream_keepalive",
    "rag_stages", "rag_stage_refresh",
)  # fmt: skip

Action = Literal["up", "status", "endpoints", "logs", "down", "drop-all"]
ACTIONS: tuple[Action, ...] = ("up", "status", "endpoints", "logs", "down", "drop-all")


@dataclass(frozen=True)
class Statement:
    """SQL run as it is; `shows` marks one whose rows the user wants to see, `needs` a
    service without which it is skipped."""

    sql: str
    shows: bool = False
    needs: str | None = None


@dataclass(frozen=True)
class Service:
    """A service created, or, where it already exists, given the new specification."""

    name: str
    pool: str
    spec: str
    min_instances: int
    max_instances: int
    external_access: tuple[str, ...] = ()
    warehouse: str | None = None  # for the statements the service itself runs

    @property
    def create(self) -> str:
        reaches = (
            f"\n  EXTERNAL_ACCESS_INTEGRATIONS = ({', '.join(self.external_access)})"
            if self.external_access
            else ""
        )
        warehouse = f"\n  QUERY_WAREHOUSE = {self.warehouse}" if self.warehouse else ""
        return (
            f"CREATE SERVICE IF NOT EXISTS {self.name}\n  IN COMPUTE POOL {self.pool}\n"
            f"  FROM SPECIFICATION $$\n{self.spec}$$\n"
            f"  MIN_INSTANCES = {self.min_instances}\n  MAX_INSTANCES = {self.max_instances}"
            + reaches
            + warehouse
        )

    @property
    def alter(self) -> list[str]:
        return [
            f"ALTER SERVICE {self.name} FROM SPECIFICATION $$\n{self.spec}$$",
            f"ALTER SERVICE {self.name} SET MIN_INSTANCES = {self.min_instances} "
            f"MAX_INSTANCES = {self.max_instances}",
        ]

    @property
    def exists(self) -> str:
        return exists_sql(self.name)


def exists_sql(service: str) -> str:
    """A row where `service` (database.schema.name) exists, none where it does not."""
    database, schema, name = service.split(".")
    return f"SHOW SERVICES LIKE '{name}' IN SCHEMA {database}.{schema}"


@dataclass(frozen=True)
class Wait:
    """Poll SYSTEM$GET_SERVICE_STATUS until every instance is READY."""

    service: str
    timeout: float
    interval: float

    @property
    def sql(self) -> str:
        return status_sql(self.service)


def status_sql(service: str) -> str:
    """Each instance of `service` with its status, one JSON row."""
    return f"SELECT SYSTEM$GET_SERVICE_STATUS('{service}')"


@dataclass(frozen=True)
class Lookup:
    """A value read from the account that later steps' SQL names as ${key}."""

    key: str
    sql: str


DNS_KEY = "SPCS_DNS_DOMAIN"  # ray_cluster.DNS_DOMAIN's key


@dataclass(frozen=True)
class NodesWait:
    """Poll the hub's <prefix>_RAY_NODES() until `nodes` Ray nodes with GPUs or CPUs for
    replicas (every node but the head) are alive."""

    sql: str
    nodes: int
    timeout: float
    interval: float


Step = Statement | Service | Wait | Lookup | NodesWait


# --- the specifications ------------------------------------------------------------------


def dns_name(spcs: SpcsSettings, service: str) -> str:
    """A service's name inside Snowflake's network."""
    parts = (service, spcs.schema_name, spcs.database)
    return ".".join(p.lower().replace("_", "-") for p in parts) + ".snowflakecomputing.internal"


def image_path(spcs: SpcsSettings, image: str | None = None) -> str:
    repository = f"/{spcs.database}/{spcs.schema_name}/{spcs.image_repository}"
    return f"{repository}/{image or spcs.image}".lower()


def hub_spec(spcs: SpcsSettings, hub: Settings) -> dict[str, Any]:
    """The hub's service: the API (public where asked) and the relay (private, for the
    SQL functions), the model cache on a stage, the data directory on a block volume. On
    a GPU pool, vLLM's own image runs beside the hub, which is its gateway (engine
    openai): the hub's image stays the CPU one built and tested here.

    Each instance has a block volume of its own, so several instances share their state
    through PostgreSQL (database_url_secret) or are refused."""
    if spcs.max_instances > 1 and not spcs.database_url_secret:
        raise ConfigError(
            f"spcs.max_instances ({spcs.max_instances}): each instance has its own block "
            "volume, so keys, conversations, feedback and documents would depend on the "
            "instance the load balancer picks; set spcs.database_url_secret to a secret "
            "holding a PostgreSQL database_url every instance reaches (and "
            "spcs.external_access_integrations to reach it), or spcs.max_instances=1"
        )
    env = {
        "NEVE_ENGINE": "openai" if spcs.gpus else "llamacpp",
        "NEVE_DATA_DIR": DATA_PATH,
        "NEVE_MODELS_DIR": MODELS_PATH,
        "NEVE_RELAY_PORT": str(RELAY_PORT),
        # Ingress authenticates users and names them in Sf-Context-Current-User.
        "NEVE_TRUST_PROXY_IDENTITY": "true",
        "NEVE_LOG_LEVEL": "info",
    }
    env |= environment({k: v for k, v in changed(hub).items() if k in _HUB_KEYS})
    if spcs.max_instances > 1:
        env["NEVE_INSTANCES"] = str(spcs.max_instances)
    if hub.engine == "ray":
        env |= _ray_replicas(spcs, hub)
    elif spcs.gpus:  # containers of a service share localhost
        env["NEVE_UPSTREAM_URL"] = f"http://localhost:{VLLM_PORT}/v1"
    resources: dict[str, Any] = {}
    requests: dict[str, Any] = {}
    if spcs.cpu:
        requests["cpu"] = spcs.cpu
    if spcs.memory:
        requests["memory"] = spcs.memory
    if requests:
        resources["requests"] = requests
    data: dict[str, Any] = {"name": "data", "source": "block", "size": spcs.data_volume_size}
    if spcs.data_snapshot:
        data["blockConfig"] = {
            "initialContents": {"fromSnapshot": spcs.qualified(spcs.data_snapshot)}
        }
    # Each of rag_stages mounted where the hub looks for it (neve.stages), read in place.
    stages = [StageRef.parse(stage) for stage in hub.rag_stages]
    stage_volumes = [
        {"name": f"stage-{i}", "source": "stage", "stageConfig": {"name": str(ref)}}
        for i, ref in enumerate(stages)
    ]
    container: dict[str, Any] = {
        "name": "hub",
        "image": image_path(spcs),
        "args": ["serve", "--host", "0.0.0.0", "--port", str(API_PORT)],
        "env": env,
        "readinessProbe": {"port": API_PORT, "path": "/ready"},
        "volumeMounts": [
            {"name": "models", "mountPath": MODELS_PATH},
            {"name": "data", "mountPath": DATA_PATH},
            *({"name": f"stage-{i}", "mountPath": f"{STAGES_PATH}/{ref.folder}"}
              for i, ref in enumerate(stages)),
        ],
    }  # fmt: skip
    if secrets := _secrets(spcs, hf_token=not spcs.gpus, database=True):
        container["secrets"] = secrets
    if resources:
        container["resources"] = resources
    containers = [container, _vllm(spcs, hub)] if spcs.gpus else [container]
    endpoints = [
        {"name": "api", "port": API_PORT, "public": "api" in spcs.public_endpoints},
        {"name": "relay", "port": RELAY_PORT, "public": False},
    ]
    listening = {"hub": [API_PORT, RELAY_PORT], "vllm": [VLLM_PORT]}
    if hub.engine == "ray":  # this service is the Ray cluster's head
        containers = ray_cluster.head_containers(spcs, container, image_path(spcs))
        endpoints += ray_cluster.head_endpoints(spcs)
        stage_volumes.append({"name": "ray-tmp", "source": "local"})
        listening |= ray_cluster.head_listening()
    spec: dict[str, Any] = {
        "spec": {
            "containers": containers,
            "endpoints": endpoints,
            "volumes": [
                {
                    "name": "models",
                    "source": "stage",
                    "stageConfig": {"name": f"@{spcs.qualified(spcs.models_stage)}"},
                },
                data,
                *stage_volumes,
            ],
            "logExporters": {"eventTableConfig": {"logLevel": spcs.log_level}},
        }
    }
    if spcs.execute_as_caller:
        spec["capabilities"] = {"securityContext": {"executeAsCaller": True}}
    return _checked(spec, spcs, listening)


def _ray_replicas(spcs: SpcsSettings, hub: Settings) -> dict[str, str]:
    """The replicas' engine on the workers: vLLM where they have GPUs (one each, unless a
    replica spreads over several), refused before anything is made where its layout
    cannot fit the pools."""
    if spcs.gpus:
        raise ConfigError(
            f"engine ray: spcs.instance_family ({spcs.instance_family}) is the Ray head's pool, "
            "which holds no replica; give it a CPU family and the GPUs to spcs.ray.workers"
        )
    pools = spcs.ray.workers
    nodes = [pool.gpus for pool in pools for _ in range(pool.max_nodes)]
    env: dict[str, str] = {}
    given = changed(hub)
    if any(nodes) and "ray_engine" not in given:
        env["NEVE_RAY_ENGINE"] = "vllm"
        hub = hub.model_copy(update={"ray_engine": "vllm"})
        if layout.layout(hub) is None and "ray_num_gpus" not in given:
            env["NEVE_RAY_NUM_GPUS"] = "1"
    layout.check(hub, nodes, "spcs.ray.workers (max_nodes)")
    keys = {k for k in given if k.startswith("ray_") or k.endswith("_parallel_size")}
    return env | environment({k: v for k, v in given.items() if k in keys})


def _vllm(spcs: SpcsSettings, hub: Settings) -> dict[str, Any]:
    """vLLM's server on every GPU of the node, its weights cached on the models stage."""
    served = hub.model_copy(
        update={"tensor_parallel_size": spcs.gpus, "models_dir": Path(MODELS_PATH)}
    )
    container: dict[str, Any] = {
        "name": "vllm",
        "image": image_path(spcs, spcs.vllm_image),
        "command": ["python3", "-m", vllm.SERVER],
        "args": vllm.arguments(served, port=VLLM_PORT),
        "env": {"HF_HOME": MODELS_PATH},
        "readinessProbe": {"port": VLLM_PORT, "path": "/health"},
        "volumeMounts": [{"name": "models", "mountPath": MODELS_PATH}],
        "resources": {"requests": {GPU: spcs.gpus}, "limits": {GPU: spcs.gpus}},
    }
    if spcs.hf_token_secret:
        container["secrets"] = [_secret(spcs, spcs.hf_token_secret, "HF_TOKEN")]
    return container


def ui_spec(spcs: SpcsSettings) -> dict[str, Any]:
    """The web UI's service, a client of the hub's API inside Snowflake's network."""
    hub_url = f"http://{dns_name(spcs, spcs.service)}:{API_PORT}"
    spec: dict[str, Any] = {
        "spec": {
            "containers": [
                {
                    "name": "ui",
                    "image": image_path(spcs),
                    "args": ["ui", "--url", hub_url, "--host", "0.0.0.0", "--port", str(UI_PORT)],
                    "env": {"NEVE_LOG_LEVEL": "info"},
                    "readinessProbe": {"port": UI_PORT, "path": "/_stcore/health"},
                }
            ],
            "endpoints": [{"name": "ui", "port": UI_PORT, "public": "ui" in spcs.public_endpoints}],
            "logExporters": {"eventTableConfig": {"logLevel": spcs.log_level}},
        }
    }
    if secrets := _secrets(spcs, hf_token=False):
        spec["spec"]["containers"][0]["secrets"] = secrets
    return _checked(spec, spcs, {"ui": [UI_PORT]})


def _secrets(spcs: SpcsSettings, *, hf_token: bool, database: bool = False) -> list[dict[str, Any]]:
    found = [(spcs.api_key_secret, "NEVE_API_KEY")]
    if database:
        found.append((spcs.database_url_secret, "NEVE_DATABASE_URL"))
    if hf_token:
        found.append((spcs.hf_token_secret, "HF_TOKEN"))
    return [_secret(spcs, name, var) for name, var in found if name]


def _secret(spcs: SpcsSettings, name: str, variable: str) -> dict[str, Any]:
    return {
        "snowflakeSecret": {"objectName": spcs.qualified(name)},
        "envVarName": variable,
        "secretKeyRef": "secret_string",
    }


def _checked(
    spec: dict[str, Any], spcs: SpcsSettings, listening: dict[str, list[int]]
) -> dict[str, Any]:
    check(spec, gpus_per_node=spcs.gpus, listening=listening)
    return spec


def as_yaml(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False, width=1000)


# --- the SQL -----------------------------------------------------------------------------


def function_statements(spcs: SpcsSettings) -> list[Statement]:
    """COMPLETE's two forms and EMBED, through the hub's private relay endpoint."""
    options = {
        "MAX_BATCH_ROWS": spcs.max_batch_rows,
        "MAX_BATCH_RETRIES": spcs.max_batch_retries,
        "ON_BATCH_FAILURE": spcs.on_batch_failure,
        "BATCH_TIMEOUT_SECS": spcs.batch_timeout_secs,
    }
    service = spcs.qualified(spcs.service)
    return [Statement(fn.create(service, "relay", options)) for fn in _functions(spcs)]


def _functions(spcs: SpcsSettings) -> list[Function]:
    return functions(spcs.qualified(spcs.function_prefix))


def _tables(spcs: SpcsSettings) -> list[tuple[Table, str]]:
    return [(FEEDBACK, spcs.feedback_table), (REQUEST_LOG, spcs.request_log_table)]


def _session(spcs: SpcsSettings) -> list[Statement]:
    return [Statement(f"USE ROLE {spcs.role}"), Statement(f"USE WAREHOUSE {spcs.warehouse}")]


def _services(spcs: SpcsSettings, hub: Settings, *, ui_only: bool) -> list[Step]:
    ui = Service(spcs.qualified(spcs.ui_service), spcs.compute_pool, as_yaml(ui_spec(spcs)), 1, 1)
    if ui_only:
        return [ui, _wait(spcs, ui)]
    main = Service(
        spcs.qualified(spcs.service),
        spcs.compute_pool,
        as_yaml(hub_spec(spcs, hub)),
        spcs.min_instances,
        spcs.max_instances,
        tuple(spcs.external_access_integrations),
        # The hub writes feedback and its request log into tables (snowflake_tables).
        warehouse=spcs.warehouse,
    )
    if hub.engine != "ray":
        return [main, ui, _wait(spcs, main), _wait(spcs, ui)]
    image = image_path(spcs)
    workers = [
        Service(
            spcs.qualified(ray_cluster.worker_service(spcs, pool)),
            ray_cluster.worker_pool(spcs, pool),
            as_yaml(_checked_worker(spcs, hub, pool, image)),
            pool.min_nodes,
            pool.max_nodes,
        )
        for pool in spcs.ray.workers
    ]
    lookup = [Lookup(DNS_KEY, dns_domain_sql(spcs))] if spcs.ray.dns == "current" else []
    return [*lookup, main, *workers, ui, _wait(spcs, main), *(_wait(spcs, w) for w in workers),
            _wait(spcs, ui)]  # fmt: skip


def _checked_worker(spcs: SpcsSettings, hub: Settings, pool: RayPool, image: str) -> dict[str, Any]:
    hf_token = [_secret(spcs, spcs.hf_token_secret, "HF_TOKEN")] if spcs.hf_token_secret else []
    spec = ray_cluster.worker_spec(spcs, pool, image, hf_token)
    check(spec, gpus_per_node=pool.gpus, listening=ray_cluster.worker_listening())
    return spec


def dns_domain_sql(spcs: SpcsSettings) -> str:
    return f"SELECT SYSTEM$GET_SERVICE_DNS_DOMAIN('{spcs.schema_path}')"


def _wait(spcs: SpcsSettings, service: Service) -> Wait:
    return Wait(service.name, spcs.wait_timeout, spcs.status_interval)


def _grants(spcs: SpcsSettings, *, ui_only: bool) -> list[Statement]:
    if not spcs.user_role:
        return []
    role = spcs.user_role
    out = [
        Statement(f"GRANT USAGE ON DATABASE {spcs.database} TO ROLE {role}"),
        Statement(f"GRANT USAGE ON SCHEMA {spcs.schema_path} TO ROLE {role}"),
    ]
    if not ui_only:
        out += [
            Statement(f"GRANT USAGE ON FUNCTION {fn.signature} TO ROLE {role}")
            for fn in _functions(spcs)
        ]
        out += [  # analysts read feedback and usage; only the hub writes them
            Statement(f"GRANT SELECT ON TABLE {spcs.qualified(name)} TO ROLE {role}")
            for _, name in _tables(spcs)
        ]
        services = [spcs.service, spcs.ui_service]
    else:
        services = [spcs.ui_service]
    out += [
        Statement(f"GRANT SERVICE ROLE {spcs.qualified(name)}!ALL_ENDPOINTS_USAGE TO ROLE {role}")
        for name in services
    ]
    return out


def _endpoints(spcs: SpcsSettings, *, ui_only: bool = False) -> list[Statement]:
    names = [spcs.ui_service] if ui_only else [spcs.service, spcs.ui_service]
    return [Statement(f"SHOW ENDPOINTS IN SERVICE {spcs.qualified(n)}", shows=True) for n in names]


def plan(action: Action, spcs: SpcsSettings, hub: Settings, *, ui_only: bool = False) -> list[Step]:
    """The steps of `action`, in the order they run. Re-runnable: objects are created
    IF NOT EXISTS (or replaced, where Snowflake allows), a service that exists is given
    the new specification."""
    qualified = spcs.qualified
    ray = hub.engine == "ray"
    # The Ray cluster's worker services and pools, beside the hub's (its head).
    workers = [ray_cluster.worker_service(spcs, p) for p in spcs.ray.workers] if ray else []
    pools = [spcs.compute_pool, *(ray_cluster.worker_pool(spcs, p) for p in spcs.ray.workers
                                  if ray)]  # fmt: skip
    services = [spcs.service, *workers, spcs.ui_service]
    steps: list[Step] = [*_session(spcs)]
    if action == "up":
        if not ui_only:
            steps += [
                Statement(f"CREATE DATABASE IF NOT EXISTS {spcs.database}"),
                Statement(f"CREATE SCHEMA IF NOT EXISTS {spcs.schema_path}"),
                Statement(
                    f"CREATE IMAGE REPOSITORY IF NOT EXISTS {qualified(spcs.image_repository)}"
                ),
                Statement(
                    f"CREATE STAGE IF NOT EXISTS {qualified(spcs.models_stage)}\n"
                    "  ENCRYPTION = (TYPE = 'SNOWFLAKE_SSE')\n  DIRECTORY = (ENABLE = TRUE)"
                ),
                *(Statement(t.create(qualified(name))) for t, name in _tables(spcs)),
                _pool_statement(spcs.compute_pool, spcs.min_nodes, spcs.max_nodes,
                                spcs.instance_family, spcs),
            ]  # fmt: skip
            if hub.engine == "ray":
                steps += [_pool_statement(ray_cluster.worker_pool(spcs, pool), pool.min_nodes,
                                          pool.max_nodes, pool.instance_family, spcs)
                          for pool in spcs.ray.workers]  # fmt: skip
        steps += _services(spcs, hub, ui_only=ui_only)
        if not ui_only:
            steps += function_statements(spcs)
            if hub.engine == "ray":
                options = {"MAX_BATCH_ROWS": 1}
                nodes_fn = ray_nodes_function(spcs)
                steps.append(Statement(nodes_fn.create(qualified(spcs.service), "relay", options)))
                expected = sum(pool.min_nodes for pool in spcs.ray.workers)
                steps.append(NodesWait(ray_nodes_sql(spcs), expected, spcs.ray.join_timeout,
                                       spcs.status_interval))  # fmt: skip
        steps += _grants(spcs, ui_only=ui_only)
        steps += _endpoints(spcs, ui_only=ui_only)
    elif action == "status":
        steps += [
            *(Statement(f"SHOW COMPUTE POOLS LIKE '{p}'", shows=True) for p in pools),
            *(Statement(status_sql(qualified(n)), shows=True) for n in services),
        ]
        if ray:  # the nodes as Ray sees them, with their resources
            steps.append(Statement(ray_nodes_sql(spcs), shows=True, needs=qualified(spcs.service)))
    elif action == "endpoints":
        steps += _endpoints(spcs)
    elif action == "logs":
        steps += [
            Statement(
                f"SELECT SYSTEM$GET_SERVICE_LOGS('{qualified(name)}', 0, '{container}', 200)",
                shows=True,
            )
            for name, container in [
                (spcs.service, "hub"), (spcs.ui_service, "ui"),
                *(((spcs.service, "ray-head"),) if ray else ()),
                *((n, "ray-worker") for n in workers),
            ]
        ]  # fmt: skip
    else:  # down, drop-all: the data volume goes with its service, so it is kept first
        stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
        steps += [
            Statement(
                f"CREATE SNAPSHOT IF NOT EXISTS {qualified(f'{spcs.service}_DATA_{stamp}')}\n"
                f'  FROM SERVICE {qualified(spcs.service)} VOLUME "data" INSTANCE 0',
                shows=True,
                needs=qualified(spcs.service),
            ),
            *(Statement(f"DROP SERVICE IF EXISTS {qualified(n)}") for n in workers),
            Statement(f"DROP SERVICE IF EXISTS {qualified(spcs.ui_service)}"),
            Statement(f"DROP SERVICE IF EXISTS {qualified(spcs.service)}"),
        ]
        if action == "drop-all":
            dropped = [*reversed(_functions(spcs)), *([ray_nodes_function(spcs)] if ray else [])]
            steps += [  # the table functions first: they call the service functions
                Statement(f"DROP FUNCTION IF EXISTS {fn.signature}") for fn in dropped
            ]
            for pool in pools:
                steps += [
                    Statement(f"ALTER COMPUTE POOL IF EXISTS {pool} STOP ALL"),
                    Statement(f"DROP COMPUTE POOL IF EXISTS {pool}"),
                ]
            steps += [
                Statement(f"DROP IMAGE REPOSITORY IF EXISTS {qualified(spcs.image_repository)}"),
                Statement(f"DROP STAGE IF EXISTS {qualified(spcs.models_stage)}"),
            ]
    return steps


def _pool_statement(name: str, low: int, high: int, family: str, spcs: SpcsSettings) -> Statement:
    return Statement(
        f"CREATE COMPUTE POOL IF NOT EXISTS {name}\n  MIN_NODES = {low}\n  MAX_NODES = {high}\n"
        f"  INSTANCE_FAMILY = {family}\n  AUTO_RESUME = TRUE\n"
        f"  AUTO_SUSPEND_SECS = {spcs.auto_suspend_secs}"
    )


def ray_nodes_function(spcs: SpcsSettings) -> Function:
    """The Ray cluster's nodes as the hub sees them: what `up` waits on, `status` shows."""
    name = f"{spcs.qualified(spcs.function_prefix)}_RAY_NODES"
    return Function(name, "", "VARIANT", "/relay/ray_nodes")


def ray_nodes_sql(spcs: SpcsSettings) -> str:
    return f"SELECT {ray_nodes_function(spcs).name}()"


def script(steps: list[Step]) -> str:
    """The steps as one SQL script, for --dry-run and for a worksheet."""
    out: list[str] = []
    for step in steps:
        if isinstance(step, Service):
            out.append(step.exists + ";")
            out.append(step.create + ";")
            out.append(f"-- where {step.name} exists already, instead:")
            out.append(f"-- ALTER SERVICE {step.name} FROM SPECIFICATION $$ (the same) $$;")
            out.append(f"-- {step.alter[1]};")
        elif isinstance(step, Wait):
            out.append(f"-- wait up to {step.timeout:g} s for READY:")
            out.append(step.sql + ";")
        elif isinstance(step, Lookup):
            out.append(f"-- its answer is ${{{step.key}}} below:")
            out.append(step.sql + ";")
        elif isinstance(step, NodesWait):
            out.append(f"-- wait up to {step.timeout:g} s for {step.nodes} Ray worker nodes:")
            out.append(step.sql + ";")
        else:
            if step.needs:
                out.append(f"-- where {step.needs} exists:")
            out.append(step.sql + ";")
    return "\n".join(out) + "\n"
