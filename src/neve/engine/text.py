"""Turning a token stream into text: UTF-8 across token boundaries, and stop strings.

Text that could be the start of a stop string is held back until it is known not to be,
so a client never receives part of a stop string.
"""

from __future__ import annotations

import codecs


def held_suffix(text: str, markers: list[str]) -> int:
    """Length of the longest end of `text` that begins one of `markers` (not all of it)."""
    longest = 0
    for marker in markers:
        for size in range(min(len(marker) - 1, len(text)), longest, -1):
            if marker.startswith(text[-size:]):
                longest = size
                break
    return longest


class TextStream:
    def __init__(self, stops: list[str]) -> None:
        self._stops = stops
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def push(self, piece: bytes) -> tuple[str, bool]:
        """Add a token's bytes; returns (text safe to emit, whether a stop string ended it)."""
        self._pending += self._decoder.decode(piece)
        if not self._stops:
            out, self._pending = self._pending, ""
            return out, False
        hits = [i for i in (self._pending.find(s) for s in self._stops) if i >= 0]
        if hits:
            out = self._pending[: min(hits)]
            self._pending = ""
            return out, True
        keep = held_suffix(self._pending, self._stops)
        cut = len(self._pending) - keep
        out, self._pending = self._pending[:cut], self._pending[cut:]
        return out, False

    def flush(self) -> str:
        """What is left when generation ends for a reason other than a stop string. The
        bytes of a character cut short by the end (max_tokens mid-character) are dropped,
        not turned into U+FFFD: the answer ends at its last whole character."""
        out = self._pending
        self._pending = ""
        self._decoder.reset()
        return out
