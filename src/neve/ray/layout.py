"""How one vLLM replica spreads over GPUs and nodes: tensor_parallel_size x
pipeline_parallel_size ranks, each a bundle of one GPU (and `ray_cpus_per_gpu` CPUs) in a
Ray placement group, after a first bundle for the replica's own actor (Serve puts the
replica in the group's first bundle; vLLM's Ray executor places its ranks in the rest).

vLLM's guidance, which the checks follow: tensor parallel within a node (its all-reduce
runs every layer and wants NVLink), pipeline parallel across nodes (one hand-off per
stage). A layout that cannot fit the nodes it will run on is refused before anything is
deployed, naming the settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neve.config import Settings
from neve.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    tensor: int
    pipeline: int

    @property
    def gpus(self) -> int:
        return self.tensor * self.pipeline

    def __str__(self) -> str:
        return f"tensor_parallel_size={self.tensor} x pipeline_parallel_size={self.pipeline}"


def layout(settings: Settings) -> Layout | None:
    """The replica's layout, or None where it is one process on at most one GPU."""
    if settings.ray_engine != "vllm":
        return None
    shape = Layout(settings.tensor_parallel_size, settings.pipeline_parallel_size)
    return shape if shape.gpus > 1 else None


def placement(settings: Settings) -> dict[str, Any]:
    """Serve's deployment options that place a spread replica: its bundles and strategy
    (none for a replica on one GPU or none)."""
    shape = layout(settings)
    if shape is None:
        return {}
    rank = {"CPU": settings.ray_cpus_per_gpu, "GPU": 1.0}
    return {
        "placement_group_bundles": [{"CPU": settings.ray_num_cpus}] + [rank] * shape.gpus,
        "placement_group_strategy": settings.ray_placement_strategy,
    }


def suggested(gpus: int, per_node: int) -> Layout:
    """vLLM's layout for `gpus` on nodes of `per_node`: a node's GPUs in tensor parallel,
    the nodes in pipeline parallel (8 GPUs on 4-GPU nodes: TP 4 x PP 2)."""
    tensor = min(gpus, per_node)
    while gpus % tensor:
        tensor -= 1
    return Layout(tensor, gpus // tensor)


def check(settings: Settings, nodes: list[int], where: str) -> None:
    """Refuse a layout the nodes (GPUs of each, as many as may run) cannot hold."""
    shape = layout(settings)
    if shape is None:
        return
    per_node = max(nodes, default=0)
    if shape.gpus > sum(nodes):
        raise ConfigError(
            f"{shape} needs {shape.gpus} GPUs per replica, but {where} holds "
            f"{sum(nodes)} ({len(nodes)} nodes): lower them, or add nodes"
        )
    if settings.ray_placement_strategy == "STRICT_PACK" and shape.gpus > per_node:
        raise ConfigError(
            f"ray_placement_strategy STRICT_PACK puts a replica on one node, but {shape} "
            f"needs {shape.gpus} GPUs and a node of {where} has {per_node}"
        )
    if shape.tensor > per_node and not settings.ray_tp_across_nodes:
        better = suggested(shape.gpus, per_node)
        raise ConfigError(
            f"tensor_parallel_size={shape.tensor} is more GPUs than a node of {where} has "
            f"({per_node}): tensor parallel across nodes runs its all-reduce over the "
            f"network every layer. Use {better} (vLLM's layout), or set "
            "ray_tp_across_nodes=true to spread it anyway"
        )
