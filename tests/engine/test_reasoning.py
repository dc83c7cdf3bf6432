"""The <think> splitter must give the same split however the stream is cut."""

from __future__ import annotations

import itertools

import pytest

from neve.engine.reasoning import ReasoningSplitter, split_all

CASES = [
    ("<think>weigh it up</think>The answer is 4.", "weigh it up", "The answer is 4."),
    ("plain answer, no tags", "", "plain answer, no tags"),
    ("a < b and <thin ice> </thinker>", "", "a < b and <thin ice> </thinker>"),
    ("<think>unfinished thought", "unfinished thought", ""),
    ("<think>one</think>mid<think>two</think>end", "onetwo", "midend"),
    ("<think></think>", "", ""),
    ("x<think>y</think", "y</think", "x"),
]


def _feed(pieces: list[str], in_reasoning: bool = False) -> tuple[str, str]:
    splitter = ReasoningSplitter(in_reasoning=in_reasoning)
    reasoning, content = [], []
    for piece in pieces:
        r, c = splitter.feed(piece)
        reasoning.append(r)
        content.append(c)
    r, c = splitter.flush()
    return "".join([*reasoning, r]), "".join([*content, c])


@pytest.mark.parametrize(("text", "reasoning", "content"), CASES)
def test_whole_text(text: str, reasoning: str, content: str) -> None:
    assert split_all(text) == (reasoning, content)


@pytest.mark.parametrize(("text", "reasoning", "content"), CASES)
def test_every_cut_into_two_and_three_pieces(text: str, reasoning: str, content: str) -> None:
    for i, j in itertools.combinations_with_replacement(range(len(text) + 1), 2):
        pieces = [text[:i], text[i:j], text[j:]]
        assert _feed(pieces) == (reasoning, content), pieces


@pytest.mark.parametrize(("text", "reasoning", "content"), CASES)
def test_one_character_at_a_time(text: str, reasoning: str, content: str) -> None:
    assert _feed(list(text)) == (reasoning, content)


def test_nothing_is_held_longer_than_a_possible_tag() -> None:
    splitter = ReasoningSplitter()
    assert splitter.feed("Hello <thi") == ("", "Hello ")
    assert splitter.feed("s is fine") == ("", "<this is fine")


def test_templates_that_open_the_block_start_in_reasoning() -> None:
    text = "let me think</think>Four."
    for i in range(len(text) + 1):
        assert _feed([text[:i], text[i:]], in_reasoning=True) == ("let me think", "Four.")
