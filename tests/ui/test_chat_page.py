"""The chat page's logic in AppTest, against real hubs (the shipped model)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from streamlit.testing.v1 import AppTest

from tests.conftest import Hub, free_port, start_hub, stop_hub

# Greedy, its answer leads by >= 1.2 logits at every token up to "Paris."; without "Answer
# in one sentence." the first token led by 0.13 ("The" over "La"), and CI's CPU flipped it.
QUESTION = "What is the capital of France? Answer in one sentence."


def ask(at: AppTest, question: str, max_tokens: int = 24) -> AppTest:
    at.slider(key="temperature").set_value(0.0)
    at.number_input(key="max_tokens").set_value(max_tokens)
    at.text_area(key="system_prompt").input("You are a helpful assistant.")
    return at.chat_input[0].set_value(question).run()


def test_an_answer_streams_in_and_the_conversation_is_kept(
    ui_hub: Hub, app: Callable[[str], AppTest]
) -> None:
    at = app(ui_hub.url).run()
    assert not at.exception and not at.chat_input[0].disabled
    ask(at, QUESTION)
    assert not at.exception
    shown = [m.markdown[0].value for m in at.chat_message]
    assert shown[0] == QUESTION and "Paris" in shown[1]
    stored = httpx.get(f"{ui_hub.api}/conversations").json()["data"]
    mine = [c for c in stored if c["title"] == QUESTION]
    assert len(mine) == 1
    whole = httpx.get(f"{ui_hub.api}/conversations/{mine[0]['id']}").json()
    assert [(m["role"], m["content"]) for m in whole["messages"]] == [
        ("user", QUESTION),
        ("assistant", shown[1]),
    ]
    # A new chat is empty; the old one comes back from the sidebar, and goes when deleted.
    at.sidebar.button[0].click().run()
    assert not at.chat_message
    at.button(key=f"open-{mine[0]['id']}").click().run()
    assert [m.markdown[0].value for m in at.chat_message] == shown
    at.button(key=f"delete-{mine[0]['id']}").click().run()
    assert not at.chat_message
    assert httpx.get(f"{ui_hub.api}/conversations/{mine[0]['id']}").status_code == 404
    assert not [b for b in at.button if b.key == f"open-{mine[0]['id']}"]


def test_thumbs_down_with_a_comment_is_recorded_against_the_answer(
    ui_hub: Hub, app: Callable[[str], AppTest]
) -> None:
    at = ask(app(ui_hub.url).run(), "Name one planet.", max_tokens=8)
    answer = at.chat_message[1].markdown[0].value
    at.feedback[0].set_value(0).run()  # thumbs down
    at.text_input[0].input("too short to help")
    [send] = [b for b in at.button if b.label == "Send feedback"]
    send.click().run()
    assert not at.exception
    assert at.feedback[0].disabled
    assert "Thanks, your feedback is recorded." in [c.value for c in at.caption]
    rows = httpx.get(f"{ui_hub.api}/feedback", params={"score": -1}).json()["data"]
    [row] = [r for r in rows if r["comment"] == "too short to help"]
    assert (row["user_prompt"], row["assistant_response"]) == ("Name one planet.", answer)
    assert row["message_id"] and row["conversation_id"] and row["model"] == "smollm2"


def test_reasoning_is_shown_apart_in_a_collapsed_thinking_section(
    thinking_hub: Hub, app: Callable[[str], AppTest]
) -> None:
    at = ask(app(thinking_hub.url).run(), "Why is the sky blue?")
    assert not at.exception
    [thinking] = at.chat_message[1].expander
    assert thinking.label == "Thinking" and not thinking.proto.expanded
    reasoning = thinking.markdown[0].value
    assert len(reasoning) > 20 and "<think>" not in reasoning
    # SmolLM2 never closes the block: the answer itself is empty, not the reasoning.
    assert at.chat_message[1].markdown[-1].value == ""


def test_an_api_that_goes_away_mid_answer_gives_a_message_and_a_retry(
    tmp_path: Path, app: Callable[[str], AppTest]
) -> None:
    hub = start_hub(tmp_path)
    port = int(hub.url.rsplit(":", 1)[1])
    at = app(hub.url).run()

    def kill_while_answering() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(f"{hub.url}/ready").json().get("running"):
                break
            time.sleep(0.02)
        time.sleep(0.3)  # some of the answer has been shown
        hub.process.kill()

    killer = threading.Thread(target=kill_while_answering)
    killer.start()
    try:
        ask(at, "Tell me a long story about the sea.", max_tokens=2000)
    finally:
        killer.join()
        hub.process.wait()
    assert not at.exception
    [error] = at.error
    assert error.value.startswith("The answer was cut off: no hub answers at")
    assert "does not answer" in at.info[0].value
    # The hub comes back (same data); the page sees it (the waiting poll reruns it), and
    # Retry answers the question that was asked.
    hub = start_hub(tmp_path, port=port)
    try:
        at.number_input(key="max_tokens").set_value(8).run()
        [retry] = [b for b in at.button if b.label == "Retry"]
        retry.click().run()
        assert not at.exception and not at.error
        roles = [m.name for m in at.chat_message]
        assert roles == ["user", "assistant"] and at.chat_message[1].markdown[0].value
    finally:
        stop_hub(hub)


def test_an_api_that_does_not_answer_is_waited_for(app: Callable[[str], AppTest]) -> None:
    at = app(f"http://127.0.0.1:{free_port()}").run()
    assert not at.exception
    [waiting] = at.info
    assert "does not answer. Retrying in 2 s." in waiting.value
    assert not at.chat_input
