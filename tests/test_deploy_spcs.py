"""`neve deploy spcs`: the service specifications checked against a typed model of
Snowflake's documented fields and limits, the SQL parsed statement by statement, and the
actions run through the real snowflake-connector-python against a stand-in account
(no Snowflake account can be reached from here)."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlglot
import yaml
from sqlglot import exp

from neve.config import Settings, load_settings
from neve.errors import ConfigError
from neve.snowflake import ray_cluster, spcs
from neve.snowflake.spec import SpecError, check
from tests.conftest import Ran, free_port, neve
from tests.standins.snowflake_server import Account, running


def settings(**section: Any) -> Settings:
    return load_settings({"spcs": {"user_role": "ANALYST", **section}}, environ={})


def sql_of(steps: list[spcs.Step]) -> list[str]:
    out: list[str] = []
    for step in steps:
        out += [step.exists, step.create] if isinstance(step, spcs.Service) else [step.sql]
    return out


# --- the specification ---------------------------------------------------------------


def test_the_cpu_hub_spec_is_valid_and_complete() -> None:
    s = settings(api_key_secret="NEVE_KEY", execute_as_caller=True, memory="6Gi")
    spec = spcs.hub_spec(s.spcs, s)
    parsed = check(spec, gpus_per_node=0, listening={"hub": [8000, 8001]})
    hub = parsed.spec.containers[0]
    assert hub.readiness_probe is not None and hub.readiness_probe.path == "/ready"
    assert hub.env is not None and hub.env["NEVE_ENGINE"] == "llamacpp"
    assert hub.secrets[0].env_var_name == "NEVE_API_KEY"
    assert {m.mount_path for m in hub.volume_mounts} == {"/models", "/data"}
    endpoints = {e.name: e for e in parsed.spec.endpoints}
    assert endpoints["api"].public and not endpoints["relay"].public
    volumes = {v.name: v for v in parsed.spec.volumes}
    stage = volumes["models"].stage_config
    assert volumes["models"].source == "stage" and stage is not None
    assert stage.name == "@NEVE_DB.PUBLIC.NEVE_MODELS"
    assert volumes["data"].source == "block"
    assert parsed.capabilities is not None
    assert parsed.capabilities.security_context.execute_as_caller
    assert parsed.spec.log_exporters is not None


def test_the_hubs_stages_are_mounted_where_it_reads_them() -> None:
    s = load_settings(
        {"rag_stages": ["@DOCS_DB.PUBLIC.PDFS/manuals", "@DOCS_DB.PUBLIC.WIKI"]}, environ={}
    )
    parsed = check(spcs.hub_spec(s.spcs, s), gpus_per_node=0, listening={"hub": [8000, 8001]})
    volumes = {v.name: v.stage_config.name for v in parsed.spec.volumes if v.stage_config}
    mounts = {m.name: m.mount_path for m in parsed.spec.containers[0].volume_mounts}
    assert volumes["stage-0"] == "@DOCS_DB.PUBLIC.PDFS/manuals"
    assert mounts["stage-0"] == "/stages/docs_db.public.pdfs_manuals"
    assert volumes["stage-1"] == "@DOCS_DB.PUBLIC.WIKI"
    assert mounts["stage-1"] == "/stages/docs_db.public.wiki"
    env = parsed.spec.containers[0].env or {}
    assert json.loads(env["NEVE_RAG_STAGES"]) == s.rag_stages
    with pytest.raises(ConfigError, match="is not a stage"):
        load_settings({"rag_stages": ["DOCS_DB.PUBLIC.WIKI"]}, environ={})


def test_a_gpu_pool_runs_vllms_image_beside_the_hub_on_every_gpu_of_a_node() -> None:
    s = load_settings({"model": "Qwen/Qwen2.5-7B-Instruct", "max_model_len": 8192,
                       "spcs": {"instance_family": "GPU_NV_M", "hf_token_secret": "HF"}},
                      environ={})  # fmt: skip
    opened = {"hub": [8000, 8001], "vllm": [8002]}
    parsed = check(spcs.hub_spec(s.spcs, s), gpus_per_node=4, listening=opened)
    hub, server = parsed.spec.containers
    assert hub.env is not None and server.args is not None
    assert hub.env["NEVE_ENGINE"] == "openai"
    assert hub.env["NEVE_UPSTREAM_URL"] == "http://localhost:8002/v1"
    assert hub.resources is None or hub.resources.limits is None  # the GPUs are vLLM's
    assert server.image == "/neve_db/public/neve_images/vllm-openai:v0.11.0"
    flags = dict(zip(server.args[::2], server.args[1::2], strict=False))
    assert flags["--model"] == "Qwen/Qwen2.5-7B-Instruct" and flags["--port"] == "8002"
    assert flags["--tensor-parallel-size"] == "4" and flags["--max-model-len"] == "8192"
    assert flags["--download-dir"] == "/models"
    assert server.resources is not None and server.resources.limits is not None
    assert server.resources.limits.gpu == 4
    assert [x.env_var_name for x in server.secrets] == ["HF_TOKEN"]
    assert {m.mount_path for m in server.volume_mounts} == {"/models"}
    # Without a container opening 8002, the readiness probe is refused naming the field.
    with pytest.raises(SpecError, match=r"containers\[1\]\.readinessProbe\.port"):
        check(spcs.hub_spec(s.spcs, s), gpus_per_node=4, listening={"hub": [8000, 8001]})


def test_the_ui_spec_reaches_the_hub_inside_snowflake() -> None:
    s = settings(public_endpoints=["api"])
    parsed = check(spcs.ui_spec(s.spcs), gpus_per_node=0, listening={"ui": [8501]})
    ui = parsed.spec.containers[0]
    assert ui.args is not None
    assert "http://neve.public.neve-db.snowflakecomputing.internal:8000" in ui.args
    assert not parsed.spec.endpoints[0].public


def _hub() -> dict[str, Any]:
    s = settings()
    return copy.deepcopy(spcs.hub_spec(s.spcs, s))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d["spec"]["containers"][0].update(name="h" * 64),
         "spec.containers[0].name"),
        (lambda d: d["spec"]["containers"][0].update(name="Hub_1"),
         "spec.containers[0].name"),
        (lambda d: d["spec"]["endpoints"][0].update(port=9000),
         "spec.endpoints[0].port"),
        (lambda d: d["spec"]["containers"][0].update(
            resources={"requests": {"nvidia.com/gpu": 1}}),
         "spec.containers[0].resources.requests.nvidia.com/gpu"),
        (lambda d: d["spec"]["volumes"][0].update(source="@NEVE_DB.PUBLIC.NEVE_MODELS"),
         "spec.volumes[0].source"),
        (lambda d: d["spec"]["volumes"][0].pop("stageConfig"),
         "spec.volumes[0].stageConfig"),
        (lambda d: d["spec"]["containers"][0]["volumeMounts"].append(
            {"name": "cache", "mountPath": "/cache"}),
         "spec.containers[0].volumeMounts[2].name"),
        (lambda d: d["spec"]["containers"][0].update(image="neve:latest"),
         "spec.containers[0].image"),
        (lambda d: d["spec"]["endpoints"].append({"name": "api", "port": 8000}),
         "spec.endpoints"),
        (lambda d: d["spec"]["containers"][0].update(replicas=2),
         "spec.containers[0].replicas"),
    ],
)  # fmt: skip
def test_a_spec_snowflake_would_refuse_is_refused_naming_the_field(change: Any, field: str) -> None:
    document = _hub()
    change(document)
    with pytest.raises(SpecError) as caught:
        check(document, gpus_per_node=0, listening={"hub": [8000, 8001]})
    assert str(caught.value).startswith(f"{field}:"), str(caught.value)


def test_several_instances_share_postgresql_or_are_refused() -> None:
    """Each SPCS instance has a block volume of its own: without a shared database, what
    a user sees would depend on the instance the load balancer picked."""
    alone = settings(max_instances=3)
    with pytest.raises(ConfigError, match=r"spcs\.max_instances \(3\).*spcs\.database_url_secret"):
        spcs.hub_spec(alone.spcs, alone)
    ran = neve("deploy", "spcs", "up", "--dry-run", "--set", "spcs.max_instances=3")
    assert ran.returncode == 2 and "spcs.database_url_secret" in ran.stderr
    assert "Traceback" not in ran.stderr

    s = settings(max_instances=3, database_url_secret="NEVE_PG",
                 external_access_integrations=["PG_ACCESS"])  # fmt: skip
    hub = check(spcs.hub_spec(s.spcs, s), gpus_per_node=0,
                listening={"hub": [8000, 8001]}).spec.containers[0]  # fmt: skip
    assert hub.env is not None and hub.env["NEVE_INSTANCES"] == "3"
    named = {x.env_var_name: x.snowflake_secret for x in hub.secrets}
    assert not isinstance(named["NEVE_DATABASE_URL"], str)
    assert named["NEVE_DATABASE_URL"].object_name == "NEVE_DB.PUBLIC.NEVE_PG"
    (service,) = [step for step in spcs.plan("up", s.spcs, s) if isinstance(step, spcs.Service)
                  and step.name.endswith(".NEVE")]  # fmt: skip
    assert "MAX_INSTANCES = 3" in service.create
    assert "EXTERNAL_ACCESS_INTEGRATIONS = (PG_ACCESS)" in service.create
    # What the containers get makes a fleet the hub accepts: it refuses SQLite itself.
    env = {**hub.env, "NEVE_DATABASE_URL": "postgresql://neve@pg/neve"}
    assert load_settings(environ=env).instances == 3
    with pytest.raises(ConfigError, match="database_url"):
        load_settings(environ={**hub.env})


def test_the_cli_refuses_a_bad_setting_by_name() -> None:
    ran = neve("deploy", "spcs", "up", "--set", "spcs.instance_family=GPU_HUGE")
    assert ran.returncode == 2 and "unknown instance family" in ran.stderr
    ran = neve("deploy", "spcs", "up", "--set", "spcs.service=neve; drop")
    assert ran.returncode == 2 and "spcs.service" in ran.stderr


# --- the SQL -----------------------------------------------------------------------------

# sqlglot has no grammar for SPCS's own objects: it falls back to a Command for them,
# having tokenized the statement (an unclosed quote or $$ still fails). For those the test
# checks the statement's kind; everything else sqlglot parses whole.
SPCS_COMMANDS = re.compile(
    r"^(CREATE (IMAGE REPOSITORY|COMPUTE POOL|SERVICE|SNAPSHOT) IF NOT EXISTS|"
    r"ALTER (SERVICE|COMPUTE POOL IF EXISTS)|DROP (SERVICE|COMPUTE POOL|IMAGE REPOSITORY) "
    r"IF EXISTS|SHOW (SERVICES|ENDPOINTS|COMPUTE POOLS)|GRANT SERVICE ROLE)\b"
)


@pytest.mark.parametrize("action", spcs.ACTIONS)
def test_every_statement_parses_in_snowflakes_dialect(action: spcs.Action) -> None:
    s = settings()
    for sql in sql_of(spcs.plan(action, s.spcs, s)):
        parsed = sqlglot.parse_one(sql, dialect="snowflake")
        if isinstance(parsed, exp.Command):
            assert SPCS_COMMANDS.match(sql), sql
        else:
            assert parsed.sql(dialect="snowflake"), sql


def test_up_creates_each_object_before_what_uses_it() -> None:
    s = settings()
    sql = sql_of(spcs.plan("up", s.spcs, s))

    def first(pattern: str) -> int:
        return next(n for n, text in enumerate(sql) if re.match(pattern, text))

    assert sql[0] == "USE ROLE NEVE_ADMIN"
    assert first("CREATE DATABASE") < first("CREATE SCHEMA") < first("CREATE IMAGE REPOSITORY")
    assert first("CREATE STAGE") < first("CREATE SERVICE IF NOT EXISTS NEVE_DB.PUBLIC.NEVE\n")
    assert first("CREATE COMPUTE POOL") < first("CREATE SERVICE")
    hub = first("CREATE SERVICE IF NOT EXISTS NEVE_DB.PUBLIC.NEVE\n")
    assert hub < first("CREATE OR REPLACE FUNCTION") < first("GRANT USAGE ON FUNCTION")
    assert first("CREATE SERVICE IF NOT EXISTS NEVE_DB.PUBLIC.NEVE_UI") < first(
        "GRANT SERVICE ROLE NEVE_DB.PUBLIC.NEVE_UI"
    )
    # Feedback and the request log: tables the hub fills, analysts read.
    for table in ("NEVE_DB.PUBLIC.NEVE_FEEDBACK", "NEVE_DB.PUBLIC.NEVE_REQUEST_LOG"):
        assert first("CREATE SCHEMA") < first(f"CREATE TABLE IF NOT EXISTS {table}")
        assert first(f"GRANT SELECT ON TABLE {table} TO ROLE ANALYST")
    assert "QUERY_WAREHOUSE = NEVE_WH" in sql[hub]
    functions = [t for t in sql if t.startswith("CREATE OR REPLACE FUNCTION")]
    services = [t for t in functions if "SERVICE = " in t]
    assert len(services) == 14  # COMPLETE (2), EMBED, the AI functions' 10 forms, passages
    for text in services:
        assert "ENDPOINT = relay" in text and "MAX_BATCH_ROWS = 256" in text
        assert "ON_BATCH_FAILURE = ABORT" in text and "BATCH_TIMEOUT_SECS = 600" in text
    # SEARCH_DOCS' two forms: table functions over the service function made before them.
    table = "CREATE OR REPLACE FUNCTION NEVE_DB.PUBLIC.NEVE_SEARCH_DOCS("
    tables = [n for n, t in enumerate(sql) if t.startswith(table)]
    assert len(tables) == 2
    assert first("CREATE OR REPLACE FUNCTION NEVE_DB.PUBLIC.NEVE_SEARCH_DOCS_ROWS") < tables[0]
    assert "MIN_INSTANCES = 1" in sql[hub] and "MAX_INSTANCES = 1" in sql[hub]


# --- the actions --------------------------------------------------------------------------


@pytest.fixture
def account() -> Iterator[tuple[Account, dict[str, str]]]:
    standin = Account()
    port = free_port()
    env = {"SNOWFLAKE_ACCOUNT": "standin", "SNOWFLAKE_USER": "deployer",
           "SNOWFLAKE_PASSWORD": "pw", "SNOWFLAKE_HOST": "127.0.0.1",
           "SNOWFLAKE_PORT": str(port), "SNOWFLAKE_PROTOCOL": "http"}  # fmt: skip
    with running(standin, port):
        yield standin, env


def deploy(env: dict[str, str], *args: str) -> Ran:
    return neve("deploy", "spcs", *args, "--set", "spcs.user_role=ANALYST",
                "--set", "spcs.status_interval=0.05", **env)  # fmt: skip


def test_without_a_connection_every_action_is_a_dry_run(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path), "SNOWFLAKE_HOME": str(tmp_path / "none")}
    for action in spcs.ACTIONS:
        ran = deploy(home, action)
        assert ran.returncode == 0, ran.stderr
        assert "printing the statements (--dry-run)" in ran.stderr
        assert ran.stdout.startswith("USE ROLE NEVE_ADMIN;\nUSE WAREHOUSE NEVE_WH;\n")
    up = deploy(home, "up").stdout
    assert up.index("CREATE COMPUTE POOL") < up.index("CREATE SERVICE") < up.index("FUNCTION")
    assert "-- wait up to 1800 s for READY:" in up
    down = deploy(home, "down").stdout
    assert down.index("CREATE SNAPSHOT") < down.index("DROP SERVICE")


def test_dry_run_touches_nothing_even_with_a_connection(
    account: tuple[Account, dict[str, str]],
) -> None:
    standin, env = account
    ran = deploy(env, "up", "--dry-run")
    assert ran.returncode == 0 and "CREATE SERVICE" in ran.stdout
    assert standin.statements == []


def test_up_runs_in_order_waits_for_ready_prints_endpoints_and_reruns_as_updates(
    account: tuple[Account, dict[str, str]],
) -> None:
    standin, env = account
    ran = deploy(env, "up")
    assert ran.returncode == 0, ran.stderr
    s = settings()
    expected = [sql for sql in sql_of(spcs.plan("up", s.spcs, s))]
    # The service steps ask whether it exists, then create; each wait polls until READY.
    ran_sql = [sql for sql in standin.statements if "GET_SERVICE_STATUS" not in sql]
    assert ran_sql == [sql for sql in expected if "GET_SERVICE_STATUS" not in sql]
    polls = [sql for sql in standin.statements if "GET_SERVICE_STATUS" in sql]
    assert len(polls) == 4  # PENDING, then READY, for each service
    assert "NEVE_DB.PUBLIC.NEVE: READY" in ran.stderr
    assert "api: https://neve.example.snowflakecomputing.app" in ran.stdout
    assert "ui: https://neve-ui.example.snowflakecomputing.app" in ran.stdout
    assert "relay" not in ran.stdout  # private: no address outside Snowflake

    standin.statements.clear()
    again = deploy(env, "up")
    assert again.returncode == 0, again.stderr
    assert not any(sql.startswith("CREATE SERVICE") for sql in standin.statements)
    assert any(sql.startswith("ALTER SERVICE NEVE_DB.PUBLIC.NEVE FROM SPECIFICATION")
               for sql in standin.statements)  # fmt: skip
    assert "updated NEVE_DB.PUBLIC.NEVE" in again.stderr


def test_up_ui_only_touches_the_ui_service_alone(
    account: tuple[Account, dict[str, str]],
) -> None:
    standin, env = account
    assert deploy(env, "up", "--ui-only").returncode == 0
    assert standin.services == {"NEVE_DB.PUBLIC.NEVE_UI"}
    assert not any(sql.startswith(("CREATE COMPUTE POOL", "CREATE OR REPLACE FUNCTION"))
                   for sql in standin.statements)  # fmt: skip


def test_down_keeps_the_data_in_a_snapshot_then_drops_and_drop_all_clears(
    account: tuple[Account, dict[str, str]],
) -> None:
    standin, env = account
    assert deploy(env, "up").returncode == 0
    standin.statements.clear()
    assert deploy(env, "down").returncode == 0
    kinds = [sql.split(" IF")[0] for sql in standin.statements if not sql.startswith("USE")]
    assert kinds == ["SHOW SERVICES LIKE 'NEVE' IN SCHEMA NEVE_DB.PUBLIC", "CREATE SNAPSHOT",
                     "DROP SERVICE", "DROP SERVICE"]  # fmt: skip
    assert standin.services == set()
    standin.statements.clear()
    ran = deploy(env, "drop-all")
    assert ran.returncode == 0
    assert "skipped (no NEVE_DB.PUBLIC.NEVE)" in ran.stderr  # nothing left to snapshot
    dropped = [sql for sql in standin.statements if sql.startswith("DROP")]
    assert [d.split(" IF")[0] for d in dropped] == ["DROP SERVICE"] * 2 + ["DROP FUNCTION"] * 16 + [
        "DROP COMPUTE POOL", "DROP IMAGE REPOSITORY", "DROP STAGE"]  # fmt: skip


def test_a_refused_statement_stops_the_action_naming_it(
    account: tuple[Account, dict[str, str]],
) -> None:
    standin, env = account
    standin.fail_on = "CREATE COMPUTE POOL"
    ran = deploy(env, "up")
    assert ran.returncode == 1
    assert "CREATE COMPUTE POOL IF NOT EXISTS NEVE_POOL" in ran.stderr
    assert "refused by the stand-in" in ran.stderr and "Traceback" not in ran.stderr
    assert standin.statements[-1].startswith("CREATE COMPUTE POOL")


@pytest.mark.skipif(
    not os.environ.get("NEVE_TEST_SNOWFLAKE_CONNECTION"),
    reason="needs a real Snowflake account: set NEVE_TEST_SNOWFLAKE_CONNECTION to a "
    "connection name of ~/.snowflake/connections.toml",
)
def test_status_on_a_real_snowflake_account() -> None:
    connection = os.environ["NEVE_TEST_SNOWFLAKE_CONNECTION"]
    ran = neve("deploy", "spcs", "status", "--run", "--set", f"spcs.connection={connection}")
    assert ran.returncode == 0, ran.stderr


# --- engine ray: the Ray cluster ---------------------------------------------------------


def ray_settings(**values: Any) -> Settings:
    pools = [{"name": "GPU", "instance_family": "GPU_NV_M", "min_nodes": 2, "max_nodes": 2}]
    return load_settings(
        {"engine": "ray", **values,
         "spcs": {"user_role": "ANALYST", "ray": {"workers": pools, "public": ["dashboard"]}}},
        environ={},
    )  # fmt: skip


def ray_services(s: Settings) -> dict[str, dict[str, Any]]:
    found = [step for step in spcs.plan("up", s.spcs, s) if isinstance(step, spcs.Service)]
    return {step.name: yaml.safe_load(step.spec) for step in found}


def test_the_ray_cluster_renders_a_head_and_gpu_workers_on_every_declared_port() -> None:
    s = ray_settings(tensor_parallel_size=4, pipeline_parallel_size=2)
    found = ray_services(s)
    head, workers = found["NEVE_DB.PUBLIC.NEVE"], found["NEVE_DB.PUBLIC.NEVE_RAY_GPU"]
    parsed = check(head, gpus_per_node=0, listening=ray_cluster.head_listening()
                   | {"hub": [8000, 8001]})  # fmt: skip
    names = {c.name for c in parsed.spec.containers}
    assert names == {"ray-head", "hub", "prometheus", "grafana"}
    endpoints = {e.name: e for e in parsed.spec.endpoints}
    assert endpoints["dashboard"].public and not endpoints["grafana"].public
    assert endpoints["ray-workers"].port_range == "10002-10199"
    worker = check(workers, gpus_per_node=4, listening=ray_cluster.worker_listening())
    (container,) = worker.spec.containers
    assert container.resources is not None and container.resources.limits is not None
    assert container.resources.limits.gpu == 4
    # Every port `ray start` pins is a declared endpoint of its service, and the other way.
    for spec, command in ((parsed, parsed.spec.containers[0].command),
                          (worker, container.command)):  # fmt: skip
        pinned = {int(a.split("=")[1]) for a in command or [] if re.match(r"--([\w-]+-)?port=", a)}
        declared = {p for e in spec.spec.endpoints for p in e.ports}
        assert pinned <= declared
        tcp = {p for e in spec.spec.endpoints if e.protocol == "TCP" for p in e.ports}
        assert tcp - pinned == set(range(10002, 10200)) - pinned  # nothing declared idly
    joined = next(a for a in container.command or [] if a.startswith("--address="))
    assert joined == "--address=neve.${SPCS_DNS_DOMAIN}:6379"
    hub = next(c for c in parsed.spec.containers if c.name == "hub")
    assert hub.env is not None and hub.env["NEVE_RAY_ENGINE"] == "vllm"
    assert hub.env["NEVE_TENSOR_PARALLEL_SIZE"] == "4"
    assert hub.env["NEVE_PIPELINE_PARALLEL_SIZE"] == "2"

    legacy = load_settings({"engine": "ray", "spcs": {"ray": {"dns": "legacy"}}}, environ={})
    assert ray_cluster.head_host(legacy.spcs) == "neve.public.neve-db.snowflakecomputing.internal"


def test_a_layout_the_pools_cannot_hold_is_refused_before_anything_is_made(
    account: tuple[Account, dict[str, str]],
) -> None:
    with pytest.raises(ConfigError, match="ray_tp_across_nodes"):
        spcs.plan("up", ray_settings().spcs, ray_settings(tensor_parallel_size=8))
    with pytest.raises(ConfigError, match="needs 16 GPUs"):
        s = ray_settings(tensor_parallel_size=4, pipeline_parallel_size=4)
        spcs.plan("up", s.spcs, s)
    standin, env = account
    ran = deploy(env, "up", "--set", "engine=ray", "--set", "tensor_parallel_size=8")
    assert ran.returncode == 2 and "needs 8 GPUs" in ran.stderr
    assert "spcs.ray.workers" in ran.stderr and "Traceback" not in ran.stderr
    assert standin.statements == []  # nothing touched


@pytest.mark.parametrize("action", spcs.ACTIONS)
def test_every_ray_statement_parses_in_snowflakes_dialect(action: spcs.Action) -> None:
    s = ray_settings()
    for sql in sql_of(spcs.plan(action, s.spcs, s)):
        parsed = sqlglot.parse_one(sql.replace("${SPCS_DNS_DOMAIN}", "x"), dialect="snowflake")
        if isinstance(parsed, exp.Command):
            assert SPCS_COMMANDS.match(sql), sql
        else:
            assert parsed.sql(dialect="snowflake"), sql


def test_up_makes_the_cluster_and_waits_until_its_workers_joined_ray(
    account: tuple[Account, dict[str, str]],
) -> None:
    standin, env = account
    ray = ("--set", "engine=ray", "--set", "spcs.ray.workers=[{\"name\": \"GPU\", "
           "\"instance_family\": \"GPU_NV_M\", \"min_nodes\": 2, \"max_nodes\": 2}]")  # fmt: skip
    ran = deploy(env, "up", *ray)
    assert ran.returncode == 0, ran.stderr
    sql = standin.statements
    created = [t for t in sql if t.startswith("CREATE SERVICE")]
    worker = next(t for t in created if "NEVE_RAY_GPU" in t)
    # The head's DNS domain read first, and written into the workers' `ray start`.
    assert "--address=neve.k3x9q.svc.spcs.internal:6379" in worker
    assert "IN COMPUTE POOL NEVE_POOL_GPU" in worker and "MAX_INSTANCES = 2" in worker
    assert any(t.startswith("CREATE COMPUTE POOL IF NOT EXISTS NEVE_POOL_GPU") for t in sql)
    polls = [t for t in sql if t.startswith("SELECT NEVE_DB.PUBLIC.NEVE_RAY_NODES()")]
    assert len(polls) == 3  # 0, 1, then 2 of 2 workers joined
    assert "Ray: 2 of 2 worker nodes joined" in ran.stderr

    standin.statements.clear()
    status = deploy(env, "status", *ray)
    assert status.returncode == 0, status.stderr
    assert "SHOW COMPUTE POOLS LIKE 'NEVE_POOL_GPU'" in standin.statements
    assert "10.0.0.2" in status.stdout  # the nodes as Ray sees them
    logs = deploy(env, "logs", *ray)
    assert "'ray-worker'" in "".join(standin.statements) and logs.returncode == 0
    standin.statements.clear()
    assert deploy(env, "drop-all", *ray).returncode == 0
    dropped = "\n".join(standin.statements)
    for name in ("SERVICE IF EXISTS NEVE_DB.PUBLIC.NEVE_RAY_GPU",
                 "COMPUTE POOL IF EXISTS NEVE_POOL_GPU",
                 "FUNCTION IF EXISTS NEVE_DB.PUBLIC.NEVE_RAY_NODES()"):  # fmt: skip
        assert f"DROP {name}" in dropped
