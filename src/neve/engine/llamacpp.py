"""The in-process engine: a GGUF model served by continuous batching (batching.py)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neve.config import Settings
from neve.engine import catalog, ggml, structured, tools
from neve.engine.base import EngineState, EngineStatus, ModelCard, check_model
from neve.engine.batching import LlamaModel, Logprob, Output, Sampling, Scheduler, Sequence
from neve.engine.chat_template import ChatTemplate
from neve.engine.reasoning import OPEN, ReasoningSplitter
from neve.engine.replies import ChatStream, CompletionStream
from neve.errors import (
    BadRequest,
    ContextTooLong,
    ModelNotFound,
    NeveError,
    NotReady,
    TokenOutOfRange,
)
from neve.protocol.openai import (
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatLogprobs,
    ChunkChoice,
    CompletionChoice,
    CompletionChunk,
    CompletionLogprobs,
    CompletionRequest,
    Delta,
    EmbeddingRequest,
    FunctionCallDelta,
    SamplingFields,
    TokenLogprob,
    ToolCallDelta,
    TopLogprob,
    Usage,
    new_id,
    now,
)

log = logging.getLogger("neve.engine")


@dataclass
class _Choice:
    """One sequence of a request, as the event loop sees it."""

    index: int
    seq: Sequence
    prompt_tokens: int
    done: bool = False


@dataclass
class _Admitted:
    """A request's sequences, queued in the scheduler, and where their outputs arrive."""

    choices: list[_Choice]
    outputs: asyncio.Queue[tuple[int, Output]]


