"""Token bytes to text: stop strings never leak, and UTF-8 survives token boundaries."""

from __future__ import annotations

from neve.engine.text import TextStream, held_suffix


def _run(stream: TextStream, pieces: list[bytes]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        text, stopped = stream.push(piece)
        out.append(text)
        if stopped:
            return "".join(out), True
    return "".join(out) + stream.flush(), False


def test_stop_string_split_over_tokens_is_never_emitted() -> None:
    stream = TextStream(["STOP"])
    emitted = []
    for piece in [b"one ", b"two S", b"TO", b"P three"]:
        text, stopped = stream.push(piece)
        emitted.append(text)
        if stopped:
            break
    assert "".join(emitted) == "one two "
    assert stopped
    assert all("S" not in t for t in emitted[1:])


def test_false_start_of_a_stop_string_is_released() -> None:
    assert _run(TextStream(["STOP"]), [b"ST", b"ART here"]) == ("START here", False)


def test_earliest_of_several_stops_wins() -> None:
    assert _run(TextStream(["b", "xyz"]), [b"axyzb"]) == ("a", True)


def test_multibyte_characters_cut_between_tokens() -> None:
    data = "naïve café 🙂".encode()
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert _run(TextStream([]), pieces) == ("naïve café 🙂", False)


def test_held_suffix() -> None:
    assert held_suffix("abc</th", ["</think>"]) == 4
    assert held_suffix("abc", ["</think>"]) == 0
    assert held_suffix("<", ["<think>", "</think>"]) == 1


def test_a_character_cut_by_the_end_is_dropped_not_replaced() -> None:
    # max_tokens ends the answer after the first two of the emoji's four bytes.
    cut = "ok 🙂".encode()[:-2]
    assert _run(TextStream([]), [cut]) == ("ok ", False)
    held = TextStream(["STOP"])  # the same with text held back for a possible stop
    assert _run(held, [b"ok S", "🙂".encode()[:1]]) == ("ok S", False)


def test_invalid_bytes_inside_the_answer_still_show() -> None:
    assert _run(TextStream([]), [b"a\xffb"]) == ("a\ufffdb", False)
