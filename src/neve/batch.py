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
ARROW_TYPES = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(),
               "boolean": pa.bool_()}  # fmt: skip


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
    # A JSON schema the answers follow (structured output): its properties become columns.
    schema: dict[str, Any] | None = None

    def fields(self) -> dict[str, pa.DataType]:
        """The columns the schema's properties give, by their JSON type (objects, arrays
        and mixed types as JSON text)."""
        properties = (self.schema or {}).get("properties", {})
        return {name: ARROW_TYPES.get(str(spec.get("type")), pa.string())
                for name, spec in properties.items()}  # fmt: skip

    @property
    def checkpoint(self) -> Path:
        return self.output.with_name(self.output.name + ".partial.jsonl")


def read_schema(path: Path) -> dict[str, Any]:
    """A JSON schema from a file, for --schema."""
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BatchError(f"--schema {path}: cannot read it: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BatchError(f"--schema {path}: not JSON: {exc}") from None
    if not isinstance(schema, dict):
        raise BatchError(f"--schema {path}: a JSON schema is an object")
    return schema


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
    params: dict[str, Any] = {"max_tokens": job.max_tokens, "temperature": job.temperature}
    if job.schema is not None:
        row_schema = {"name": "row", "schema": job.schema}
        params["response_format"] = {"type": "json_schema", "json_schema": row_schema}
    for attempt in range(job.retries + 1):
        try:
            reply = client.chat(messages, **params)
        except HubError as exc:
            if exc.hub_status in (429, 503) and attempt < job.retries:
                time.sleep(min(2**attempt, 10))  # the hub asked us to come back
                continue
            if exc.hub_status is None or exc.hub_status >= 500:
                raise  # the hub itself is in trouble: stop, the checkpoint keeps the rest
            return {"completion": None, "error": str(exc), "prompt_tokens": 0,
                    "completion_tokens": 0}  # fmt: skip
        usage, choice = reply["usage"], reply["choices"][0]
        record = {
            "completion": choice["message"]["content"],
            "error": None,
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
        }
        if job.schema is not None:
            record.update(_fields(job, record["completion"], choice["finish_reason"]))
        return record
    raise AssertionError("unreachable")


def _fields(job: BatchJob, completion: str | None, finish: str | None) -> dict[str, Any]:
    """A structured answer's properties, for their columns (and JSON text for objects)."""
    try:
        answer = json.loads(completion or "")
    except json.JSONDecodeError:
        cut = " (cut at max_tokens)" if finish == "length" else ""
        return {"error": f"the answer is not JSON{cut}", "fields": {}}
    fields = {}
    for name, kind in job.fields().items():
        value = answer.get(name) if isinstance(answer, dict) else None
        text = kind == pa.string() and not isinstance(value, str) and value is not None
        fields[name] = json.dumps(value, ensure_ascii=False) if text else value
    return {"fields": fields}


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
    if job.schema is not None and not job.fields():
        raise BatchError("--schema: the schema must be an object with properties (they "
                         "become the output's columns)")  # fmt: skip
    clash = [c for c in (*RESULT_COLUMNS, *job.fields()) if c in table.column_names]
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
    for name, kind in job.fields().items():
        values = [(r.get("fields") or {}).get(name) for r in results]
        out = out.append_column(name, pa.array(values, type=kind))
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
