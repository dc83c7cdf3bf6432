"""Documents into chunks that fit the embedding model's window.

Chunks are measured in the embedding model's own tokens, filled with whole paragraphs and
sentences where they fit, and overlap by a few sentences. A chunk never spans two
sections or two pages, and its text starts with the document title and section heading:
the words a question shares with a page are often only there, and a chunk read alone
needs them to make sense."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import groupby

from neve.rag.loaders import Block, Document

Counter = Callable[[list[str]], list[int]]  # tokens of each text, special tokens included

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


@dataclass(frozen=True)
class Chunk:
    text: str  # heading line + body: what is embedded and indexed
    section: str
    page: int | None
    position: int


def chunk_document(document: Document, count: Counter, size: int, overlap: int) -> list[Chunk]:
    segments = [
        (section, page, list(blocks))
        for (section, page), blocks in groupby(document.blocks, lambda b: (b.section, b.page))
    ]
    headers = [_header(document.title, section) for section, _, _ in segments]
    pieces = [list(_pieces(blocks)) for _, _, blocks in segments]
    flat = [p for group in pieces for p in group]
    counts = iter(n - 2 for n in count(headers + flat))  # less [CLS] and [SEP]
    header_tokens = [next(counts) for _ in headers]
    chunks: list[Chunk] = []
    for (section, page, _), header, head, group in zip(
        segments, headers, header_tokens, pieces, strict=True
    ):
        sized = [(text, next(counts)) for text in group]
        budget = max(16, size - head - 2)
        for body in _pack(sized, budget, overlap):
            chunks.append(Chunk(f"{header}\n{body}", section, page, len(chunks)))
    return chunks


def _header(title: str, section: str) -> str:
    return title if not section or section == title else f"{title} — {section}"


def _pieces(blocks: list[Block]) -> Iterator[str]:
    """Paragraphs cut into sentences (code into lines), the units chunks are made of."""
    for block in blocks:
        if "\n" in block.text.strip():  # preformatted: keep its lines
            yield from (line for line in block.text.splitlines() if line.strip())
        else:
            yield from (s for s in _SENTENCE_END.split(block.text) if s.strip())


def _pack(pieces: list[tuple[str, int]], budget: int, overlap: int) -> Iterator[str]:
    """Greedy fill up to `budget` tokens; each next chunk repeats the last pieces of the one
    before, up to `overlap` tokens. A piece longer than the budget is cut by words."""
    pieces = [part for piece in pieces for part in _cut(piece, budget)]
    current: list[tuple[str, int]] = []
    used = 0
    fresh = False  # whether `current` holds anything not yet emitted
    for text, n in pieces:
        if current and used + n > budget:
            yield _join(current)
            kept: list[tuple[str, int]] = []
            for piece in reversed(current):
                if sum(k for _, k in kept) + piece[1] > overlap:
                    break
                kept.insert(0, piece)
            current, used = kept, sum(k for _, k in kept)
            fresh = False
        current.append((text, n))
        used += n
        fresh = True
    if fresh:
        yield _join(current)


def _cut(piece: tuple[str, int], budget: int) -> list[tuple[str, int]]:
    text, n = piece
    if n <= budget:
        return [piece]
    words = text.split()
    if len(words) < 2:
        return [piece]  # one giant token run: the model truncates it
    half = len(words) // 2
    ratio = n / len(words)
    first, second = " ".join(words[:half]), " ".join(words[half:])
    return _cut((first, round(half * ratio)), budget) + _cut(
        (second, round((len(words) - half) * ratio)), budget
    )


def _join(pieces: list[tuple[str, int]]) -> str:
    return " ".join(text for text, _ in pieces)