class LlamaCppEngine:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.name = settings.served_model_name or catalog.display_name(settings.model)
        self._status = EngineStatus(EngineState.LOADING, "starting")
        self._model: LlamaModel | None = None
        self._scheduler: Scheduler | None = None
        self._template: ChatTemplate | None = None

    # --- lifecycle ---------------------------------------------------------------------

    def status(self) -> EngineStatus:
        return self._status

    def models(self) -> list[ModelCard]:
        return [ModelCard(self.name, max_model_len=self.settings.max_model_len)]

    @property
    def weight_buffers(self) -> dict[str, float]:
        """Where llama.cpp put the model's weights: buffer type -> MiB (empty until loaded)."""
        return dict(self._model.weight_buffers) if self._model else {}

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await asyncio.to_thread(self._load, functools.partial(_post, loop))
        except Exception as exc:
            reason = exc.message if isinstance(exc, NeveError) else str(exc)
            self._status = EngineStatus(EngineState.FAILED, reason)
            raise
        self._status = EngineStatus(EngineState.READY, f"serving {self.name}")

    def _load(self, post: Callable[[Callable[[], None]], None]) -> None:
        s = self.settings
        self._status = EngineStatus(EngineState.LOADING, f"resolving model {s.model}")
        token = s.hf_token.get_secret_value() if s.hf_token else None
        resolved = catalog.resolve(
            s.model, model_file=s.model_file, models_dir=s.models_path, hf_token=token
        )
        self._status = EngineStatus(EngineState.LOADING, f"loading {resolved.path.name}")
        cpu = ggml.cpu_backend()
        model = LlamaModel(
            resolved.path,
            n_seq=s.max_num_seqs,
            n_cells=s.kv_cache_tokens,
            n_batch=s.prefill_chunk + s.max_num_seqs,
            n_threads=s.n_threads or os.cpu_count() or 1,
            weight_repack=s.weight_repack,
        )
        self._template = ChatTemplate(
            _template_source(s.chat_template) or model.metadata("tokenizer.chat_template"),
            bos_token=model.piece(model.bos, special=True).decode("utf-8", "replace"),
            eos_token=model.piece(model.eos, special=True).decode("utf-8", "replace"),
        )
        self._scheduler = Scheduler(
            model,
            max_seqs=s.max_num_seqs,
            max_queue=s.max_queue,
            prefill_chunk=s.prefill_chunk,
            max_model_len=s.max_model_len,
            post=post,
            prefix_cache=s.prefix_cache,
            prefix_cache_bytes=s.prefix_cache_mib << 20,
        )
        self._scheduler.start()
        self._model = model
        log.info(
            "model loaded",
            extra={
                "model": self.name,
                "path": str(resolved.path),
                "cpu_variant": cpu.variant,
                "cpu_features": " ".join(cpu.features),
                "extra_buffers": " ".join(cpu.extra_buffers),
                "weight_repack": s.weight_repack,
                "weight_buffers_mib": {k: round(v, 1) for k, v in model.weight_buffers.items()},
            },
        )

    async def close(self) -> None:
        self._status = EngineStatus(EngineState.STOPPED, "shut down")
        if self._scheduler is not None:
            await asyncio.to_thread(self._scheduler.stop)
        if self._model is not None:
            self._model.close()
        self._scheduler = self._model = None

    def load(self) -> tuple[int, int]:
        """(running, waiting) sequences."""
        return self._scheduler.load() if self._scheduler else (0, 0)

    # --- requests ----------------------------------------------------------------------

    def _ready(self, request: SamplingFields) -> tuple[LlamaModel, Scheduler]:
        check_model(request.model, self.name)
        unsupported = request.unsupported()
        if unsupported:
            raise BadRequest(f"{unsupported} is not supported by this server", param=unsupported)
        if self._model is None or self._scheduler is None:
            raise NotReady(f"the model is not ready: {self._status.detail}")
        return self._model, self._scheduler

    async def chat(self, request: ChatCompletionRequest) -> ChatStream:
        model, scheduler = self._ready(request)
        tokens, prompt, grammar, calling = self._prompt(model, request)
        # Templates of DeepSeek-R1-style models open the think block in the prompt; a
        # grammar leaves no room for one.
        thinking = (
            self.settings.reasoning_split and grammar is None and prompt.rstrip().endswith(OPEN)
        )
        admitted = self._admit(scheduler, [tokens], request, request.token_limit(), grammar)
        return self._chat_stream(admitted, thinking, calling)

    async def count_tokens(self, request: ChatCompletionRequest) -> int:
        """The prompt tokens `request` would take, its tools' instructions included."""
        model, _ = self._ready(request)
        return len(self._prompt(model, request)[0])

    def _prompt(
        self, model: LlamaModel, request: ChatCompletionRequest
    ) -> tuple[list[int], str, str | None, bool]:
        """The request's prompt as tokens and text, the grammar its answer must follow,
        and whether it may call tools."""
        assert self._template is not None
        as_json, schema = structured.response_schema(request.response_format)
        calling = tools.active(request)
        if calling:
            if as_json:
                raise BadRequest(
                    "response_format cannot be combined with tools here: the answer's form "
                    "is the tool-call JSON",
                    param="response_format",
                    code="conflicting_fields",
                )
            messages = tools.messages(request)
            grammar: str | None = structured.grammar(tools.answer_schema(request), "tools")
        else:
            messages = [{"role": m.template_role(), "content": m.text()} for m in request.messages]
            grammar = structured.grammar(schema) if as_json else None
        prompt = self._template.render(messages)
        tokens = model.tokenize(prompt, add_special=False)
        if model.adds_bos and (not tokens or tokens[0] != model.bos):
            tokens.insert(0, model.bos)
        return tokens, prompt, grammar, calling

    async def complete(self, request: CompletionRequest) -> CompletionStream:
        model, scheduler = self._ready(request)
        prompts = [
            p if isinstance(p, list) else model.tokenize(p, add_special=True)
            for p in request.prompts()
        ]
        if not prompts:
            raise BadRequest("prompt must hold at least one prompt", param="prompt")
        vocab = model.n_vocab
        if any(t < 0 or t >= vocab for p in prompts for t in p):
            raise TokenOutOfRange(f"prompt token ids must be in [0, {vocab})", param="prompt")
        admitted = self._admit(scheduler, prompts, request, request.token_limit())
        echoes = [model.detokenize(p) if request.echo else "" for p in prompts]
        return self._completion_stream(admitted, echoes, request.n)

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        raise ModelNotFound.embedding(request.model)

    def _admit(
        self,
        scheduler: Scheduler,
        prompts: list[list[int]],
        request: ChatCompletionRequest | CompletionRequest,
        max_tokens: int | None,
        grammar: str | None = None,
    ) -> _Admitted:
        limit = self.settings.max_model_len
        for tokens in prompts:
            if not tokens:
                # Text of characters the tokenizer drops (control characters, say).
                raise BadRequest(
                    "the prompt has no tokens: its text holds nothing the tokenizer keeps",
                    param="prompt",
                    code="empty_prompt",
                )
            wanted = len(tokens) + (max_tokens or 1)
            if wanted > limit:
                asked = f" and {max_tokens} for the completion" if max_tokens else ""
                raise ContextTooLong(
                    f"this model's maximum context length is {limit} tokens, but the request "
                    f"needs {wanted}: {len(tokens)} in the prompt{asked}",
                    param="messages" if isinstance(request, ChatCompletionRequest) else "prompt",
                )
        queue: asyncio.Queue[tuple[int, Output]] = asyncio.Queue()
        choices = []
        for p, tokens in enumerate(prompts):
            for j in range(request.n):
                index = p * request.n + j
                seed = None if request.seed is None else request.seed + j
                sampling = Sampling(
                    max_tokens=max_tokens or limit - len(tokens),
                    temperature=request.temperature,
                    top_p=request.top_p,
                    top_k=request.top_k,
                    seed=seed,
                    presence_penalty=request.presence_penalty,
                    frequency_penalty=request.frequency_penalty,
                    stops=tuple(request.stop),
                    ignore_eos=request.ignore_eos,
                    grammar=grammar,
                    logprobs=request.logprobs_asked(),
                )
                seq = Sequence(tokens, sampling, functools.partial(_deliver, queue, index))
                choices.append(_Choice(index, seq, len(tokens) if j == 0 else 0))
        try:
            scheduler.submit([c.seq for c in choices])  # raises Overloaded beyond the queue
        except ValueError as exc:
            raise BadRequest(f"cannot sample this request: {exc}") from None
        return _Admitted(choices, queue)

    async def _outputs(self, admitted: _Admitted) -> AsyncIterator[tuple[_Choice, Output]]:
        """Every choice's outputs as they come; cancels what is left if the reader stops."""
        choices = admitted.choices
        by_index = {c.index: c for c in choices}
        remaining = len(choices)
        try:
            while remaining:
                index, out = await admitted.outputs.get()
                choice = by_index[index]
                if out.finish_reason is not None:
                    choice.done = True
                    remaining -= 1
                if out.error:
                    raise NeveError(out.error)
                yield choice, out
        finally:
            if self._scheduler is not None:
                for c in choices:
                    if not c.done:
                        self._scheduler.cancel(c.seq)

    async def _chat_stream(self, admitted: _Admitted, thinking: bool, calling: bool) -> ChatStream:
        rid, created, spent = new_id("chatcmpl"), now(), _Spent(admitted)

        def chunk(
            index: int, delta: Delta, finish: str | None = None, lps: list[Logprob] | None = None
        ) -> ChatCompletionChunk:
            logprobs = ChatLogprobs(content=[self._logprob(p) for p in lps]) if lps else None
            return ChatCompletionChunk(
                id=rid,
                created=created,
                model=self.name,
                choices=[
                    ChunkChoice(index=index, delta=delta, logprobs=logprobs, finish_reason=finish)
                ],
                usage=spent.usage(),
            )

        split = self.settings.reasoning_split
        splitters = {c.index: ReasoningSplitter(in_reasoning=thinking) for c in admitted.choices}
        # A tool-calling answer is JSON to parse whole: held until it ends.
        held: dict[int, tuple[list[str], list[Logprob]]] = {
            c.index: ([], []) for c in admitted.choices
        }
        for c in admitted.choices:
            yield chunk(c.index, Delta(role="assistant", content=""))
        async for choice, out in self._outputs(admitted):
            spent.generated[choice.index] = out.completion_tokens
            final = out.finish_reason is not None
            if calling:
                text, lps = held[choice.index]
                text.append(out.text)
                lps += out.logprobs
                if final:
                    delta, finish = _tool_answer("".join(text), out.finish_reason)
                    yield chunk(choice.index, delta, None, lps)
                    yield chunk(choice.index, Delta(), finish)
                continue
            splitter = splitters[choice.index]
            reasoning, content = splitter.feed(out.text, final=final) if split else ("", out.text)
            if reasoning or content or out.logprobs:
                yield chunk(
                    choice.index,
                    Delta(content=content or None, reasoning_content=reasoning or None),
                    None,
                    out.logprobs,
                )
            if final:
                yield chunk(choice.index, Delta(), out.finish_reason)
        yield ChatCompletionChunk(
            id=rid, created=created, model=self.name, choices=[], usage=spent.usage()
        )

    async def _completion_stream(
        self, admitted: _Admitted, echoes: list[str], n: int
    ) -> CompletionStream:
        rid, created, spent = new_id("cmpl"), now(), _Spent(admitted)
        offsets = {c.index: len(echoes[c.index // n]) for c in admitted.choices}

        def chunk(
            index: int, text: str, finish: str | None = None, lps: list[Logprob] | None = None
        ) -> CompletionChunk:
            logprobs = self._completion_logprobs(lps, offsets, index) if lps else None
            return CompletionChunk(
                id=rid,
                created=created,
                model=self.name,
                choices=[
                    CompletionChoice(
                        index=index, text=text, logprobs=logprobs, finish_reason=finish
                    )
                ],
                usage=spent.usage(),
            )

        for c in admitted.choices:
            echo = echoes[c.index // n]
            if echo:
                yield chunk(c.index, echo)
        async for choice, out in self._outputs(admitted):
            spent.generated[choice.index] = out.completion_tokens
            if out.text or out.finish_reason or out.logprobs:
                yield chunk(choice.index, out.text, out.finish_reason, out.logprobs)
        yield CompletionChunk(
            id=rid, created=created, model=self.name, choices=[], usage=spent.usage()
        )

    def _token(self, token: int) -> tuple[str, list[int]]:
        assert self._model is not None
        data = self._model.piece(token)
        return data.decode("utf-8", "replace"), list(data)

    def _logprob(self, p: Logprob) -> TokenLogprob:
        text, data = self._token(p.token)
        top = []
        for token, logprob in p.top:
            t, b = self._token(token)
            top.append(TopLogprob(token=t, logprob=logprob, bytes=b))
        return TokenLogprob(token=text, logprob=p.logprob, bytes=data, top_logprobs=top)

    def _completion_logprobs(
        self, lps: list[Logprob], offsets: dict[int, int], index: int
    ) -> CompletionLogprobs:
        out = CompletionLogprobs()
        for p in lps:
            text = self._token(p.token)[0]
            out.tokens.append(text)
            out.token_logprobs.append(p.logprob)
            out.top_logprobs.append({self._token(t)[0]: lp for t, lp in p.top})
            out.text_offset.append(offsets[index])
            offsets[index] += len(text)
        return out


def _tool_answer(text: str, finish: str | None) -> tuple[Delta, str | None]:
    """A whole tool-calling answer as one delta: its calls, or its content."""
    content, calls = tools.parse(text)
    if not calls:
        return Delta(content=content or None), finish
    deltas = [
        ToolCallDelta(index=i, id=c.id, type="function",
                      function=FunctionCallDelta(name=c.function.name,
                                                 arguments=c.function.arguments))
        for i, c in enumerate(calls)
    ]  # fmt: skip
    return Delta(tool_calls=deltas), "tool_calls"


class _Spent:
    """A request's usage so far. Every chunk carries it, so whoever reads the stream knows
    what an answer cost even when it is stopped part-way (the api shows it to clients on
    the closing chunk only, as OpenAI does)."""

    def __init__(self, admitted: _Admitted) -> None:
        self.prompt = sum(c.prompt_tokens for c in admitted.choices)
        self.generated: dict[int, int] = {}
        self._firsts = [c.seq for c in admitted.choices if c.prompt_tokens]

    def usage(self) -> Usage:
        cached = sum(seq.cached for seq in self._firsts)
        return Usage.of(self.prompt, sum(self.generated.values()), cached)


def _template_source(setting: str | None) -> str | None:
    if setting and "{" not in setting:
        path = Path(setting).expanduser()
        if not path.is_file():
            raise BadRequest(f"chat_template: no such file {path}")
        return path.read_text(encoding="utf-8")
    return setting


def _deliver(queue: asyncio.Queue[tuple[int, Output]], index: int, out: Output) -> None:
    queue.put_nowait((index, out))


def _post(loop: asyncio.AbstractEventLoop, call: Callable[[], None]) -> None:
    """Run `call` on `loop`, from the batching thread; a closed loop has nobody waiting."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(call)
