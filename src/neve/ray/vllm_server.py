"""vLLM's OpenAI server for a replica spread over a Ray placement group (ray/layout.py).

The replica's actor holds the group; vLLM's server is a child process, a Ray driver of its
own, which by itself would make a second group for its ranks and wait for GPUs the first
one holds. So the child is started through this module, which hands vLLM the replica's
group the way Ray Serve's LLM library does: as its parallel config's `placement_group`,
set on the engine config before the engine core (another process) receives it.

Run by the replica: python -m neve.ray.vllm_server <vLLM's server arguments>, with
NEVE_RAY_PLACEMENT_GROUP (the group's id, hex) and RAY_ADDRESS in its environment."""

from __future__ import annotations

import os
import runpy
import sys
from typing import Any

GROUP = "NEVE_RAY_PLACEMENT_GROUP"
SERVER = "vllm.entrypoints.openai.api_server"


def main() -> None:
    from ray._raylet import PlacementGroupID
    from ray.util.placement_group import PlacementGroup
    from vllm.engine.arg_utils import EngineArgs

    group = PlacementGroup(PlacementGroupID(bytes.fromhex(os.environ[GROUP])))
    made = EngineArgs.create_engine_config

    def in_group(self: EngineArgs, *args: Any, **kwargs: Any) -> Any:
        config = made(self, *args, **kwargs)
        config.parallel_config.placement_group = group
        return config

    EngineArgs.create_engine_config = in_group
    sys.argv = [SERVER, *sys.argv[1:]]
    runpy.run_module(SERVER, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
