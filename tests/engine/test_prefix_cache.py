"""The prefix cache, at the scheduler, with the shipped model: finished answers' cells are
copied out of the context to host memory (so running sequences attend over their own
cells only) and copied back for a prompt that starts alike, within a bound in bytes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import llama_cpp as lc
import pytest

from neve.engine import catalog
from neve.engine.batching import LlamaModel, Output, Sampling, Scheduler, Sequence

SLOTS = 4


@pytest.fixture(scope="module")
def model() -> Iterator[LlamaModel]:
    path = catalog.resolve("smollm2", model_file=None, models_dir=Path("unused")).path
    loaded = LlamaModel(path, n_seq=SLOTS, n_cells=4096, n_batch=256 + SLOTS, n_threads=2)
    yield loaded
    loaded.close()


@pytest.fixture
def scheduler(model: LlamaModel, request: pytest.FixtureRequest) -> Iterator[Scheduler]:
    bound = getattr(request, "param", 2 << 30)
    running = Scheduler(model, max_seqs=SLOTS, max_queue=8, prefill_chunk=256,
                        max_model_len=2048, post=lambda call: call(),
                        prefix_cache_bytes=bound)  # fmt: skip
    running.start()
    yield running
    running.stop()


def _answer(scheduler: Scheduler, model: LlamaModel, prompt: str) -> tuple[str, int]:
    """The greedy answer to `prompt` and the prompt tokens read from the cache."""
    done = threading.Event()
    outputs: list[Output] = []

    def on_output(out: Output) -> None:
        outputs.append(out)
        if out.finish_reason is not None:
            done.set()

    seq = Sequence(model.tokenize(prompt, add_special=True),
                   Sampling(max_tokens=16, temperature=0), on_output)  # fmt: skip
    scheduler.submit([seq])
    assert done.wait(60), "no answer within a minute"
    assert outputs[-1].error is None, outputs[-1].error
    return "".join(o.text for o in outputs), seq.cached


def _cells_in_context(model: LlamaModel) -> list[int]:
    """The highest position each slot holds in the context (-1: none)."""
    return [lc.llama_memory_seq_pos_max(model.memory, slot) for slot in range(SLOTS)]


PROMPT = "Counting: 41, 42, 43, 44,"


def test_finished_answers_leave_the_context_and_come_back_for_a_prompt_alike(
    scheduler: Scheduler, model: LlamaModel
) -> None:
    first, cached = _answer(scheduler, model, PROMPT)
    assert cached == 0
    assert _cells_in_context(model) == [-1] * SLOTS  # saved outside, not kept inside
    again, cached = _answer(scheduler, model, PROMPT)
    prompt_tokens = len(model.tokenize(PROMPT, add_special=True))
    assert cached == prompt_tokens - 1  # all but the last, read again for its logits
    assert again == first
    # A longer prompt that starts with the first answer (a chat's next turn) reads it all.
    follow = PROMPT + first + " 60,"
    _, cached = _answer(scheduler, model, follow)
    assert cached >= prompt_tokens + 8
    assert _cells_in_context(model) == [-1] * SLOTS


@pytest.mark.parametrize("scheduler", [1], indirect=True)
def test_the_cache_holds_no_more_than_its_bound(scheduler: Scheduler, model: LlamaModel) -> None:
    first, _ = _answer(scheduler, model, PROMPT)
    again, cached = _answer(scheduler, model, PROMPT)
    assert cached == 0  # one byte holds no answer's cells: computed afresh
    assert again == first


@pytest.mark.parametrize("scheduler", [1 << 20], indirect=True)
def test_beyond_the_bound_the_least_recently_used_goes(
    scheduler: Scheduler, model: LlamaModel
) -> None:
    # One answer's cells here take about 0.7 MiB (28 tokens of ~23 KiB): one fits in 1 MiB.
    other = "Name three colours of the sea:"  # no start in common with PROMPT
    _answer(scheduler, model, PROMPT)
    _answer(scheduler, model, other)  # saved after PROMPT's, which no longer fits
    assert _answer(scheduler, model, other)[1] > 0
    assert _answer(scheduler, model, PROMPT)[1] == 0


def test_a_failure_while_admitting_fails_the_request_and_the_scheduler_goes_on(
    scheduler: Scheduler, model: LlamaModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    first, _ = _answer(scheduler, model, PROMPT)

    def broken(state: object, seq_id: int) -> bool:
        raise RuntimeError("copy failed")

    monkeypatch.setattr(model, "load_cells", broken)  # the repeat copies cells back
    with pytest.raises(AssertionError, match="generation failed: copy failed"):
        _answer(scheduler, model, PROMPT)
    monkeypatch.undo()
    assert _cells_in_context(model) == [-1] * SLOTS  # its slot was freed
    assert _answer(scheduler, model, PROMPT)[0] == first  # the batching thread lives on
