"""logprobs from the engine's own distribution, on chat and text completions."""

from __future__ import annotations

import math

import openai

from tests.conftest import AppHub

ASK = [{"role": "user", "content": "Name three colours."}]


def test_chat_logprobs_cover_every_token_with_the_likeliest_first(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2", messages=ASK, logprobs=True, top_logprobs=3, temperature=0, max_tokens=12
    )
    choice = reply.choices[0]
    assert reply.usage is not None and choice.logprobs is not None
    tokens = choice.logprobs.content or []
    assert len(tokens) == reply.usage.completion_tokens
    assert "".join(t.token for t in tokens) == choice.message.content
    for t in tokens:
        top = [p.logprob for p in t.top_logprobs]
        assert len(top) == 3 and top == sorted(top, reverse=True) and top[0] <= 0
        # Greedy picks the likeliest token, so it is the first of the top ones.
        assert t.top_logprobs[0].token == t.token and t.logprob == top[0]
        assert bytes(t.bytes or []).decode() == t.token
        assert sum(math.exp(p) for p in top) <= 1 + 1e-6


def test_sampled_tokens_are_not_always_the_likeliest(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model="smollm2",
        messages=ASK,
        logprobs=True,
        top_logprobs=1,
        temperature=1.5,
        seed=1,
        max_tokens=40,
    )
    tokens = (reply.choices[0].logprobs and reply.choices[0].logprobs.content) or []
    assert tokens and any(t.logprob < t.top_logprobs[0].logprob for t in tokens)


def test_no_logprobs_unless_asked(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="smollm2", messages=ASK, max_tokens=4)
    assert reply.choices[0].logprobs is None


def test_streamed_chat_logprobs_match_the_whole_answer(client: openai.OpenAI) -> None:
    body = {
        "model": "smollm2",
        "messages": ASK,
        "logprobs": True,
        "top_logprobs": 2,
        "temperature": 0,
        "max_tokens": 12,
    }
    whole = client.chat.completions.create(**body)  # type: ignore[call-overload]
    streamed = [
        t
        for chunk in client.chat.completions.create(**body, stream=True)  # type: ignore[call-overload]
        for c in chunk.choices
        for t in (c.logprobs.content if c.logprobs else None) or []
    ]
    assert [(t.token, t.logprob) for t in streamed] == [
        (t.token, t.logprob) for t in whole.choices[0].logprobs.content
    ]


def test_completion_logprobs_in_the_legacy_form(client: openai.OpenAI) -> None:
    reply = client.completions.create(
        model="smollm2", prompt="One, two, three,", logprobs=2, temperature=0, max_tokens=6
    )
    choice = reply.choices[0]
    lp = choice.logprobs
    assert lp is not None and lp.tokens and lp.token_logprobs and lp.top_logprobs
    assert lp.text_offset is not None
    assert "".join(lp.tokens) == choice.text
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    for token, logprob, top in zip(lp.tokens, lp.token_logprobs, lp.top_logprobs, strict=True):
        assert len(top) == 2 and top[token] == logprob == max(top.values())


def test_too_many_top_logprobs_is_a_400(app_hub: AppHub) -> None:
    reply = app_hub.http.post(
        "/v1/chat/completions", json={"messages": ASK, "logprobs": True, "top_logprobs": 21}
    )
    assert reply.status_code == 400
    assert "top_logprobs" in reply.json()["error"]["message"]
