"""`neve deploy kuberay`: the manifest's Serve configuration validated by Ray Serve's own
schema classes, its objects wired to one another (ports, probes, selectors, the head's
service, the data volume), the hub's environment valid settings, and settings that cannot
work refused naming the setting. tests/test_ray.py deploys the rendered Serve
configuration on a real Ray cluster, as KubeRay does, with a hub in front."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from neve.config import Settings, load_settings
from neve.errors import ConfigError
from neve.ray import kuberay
from neve.ray.serve_config import BUILDER, DEPLOYMENT
from tests.conftest import neve

schema = pytest.importorskip("ray.serve.schema")  # the neve[ray] extra; `make test` has it

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def settings(**values: str) -> Settings:
    return load_settings(flags=values, environ={})


def objects(s: Settings) -> dict[str, dict[str, Any]]:
    docs = yaml.safe_load_all(kuberay.as_yaml(kuberay.manifest(s)))  # as kubectl reads it
    return {doc["kind"]: doc for doc in docs}


def serve_config(found: dict[str, dict[str, Any]]) -> Any:
    text = found["RayService"]["spec"]["serveConfigV2"]
    return schema.ServeDeploySchema.model_validate(yaml.safe_load(text))


def containers(pod_owner: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod_owner["spec"]["template"]["spec"]["containers"]}


def test_the_serve_config_passes_rays_schema_with_the_ray_settings() -> None:
    s = settings(ray_min_replicas="2", ray_max_replicas="6", ray_target_ongoing_requests="3",
                 ray_num_cpus="2", ray_resources='{"replica": 1}', max_model_len="2048",
                 kv_cache_tokens="4096", api_key="never-in-a-manifest")  # fmt: skip
    found = objects(s)
    config = serve_config(found)
    (app,) = config.applications
    assert (app.name, app.import_path, app.route_prefix) == ("neve", BUILDER, None)
    (deployment,) = app.deployments
    assert deployment.name == DEPLOYMENT
    scaling = deployment.autoscaling_config
    assert (scaling["min_replicas"], scaling["max_replicas"]) == (2, 6)
    assert scaling["target_ongoing_requests"] == 3
    actor = deployment.ray_actor_options
    assert (actor.num_cpus, actor.num_gpus, actor.resources) == (2, 0, {"replica": 1.0})
    assert deployment.graceful_shutdown_timeout_s == s.ray_graceful_shutdown_timeout
    # The replicas are built from the user's settings; a secret never enters the manifest.
    assert app.args["settings"]["max_model_len"] == 2048
    assert "never-in-a-manifest" not in kuberay.as_yaml(kuberay.manifest(s))

    # The schema is a real check: a config it cannot take is refused.
    broken = yaml.safe_load(found["RayService"]["spec"]["serveConfigV2"])
    broken["applications"][0]["deployments"][0]["max_ongoing_requests"] = -1
    with pytest.raises(ValueError, match="max_ongoing_requests"):
        schema.ServeDeploySchema.model_validate(broken)


def test_worker_pods_have_room_for_the_replicas_and_the_autoscaler_its_bounds() -> None:
    s = settings(ray_num_cpus="2", ray_min_replicas="1", ray_max_replicas="6",
                 ray_resources='{"replica": 1}', **{"kuberay.worker_cpu": "4"})  # fmt: skip
    cluster = objects(s)["RayService"]["spec"]["rayClusterConfig"]
    assert cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"  # no replica there
    (group,) = cluster["workerGroupSpecs"]
    # Two replicas of 2 CPUs fit a 4-CPU pod: one pod for the minimum, three for six.
    assert (group["groupName"], group["minReplicas"], group["maxReplicas"]) == ("cpu", 1, 3)
    assert group["rayStartParams"]["resources"] == """'{"replica": 2.0}'"""
    worker = group["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["cpu"] == "4"

    gpu = settings(ray_engine="vllm", ray_num_gpus="1", **{"kuberay.worker_gpus": "2"})
    (group,) = objects(gpu)["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert group["groupName"] == "gpu" and limits["nvidia.com/gpu"] == 2
    assert group["maxReplicas"] == 2  # ray_max_replicas 4, two one-GPU replicas a pod


def test_one_replica_spread_over_gpu_pods_renders_its_placement_group() -> None:
    s = settings(ray_engine="vllm", tensor_parallel_size="4", pipeline_parallel_size="2",
                 ray_min_replicas="1", ray_max_replicas="2",
                 **{"kuberay.worker_gpus": "4"})  # fmt: skip
    found = objects(s)
    (deployment,) = serve_config(found).applications[0].deployments
    bundles = deployment.placement_group_bundles
    assert bundles[0] == {"CPU": 1} and bundles[1:] == [{"CPU": 1, "GPU": 1}] * 8
    assert deployment.placement_group_strategy == "PACK"
    assert deployment.ray_actor_options.num_gpus == 0  # the group holds the GPUs
    (group,) = found["RayService"]["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    # Two 4-GPU pods per replica: two for one replica, four for two.
    assert (group["groupName"], group["minReplicas"], group["maxReplicas"]) == ("gpu", 2, 4)
    with pytest.raises(ConfigError, match="ray_tp_across_nodes"):
        kuberay.manifest(settings(ray_engine="vllm", tensor_parallel_size="8",
                                  **{"kuberay.worker_gpus": "4"}))  # fmt: skip


def test_the_hub_joins_the_head_and_serves_behind_its_service() -> None:
    s = settings(model="smollm2", max_num_seqs="8", **{"kuberay.name": "llm"})
    found = objects(s)
    cluster = found["RayService"]["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    gcs = next(p["containerPort"] for p in head["ports"] if p["name"] == "gcs-server")

    pods = found["Deployment"]
    hub, ui = containers(pods)["hub"], containers(pods)["ui"]
    # KubeRay names the head's Service <RayService>-head-svc.
    assert f"ray start --address=llm-head-svc:{gcs} --num-cpus=0" in hub["args"][0]
    env = {e["name"]: e["value"] for e in hub["env"]}
    hub_settings = load_settings(environ=env)
    assert hub_settings.engine == "ray" and hub_settings.ray_deploy is False
    assert hub_settings.ray_address == "auto" and hub_settings.max_num_seqs == 8
    assert (
        hub["envFrom"]
        == ui["envFrom"]
        == [{"secretRef": {"name": "neve-secrets", "optional": True}}]
    )

    # Probes and the Service name ports the containers open; the selector picks the pods.
    for container in (hub, ui):
        named = {p["name"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                assert container[probe]["httpGet"]["port"] in named
    service = found["Service"]
    labels = pods["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert pods["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    opened = {p["name"] for c in (hub, ui) for p in c["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= opened
    ui_url = ui["args"][ui["args"].index("--url") + 1]
    assert ui_url.endswith(f":{hub['ports'][0]['containerPort']}")

    # The data volume is the claim the manifest makes, mounted where the hub keeps state.
    claim = found["PersistentVolumeClaim"]["metadata"]["name"]
    volume = pods["spec"]["template"]["spec"]["volumes"][0]
    assert volume["persistentVolumeClaim"]["claimName"] == claim
    assert hub["volumeMounts"][0]["mountPath"] == hub_settings.data_dir.as_posix()
    for doc in found.values():
        assert DNS_LABEL.match(doc["metadata"]["name"]), doc["metadata"]["name"]


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"kuberay.worker_cpu": "500m"}, "kuberay.worker_cpu"),
        ({"kuberay.worker_cpu": "2Gi"}, "kuberay.worker_cpu"),
        ({"ray_num_gpus": "1"}, "kuberay.worker_gpus"),
        ({"kuberay.hub_replicas": "2"}, "kuberay.hub_replicas"),
        ({"kuberay.min_workers": "5", "kuberay.max_workers": "2"}, "kuberay.min_workers"),
    ],
)
def test_a_manifest_that_cannot_work_is_refused_naming_the_setting(
    values: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        kuberay.manifest(settings(**values))


def test_many_hubs_share_postgresql_not_a_volume() -> None:
    found = objects(settings(**{"kuberay.hub_replicas": "3", "kuberay.data_volume_size": ""}))
    assert "PersistentVolumeClaim" not in found
    assert found["Deployment"]["spec"]["replicas"] == 3


def test_many_hubs_are_one_fleet_on_postgresql() -> None:
    found = objects(settings(**{"kuberay.hub_replicas": "3", "kuberay.data_volume_size": ""}))
    (hub,) = [c for c in found["Deployment"]["spec"]["template"]["spec"]["containers"]
              if c["name"] == "hub"]  # fmt: skip
    env = {e["name"]: e["value"] for e in hub["env"]}
    assert env["NEVE_INSTANCES"] == "3"
    # The database comes from the Secret; each pod refuses to start without PostgreSQL.
    with pytest.raises(ConfigError, match="database_url"):
        load_settings(environ=env)
    with pytest.raises(ConfigError, match=r"kuberay\.hub_replicas \(3\).*PostgreSQL"):
        kuberay.manifest(settings(**{"kuberay.hub_replicas": "3", "kuberay.data_volume_size": "",
                                     "database_url": "sqlite:////data/neve.db"}))  # fmt: skip


def test_neve_deploy_kuberay_writes_the_manifest_or_refuses_with_one_line(tmp_path: Path) -> None:
    target = tmp_path / "neve.yaml"
    ran = neve("deploy", "kuberay", "-o", str(target), "--set", "kuberay.namespace=llm")
    assert ran.returncode == 0, ran.stderr
    docs = list(yaml.safe_load_all(target.read_text()))
    assert [d["kind"] for d in docs] == ["PersistentVolumeClaim", "RayService", "Deployment",
                                         "Service"]  # fmt: skip
    assert {d["metadata"]["namespace"] for d in docs} == {"llm"}

    refused = neve("deploy", "kuberay", "--set", "kuberay.worker_cpu=500m")
    assert refused.returncode == 2
    assert "kuberay.worker_cpu" in refused.stderr and "Traceback" not in refused.stderr


def test_config_show_lists_the_kuberay_settings() -> None:
    shown = neve("config", "show", "--set", "kuberay.image=reg.example/neve:ray")
    assert shown.returncode == 0, shown.stderr
    row = next(line for line in shown.stdout.splitlines() if "kuberay.image" in line)
    assert "reg.example/neve:ray" in row
    assert "ray_deploy" in shown.stdout
