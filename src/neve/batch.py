"""Offline batch: a column of prompts in a CSV, Parquet or JSONL file, answered by a
running hub, written out beside every input column.

Each finished row is appended at once to a checkpoint (`<output>.partial.jsonl`), so a run
that is killed loses only the rows in flight, and a re-run skips what is done. The output
is written when every row is done, and the checkpoint then removed.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from neve.client import HubError, NeveClient
from neve.errors import BadRequest

FORMATS = (".csv", ".parquet", ".jsonl", ".ndjson")
RESULT_COLUMNS = ("completion", "error", "prompt_tokens", "completion_tokens")


class BatchError(BadRequest):
    """Input or output that cannot be used; the message says why."""


@dataclass(frozen=True)
class BatchJob:
    input: Path
    output: Path
    column: str = "prompt"
    system: str | None = None
    max_tokens: int = 256
    temperature: float = 0.0
    concurrency: int = 16
    retries: int = 5

    @property
    def checkpoint(self) -> Path:
        return self.output.with_name(self.output.name + ".partial.jsonl")


def _format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise BatchError(f"{path}: unsupported file type {suffix!r} (use {', '.join(FORMATS)})")
    return suffix


def read_table(path: Path) -> pa.Table:
    kind = _format(path)
    if not path.is_file():
        raise BatchError(f"{path}: no such file")
    try:
        if kind == ".csv":
            # An empty field is NULL, as DuckDB and Snowflake read it.
            convert = pa_csv.ConvertOptions(strings_can_be_null=True)
            return pa_csv.read_csv(path, convert_options=convert)
        if kind == ".parquet":
            return pq.read_table(path)
        return pa_json.read_json(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise BatchError(f"{path}: cannot read it as {kind[1:]}: {exc}") from None


def write_table(table: pa.Table, path: Path) -> None:
    kind = _format(path)
    tmp = path.with_name(path.name + ".tmp")
    if kind == ".csv":
        pa_csv.write_csv(table, tmp)
    elif kind == ".parquet":
        pq.write_table(table, tmp)
    else:
        with tmp.open("w", encoding="utf-8") as out:
            for record in table.to_pylist():
                out.write(json.dumps(record, default=str, ensure_ascii=False) + "\n")
    tmp.replace(path)  # never a half-written output


def load_checkpoint(path: Path) -> dict[int, dict[str, Any]]:
    """Rows already done; a last line cut short by a kill is ignored (and redone)."""
    done: dict[int, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[int(record["row"])] = record
    return done


def answer(client: NeveClient, job: BatchJob, prompt: Any) -> dict[str, Any]:
    """One row's answer: the columns it gets, or an error kept in its `error` column."""
    if prompt is None:
        return {"completion": None, "error": None, "prompt_tokens": 0, "completion_tokens": 0}
    messages = [{"role": "system", "content": job.system}] if job.system else []
    messages.append({"role": "user", "content": str(prompt)})
    for attempt in range(job.retries + 1):
        try:
            reply = client.chat(messages, max_tokens=job.max_tokens, temperature=job.temperature)
        except HubError as exc:
            if exc.hub_status in (429, 503) and attempt < job.retries:
                time.sleep(min(2**attempt, 10))  # the hub asked us to come back
                continue
            if exc.hub_status is None or exc.hub_status >= 500:
                raise  # the hub itself is in trouble: stop, the checkpoint keeps the rest
            return {"completion": None, "error": str(exc), "prompt_tokens": 0,
                    "completion_tokens": 0}  # fmt: skip
        usage = reply["usage"]
        return {
            "completion": reply["choices"][0]["message"]["content"],
            "error": None,
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
        }
    raise AssertionError("unreachable")


@dataclass
class _Plan:
    """A job checked against its input: the prompts, the rows done, those still to do."""

    table: pa.Table
    prompts: list[Any]
    done: dict[int, dict[str, Any]]
    todo: list[int]


def _plan(job: BatchJob) -> _Plan:
    table = read_table(job.input)
    if job.column not in table.column_names:
        raise BatchError(
            f"{job.input}: no column {job.column!r} (columns: {', '.join(table.column_names)})"
        )
    clash = [c for c in RESULT_COLUMNS if c in table.column_names]
    if clash:
        raise BatchError(f"{job.input}: already has column(s) {', '.join(clash)}")
    if job.output.exists() and not job.checkpoint.exists():
        raise BatchError(f"{job.output} exists; remove it or choose another output")
    _format(job.output)
    prompts = table.column(job.column).to_pylist()
    done = load_checkpoint(job.checkpoint)
    return _Plan(table, prompts, done, [i for i in range(len(prompts)) if i not in done])


# How rows get answered: given the job, its prompts and the rows to do, yield each row's
# record ({"row": i, **answer}) as it finishes, in any order.
Answers = Callable[[BatchJob, list[Any], list[int]], Iterator[dict[str, Any]]]


def run(
    job: BatchJob,
    client: NeveClient,
    *,
    on_start: Callable[[int, int], None] = lambda total, done: None,
    on_row: Callable[[], None] = lambda: None,
    answers: Answers | None = None,
) -> pa.Table:
    """Answer every row not yet in the checkpoint (by `answers`, or threads of this
    process calling `client`), then write the output."""
    plan = _plan(job)
    on_start(len(plan.prompts), len(plan.done))
    answered = answers or functools.partial(_on_threads, client)
    with job.checkpoint.open("a", encoding="utf-8") as checkpoint:
        for record in answered(job, plan.prompts, plan.todo):
            checkpoint.write(json.dumps(record, ensure_ascii=False) + "\n")
            checkpoint.flush()
            plan.done[record["row"]] = record
            on_row()

    results = [plan.done[i] for i in range(len(plan.prompts))]
    out = plan.table
    for name, kind in zip(RESULT_COLUMNS, (pa.string(), pa.string(), pa.int64(), pa.int64()),
                          strict=True):  # fmt: skip
        out = out.append_column(name, pa.array([r[name] for r in results], type=kind))
    write_table(out, job.output)
    job.checkpoint.unlink()
    return out


def _on_threads(
    client: NeveClient, job: BatchJob, prompts: list[Any], todo: list[int]
) -> Iterator[dict[str, Any]]:
    with ThreadPoolExecutor(job.concurrency) as pool:
        pending: dict[Future[dict[str, Any]], int] = {}
        rows = iter(todo)
        try:
            while True:
                for row in rows:
                    pending[pool.submit(answer, client, job, prompts[row])] = row
                    if len(pending) >= job.concurrency:
                        break
                if not pending:
                    return
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    yield {"row": pending.pop(future), **future.result()}
        finally:
            for future in pending:
                future.cancel()
