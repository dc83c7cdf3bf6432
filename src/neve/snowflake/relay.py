"""The model as a SQL function: Snowflake's external / service function batch protocol.

A batch is `{"data": [[row_index, arg1, ...], ...]}`; the answer is
`{"data": [[row_index, result], ...]}`, one row per input row with the same indices.
Rows run concurrently (bounded), so one batch keeps the engine's batch full. Snowflake
retries a batch on 429 and 5xx with the same batch id, so a batch id seen again within
a TTL gets the stored answer instead of a recomputation.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neve.engine.base import Engine
from neve.engine.replies import chat_result
from neve.errors import BadRequest, Overloaded
from neve.protocol.openai import (
    ChatCompletionRequest,
    ChatMessage,
    Usage,
    check_response_format,
    lone_surrogate,
)
from neve.rag.embedder import Embedder
from neve.snowflake import ai
from neve.snowflake.ai import RowError

log = logging.getLogger("neve.relay")

Row = list[Any]


class RelayError(BadRequest):
    """A malformed batch: the message names the problem (and the row, where there is one)."""


@dataclass(frozen=True)
class Batch:
    rows: list[Row]
    query_id: str | None = None
    batch_id: str | None = None
    digest: str = ""


def parse_batch(
    body: bytes, *, max_rows: int, arity: Sequence[int], query_id: str | None = None,
    batch_id: str | None = None,
) -> Batch:  # fmt: skip
    """Validate a batch's shape; `arity` lists the accepted argument counts."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RelayError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RelayError("the body nests arrays or objects too deeply to be a batch") from None
    if not isinstance(data, dict) or "data" not in data:
        raise RelayError('the body must be a JSON object with a "data" array')
    rows = data["data"]
    if not isinstance(rows, list):
        raise RelayError('"data" must be an array of rows')
    if len(rows) > max_rows:
        raise RelayError(
            f"the batch has {len(rows)} rows; the limit is {max_rows} (setting relay_max_rows)"
        )
    seen: set[int] = set()
    for n, row in enumerate(rows):
        if not isinstance(row, list) or not row:
            raise RelayError(f"row {n} must be an array [row_index, arguments...]")
        index = row[0]
        if isinstance(index, bool) or not isinstance(index, int):
            raise RelayError(f"row {n}: the row index must be an integer, got {index!r}")
        if index in seen:
            raise RelayError(f"row index {index} appears more than once")
        seen.add(index)
        if len(row) - 1 not in arity:
            forms = " or ".join(str(a) for a in arity)
            raise RelayError(f"row {n}: expected {forms} arguments, got {len(row) - 1}")
        bad = _lone_surrogate(row)
        if bad is not None:
            raise RelayError(
                f"row {n}: text holds a lone surrogate ({bad!r}); text must be valid Unicode"
            )
    return Batch(rows, query_id, batch_id, hashlib.sha256(body).hexdigest())


def _lone_surrogate(row: Row) -> str | None:
    """The first lone UTF-16 surrogate in any string of the row (JSON allows "\\ud800";
    no tokenizer can encode it). A loop, not recursion: arguments may nest deeply."""
    stack: list[Any] = [row]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            at = lone_surrogate(item)
            if at is not None:
                return item[at]
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
    return None


