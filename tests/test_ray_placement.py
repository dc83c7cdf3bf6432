"""One vLLM replica spread over GPUs and nodes (neve.ray.layout), on a real Ray cluster of
this machine: a head and two worker nodes each declaring 4 GPUs (Ray schedules by
declared resources; there is no GPU here, and vLLM is not started). Serve deploys a
replica with neve's own deployment options; the replica reports where its placement
group's bundles went."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

ray = pytest.importorskip("ray")  # the neve[ray] extra; `make test` installs it
from ray import serve  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402

from neve.config import Settings, load_settings  # noqa: E402
from neve.errors import ConfigError  # noqa: E402
from neve.ray import cluster as ray_cluster  # noqa: E402
from neve.ray.layout import check, suggested  # noqa: E402
from neve.ray.serve_config import deployment_options  # noqa: E402


@pytest.fixture(scope="module")
def workers() -> Iterator[list[str]]:
    """The two GPU nodes' ids."""
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1,
                      "include_dashboard": False})  # fmt: skip
    nodes = [cluster.add_node(num_cpus=8, num_gpus=4) for _ in range(2)]
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, namespace="neve-placement")
    yield [node.node_id for node in nodes]
    serve.shutdown()
    ray.shutdown()
    cluster.shutdown()


def spread(**values: Any) -> Settings:
    return load_settings({"engine": "ray", "ray_engine": "vllm", **values}, environ={})


class Where:
    """A stand-in for the replica's engine: it reports its placement group's bundles."""

    def nodes(self) -> dict[str, Any]:
        group = ray.util.get_current_placement_group()
        table = ray.util.placement_group_table(group)
        bundles = table["bundles"]
        return {"strategy": table["strategy"],
                "gpu_nodes": [table["bundles_to_node_id"][i] for i, b in bundles.items()
                              if b.get("GPU")]}  # fmt: skip


def placed(settings: Settings, app: str) -> dict[str, Any]:
    options = deployment_options(settings)
    options.pop("autoscaling_config")
    deployment = serve.deployment(name="Engine", num_replicas=1, **options)(Where)
    handle = serve.run(deployment.bind(), name=app, route_prefix=None, blocking=False)
    try:
        return handle.nodes.remote().result(timeout_s=120)  # type: ignore[no-any-return]
    finally:
        serve.delete(app)


def test_tp4_pp2_gets_four_gpus_on_each_of_two_nodes(workers: list[str]) -> None:
    settings = spread(tensor_parallel_size=4, pipeline_parallel_size=2)
    check(settings, ray_cluster.gpus_per_node(), "the Ray cluster")  # fits: no error
    where = placed(settings, "tp4pp2")
    assert where["strategy"] == "PACK"
    assert Counter(where["gpu_nodes"]) == {workers[0]: 4, workers[1]: 4}


def test_spread_puts_the_ranks_on_both_nodes(workers: list[str]) -> None:
    settings = spread(tensor_parallel_size=2, ray_placement_strategy="SPREAD")
    where = placed(settings, "spread")
    assert set(where["gpu_nodes"]) == set(workers)


def test_a_layout_the_nodes_cannot_hold_is_refused_by_its_settings(workers: list[str]) -> None:
    nodes = ray_cluster.gpus_per_node()
    assert sorted(nodes) == [0, 4, 4]
    with pytest.raises(ConfigError) as tp8:
        check(spread(tensor_parallel_size=8), nodes, "the Ray cluster")
    message = str(tp8.value)
    assert "tensor_parallel_size=8" in message and "ray_tp_across_nodes" in message
    assert "tensor_parallel_size=4 x pipeline_parallel_size=2" in message  # vLLM's layout
    check(spread(tensor_parallel_size=8, ray_tp_across_nodes=True), nodes, "the Ray cluster")
    with pytest.raises(ConfigError, match="needs 16 GPUs per replica"):
        check(spread(tensor_parallel_size=4, pipeline_parallel_size=4), nodes, "the cluster")
    with pytest.raises(ConfigError, match="STRICT_PACK"):
        check(spread(tensor_parallel_size=4, pipeline_parallel_size=2,
                     ray_placement_strategy="STRICT_PACK"), nodes, "the cluster")  # fmt: skip
    assert (suggested(8, 4).tensor, suggested(8, 4).pipeline) == (4, 2)
    assert (suggested(6, 4).tensor, suggested(6, 4).pipeline) == (3, 2)


def test_tp8_across_nodes_when_allowed_is_placed_4_plus_4(workers: list[str]) -> None:
    settings = spread(tensor_parallel_size=8, ray_tp_across_nodes=True)
    assert Counter(placed(settings, "tp8")["gpu_nodes"]) == {workers[0]: 4, workers[1]: 4}
