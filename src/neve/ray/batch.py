"""`neve batch --ray`: the same job as `neve batch` (batch.py: the checkpoint, the resume,
the output), with the rows answered by Ray Data workers spread over the cluster, each
calling the hub (which spreads them over its replicas).

Workers reserve a fraction of a CPU each (`cpus_per_worker`): they wait on HTTP, and on a
small machine an actor pool asking for whole CPUs the replicas hold waits forever."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast

import pyarrow as pa
import ray
import ray.data
from ray.exceptions import RayTaskError

from neve.batch import Answers, BatchJob, answer
from neve.client import NeveClient


class _Answerer:
    """A Ray Data worker: answers a batch of rows, `job.concurrency` at once."""

    def __init__(self, client: NeveClient, job: BatchJob) -> None:
        self.client, self.job = client, job
        self.pool = ThreadPoolExecutor(job.concurrency)

    def __call__(self, rows: pa.Table) -> pa.Table:
        prompts = rows.column("prompt").to_pylist()
        records = list(self.pool.map(lambda p: answer(self.client, self.job, p), prompts))
        numbers = rows.column("row").to_pylist()
        return pa.Table.from_pylist(
            [{"row": row, **record} for row, record in zip(numbers, records, strict=True)]
        )


def answers(client: NeveClient, *, workers: int = 2, cpus_per_worker: float = 0.25) -> Answers:
    """Rows answered on the cluster this process has joined (ray.init), `workers` Ray Data
    actors each running `job.concurrency` requests."""

    def answered(job: BatchJob, prompts: list[Any], todo: list[int]) -> Iterator[dict[str, Any]]:
        if not todo:
            return
        rows = pa.table({"row": pa.array(todo, pa.int64()),
                         "prompt": pa.array([prompts[i] for i in todo])})  # fmt: skip
        # Blocks of one batch each, made here (no task that would need a whole CPU), so
        # rows come back, and reach the checkpoint, batch by batch.
        size = job.concurrency
        blocks = [rows.slice(start, size) for start in range(0, rows.num_rows, size)]
        dataset = ray.data.from_arrow(blocks)
        done = dataset.map_batches(
            _Answerer,
            fn_constructor_kwargs={"client": client, "job": job},
            batch_size=job.concurrency,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=cpus_per_worker,
        )
        try:
            for batch in done.iter_batches(batch_size=None, batch_format="pyarrow"):
                yield from cast(pa.Table, batch).to_pylist()
        except RayTaskError as exc:  # the hub failed a row: its own error, as without Ray
            raise exc.cause if isinstance(exc.cause, Exception) else exc from None

    return answered
