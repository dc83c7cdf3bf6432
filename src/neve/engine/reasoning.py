"""Splitting a reasoning model's `<think>...</think>` text from its answer, as it streams.

Tags may arrive cut anywhere between chunks, so a possible partial tag at the end of the
input is held until the next chunk decides it. Models whose chat template opens the
`<think>` block in the prompt (DeepSeek-R1 distills) start in the reasoning state.
"""

from __future__ import annotations

from neve.engine.text import held_suffix

OPEN = "<think>"
CLOSE = "</think>"


class ReasoningSplitter:
    def __init__(self, *, in_reasoning: bool = False) -> None:
        self._in_reasoning = in_reasoning
        self._held = ""

    def feed(self, text: str, *, final: bool = False) -> tuple[str, str]:
        """Returns (reasoning, content) decided so far; with `final` (the stream ends
        here), also what was held back as a possible tag."""
        reasoning: list[str] = []
        content: list[str] = []
        buf = self._held + text
        while buf:
            tag = CLOSE if self._in_reasoning else OPEN
            out = reasoning if self._in_reasoning else content
            at = buf.find(tag)
            if at >= 0:
                out.append(buf[:at])
                buf = buf[at + len(tag) :]
                self._in_reasoning = not self._in_reasoning
                continue
            keep = held_suffix(buf, [tag])
            out.append(buf[: len(buf) - keep])
            buf = buf[len(buf) - keep :]
            break
        self._held = buf
        if final:
            held_reasoning, held_content = self.flush()
            reasoning.append(held_reasoning)
            content.append(held_content)
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        held, self._held = self._held, ""
        return (held, "") if self._in_reasoning else ("", held)


def split_all(text: str, *, in_reasoning: bool = False) -> tuple[str, str]:
    return ReasoningSplitter(in_reasoning=in_reasoning).feed(text, final=True)
