"""reasoning_content end to end, with the real model behind a DeepSeek-R1-style template
(the template opens the <think> block, so everything until </think> is reasoning)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import R1_STYLE, Hub, start_hub, stop_hub

ASK = {
    "model": "smollm2",
    "messages": [{"role": "user", "content": "Why is the sky blue?"}],
    "temperature": 0,
    "max_tokens": 24,
}


def test_message_carries_reasoning_apart_from_content(thinking_hub: Hub) -> None:
    message = thinking_hub.client().chat.completions.create(**ASK).choices[0].message  # type: ignore[call-overload]
    reasoning = message.model_extra["reasoning_content"]
    assert reasoning and len(reasoning) > 20
    # SmolLM2 never closes the block, so nothing reaches the answer.
    assert message.content == ""


def test_stream_deltas_carry_the_same_reasoning(thinking_hub: Hub) -> None:
    client = thinking_hub.client()
    whole = client.chat.completions.create(**ASK).choices[0].message  # type: ignore[call-overload]
    chunks = list(client.chat.completions.create(**ASK, stream=True))  # type: ignore[call-overload]
    streamed = "".join(
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") or ""
        for c in chunks
        if c.choices
    )
    assert streamed == whole.model_extra["reasoning_content"]
    assert all(not c.choices or not c.choices[0].delta.content for c in chunks)


def test_split_can_be_turned_off(tmp_path: Path) -> None:
    template = tmp_path / "r1.jinja"
    template.write_text(R1_STYLE)
    hub = start_hub(tmp_path, f"chat_template={template}", "reasoning_split=false")
    try:
        message = hub.client().chat.completions.create(**ASK).choices[0].message  # type: ignore[call-overload]
    finally:
        stop_hub(hub)
    assert message.content and len(message.content) > 20
    assert (message.model_extra or {}).get("reasoning_content") is None