class RowOptions(BaseModel):
    """COMPLETE's options object (Cortex names)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float = Field(0.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    system: str | None = None
    # Cortex's {"type": "json", "schema": {...}}, held as OpenAI's, which is taken too.
    response_format: dict[str, Any] | None = None

    @field_validator("response_format")
    @classmethod
    def _openai_form(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and value.get("type") == "json":
            schema = value.get("schema", {})
            value = {"type": "json_schema", "json_schema": {"name": "row", "schema": schema}}
        return check_response_format(value)


def _options(raw: Any) -> RowOptions:
    if raw is None:
        return RowOptions()
    raw = ai.parsed(raw, "options")  # a VARCHAR holding JSON, as SQL engines often pass it
    if not isinstance(raw, dict):
        raise RowError("options must be an object")
    try:
        return RowOptions(**raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise RowError(f"options.{where}: {err['msg']}") from None


def _messages(prompt: Any, system: str | None) -> list[ChatMessage]:
    head = [ChatMessage(role="system", content=system)] if system else []
    if isinstance(prompt, str):
        return [*head, ChatMessage(role="user", content=prompt)]
    if isinstance(prompt, list):  # Cortex's conversation form: [{role, content}, ...]
        if not prompt:
            raise RowError("a prompt array must hold at least one message")
        try:
            return [*head, *(ChatMessage(**m) for m in prompt)]
        except (TypeError, ValidationError):
            raise RowError("a prompt array must hold {role, content} objects") from None
    raise RowError(f"the prompt must be text, got {type(prompt).__name__}")


class BatchAnswers(Protocol):
    """Where batch answers are kept for Snowflake's retries: RetryCache in this process,
    or the database for a fleet of hub instances (neve.store.batches)."""

    async def answer(
        self, key: str | None, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], bool]: ...


@dataclass
class _Stored:
    expires: float
    answer: dict[str, Any]


@dataclass
class RetryCache:
    """Answers by batch, kept `ttl` seconds; a retry that arrives while the first attempt
    still runs waits for it instead of computing the batch twice."""

    ttl: float
    max_entries: int
    _done: OrderedDict[str, _Stored] = field(default_factory=OrderedDict)
    _running: dict[str, asyncio.Future[dict[str, Any]]] = field(default_factory=dict)

    async def answer(
        self, key: str | None, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], bool]:
        """(answer, whether it was a repeat)."""
        if key is None:
            return await compute(), False
        now = time.monotonic()
        while self._done and next(iter(self._done.values())).expires < now:
            self._done.popitem(last=False)
        if key in self._done:
            return self._done[key].answer, True
        if key in self._running:
            return await asyncio.shield(self._running[key]), True
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        try:
            answer = await compute()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a retry may or may not be waiting on it
            raise
        finally:
            del self._running[key]
        future.set_result(answer)
        self._done[key] = _Stored(time.monotonic() + self.ttl, answer)
        while len(self._done) > self.max_entries:
            self._done.popitem(last=False)
        return answer, False


@dataclass
class BatchReport:
    rows: int = 0
    nulls: int = 0
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Relay:
    def __init__(
        self,
        engine: Engine,
        embedder: Embedder,
        *,
        concurrency: int,
        max_tokens: int,
        on_row_error: Literal["null", "fail"],
        overload_wait: float,
        cache: BatchAnswers,
        context: int = 4096,
    ) -> None:
        """`context`: the tokens one request may hold, which AI_AGG groups rows within."""
        self.engine = engine
        self.embedder = embedder
        self.max_tokens = max_tokens
        self.on_row_error = on_row_error
        self.overload_wait = overload_wait
        self.cache = cache
        self.context = context
        self._slots = asyncio.Semaphore(concurrency)

    async def complete(self, batch: Batch, report: BatchReport) -> dict[str, Any]:
        """The batch's answer; `report` gets its counts and the tokens it cost (none for a
        batch answered from the retry cache), also when it is cancelled part-way."""
        return await self._answer("complete", batch, report, self._complete_all)

    async def embed(self, batch: Batch, report: BatchReport) -> dict[str, Any]:
        return await self._answer("embed", batch, report, self._embed_all)

    async def ai(self, name: str, batch: Batch, report: BatchReport) -> dict[str, Any]:
        """An AI function (neve.snowflake.ai) over the batch's rows."""

        async def compute(batch: Batch, report: BatchReport) -> list[Any]:
            if name == "similarity":
                return await self._similarity_all(batch, report)
            return await self._each(batch, report, lambda row: self._ai_row(name, row, report))

        return await self._answer(f"ai_{name}", batch, report, compute)

    async def _answer(
        self,
        kind: str,
        batch: Batch,
        report: BatchReport,
        compute: Callable[[Batch, BatchReport], Awaitable[list[Any]]],
    ) -> dict[str, Any]:
        key = f"{kind}:{batch.batch_id}:{batch.digest}" if batch.batch_id else None
        report.rows = len(batch.rows)
        started = time.perf_counter()

        async def answer() -> dict[str, Any]:
            results = await compute(batch, report)
            return {"data": [[row[0], r] for row, r in zip(batch.rows, results, strict=True)]}

        body, repeat = await self.cache.answer(key, answer)
        log.info(
            f"relay {kind} batch " + ("answered from the retry cache" if repeat else "done"),
            extra={"query_id": batch.query_id, "batch_id": batch.batch_id,
                   "latency_ms": round((time.perf_counter() - started) * 1000, 1),
                   **(report.__dict__ if not repeat else {"rows": report.rows})},
        )  # fmt: skip
        return body

    async def _complete_all(self, batch: Batch, report: BatchReport) -> list[str | None]:
        return await self._each(batch, report, lambda row: self._complete_row(row, report))

    async def _each(
        self, batch: Batch, report: BatchReport, answer: Callable[[Row], Awaitable[Any]]
    ) -> list[Any]:
        """Every row answered at once (within relay_concurrency); NULLs counted."""
        tasks = [asyncio.ensure_future(answer(row)) for row in batch.rows]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        report.nulls = sum(1 for r in results if r is None)
        return results

    async def _embed_all(self, batch: Batch, report: BatchReport) -> list[list[float] | None]:
        texts: dict[int, str] = {}
        for n, row in enumerate(batch.rows):
            if isinstance(row[1], str):
                texts[n] = row[1]
            elif row[1] is not None:
                self.row_failed(report, row[0], "the text must be a string")
        vectors: list[list[float]] = []
        if texts:
            vectors, report.prompt_tokens = await self.embedder.aencode_counted(
                list(texts.values())
            )
        by_row = dict(zip(texts, vectors, strict=True))
        results = [by_row.get(n) for n in range(len(batch.rows))]
        report.nulls = sum(1 for r in results if r is None)
        return results

    async def _ai_row(self, name: str, row: Row, report: BatchReport) -> Any:
        index, args = row[0], list(row[1:])
        try:
            if name == "agg":
                return await self._aggregate(args, report)
            build, _, may_be_null = ai.FUNCTIONS[name]
            if any(a is None for n, a in enumerate(args) if n not in may_be_null):
                return None  # SQL NULL in, NULL out
            task = build(args, self.max_tokens)
            return task.value(await self._run(task.request, report))
        except BadRequest as exc:  # the row's own RowError, or the engine refusing it
            self.row_failed(report, index, exc.message)
            return None

    async def _aggregate(self, args: list[Any], report: BatchReport) -> str | None:
        values, instruction = args
        values = ai.parsed(values, "the values")
        if not isinstance(values, list):
            raise RowError("AI_AGG's values must be an array (ARRAY_AGG of a column)")
        if instruction is None:
            return None
        kept = [v if isinstance(v, str) else json.dumps(v) for v in values if v is not None]
        if not kept:
            return None  # only NULLs: as AI_AGG over no rows
        instruction = ai.as_text(instruction, "the instruction")
        # The instruction, the prompt's own words and the answer take the rest.
        budget = max(64, (self.context - ai.count(instruction) - 64) * 3 // 4)
        return await ai.aggregate(kept, instruction, budget=budget, max_tokens=self.max_tokens,
                                  run=lambda r: self._run(r, report))  # fmt: skip

    async def _similarity_all(self, batch: Batch, report: BatchReport) -> list[float | None]:
        """AI_SIMILARITY(a, b): the cosine of the two texts' embeddings."""
        pairs = {n: (r[1], r[2]) for n, r in enumerate(batch.rows)
                 if isinstance(r[1], str) and isinstance(r[2], str)}  # fmt: skip
        for n, row in enumerate(batch.rows):
            if n not in pairs and row[1] is not None and row[2] is not None:
                self.row_failed(report, row[0], "both inputs must be text")
        scores: dict[int, float] = {}
        if pairs:
            texts = [t for pair in pairs.values() for t in pair]
            vectors, report.prompt_tokens = await self.embedder.aencode_counted(texts)
            for k, n in enumerate(pairs):
                a, b = vectors[2 * k], vectors[2 * k + 1]
                scores[n] = round(float(sum(x * y for x, y in zip(a, b, strict=True))), 6)
        results = [scores.get(n) for n in range(len(batch.rows))]
        report.nulls = sum(1 for r in results if r is None)
        return results

    def row_failed(self, report: BatchReport, index: int, reason: str) -> None:
        report.failed += 1
        if self.on_row_error == "fail":
            raise RelayError(f"row index {index}: {reason}")
        log.warning("relay row failed", extra={"row_index": index, "error": reason})

    async def _complete_row(self, row: Row, report: BatchReport) -> str | None:
        index, prompt = row[0], row[1]
        if prompt is None:
            return None  # SQL NULL in, NULL out
        try:
            options = _options(row[2] if len(row) > 2 else None)
            request = ChatCompletionRequest(
                model=options.model,
                messages=_messages(prompt, options.system),
                temperature=options.temperature,
                top_p=options.top_p,
                max_tokens=options.max_tokens or self.max_tokens,
            )
            if options.response_format is not None:
                request.response_format = options.response_format
            return await self._run(request, report)
        except BadRequest as exc:  # the row's own RowError, or the engine refusing it
            self.row_failed(report, index, exc.message)
            return None

    async def _run(self, request: ChatCompletionRequest, report: BatchReport) -> str:
        deadline = time.monotonic() + self.overload_wait
        spent = Usage()
        try:
            while True:
                try:
                    async with self._slots:
                        reply = await chat_result(await self.engine.chat(request), spent)
                except Overloaded:
                    # Other traffic fills the queue: wait for room, within limits, then
                    # let the whole batch answer 429 for Snowflake to retry later.
                    if time.monotonic() >= deadline:
                        raise
                    await asyncio.sleep(0.05)
                    continue
                return reply.choices[0].message.content or ""
        finally:
            report.prompt_tokens += spent.prompt_tokens
            report.completion_tokens += spent.completion_tokens
