"""Rendering models' own Jinja chat templates."""

from __future__ import annotations

import pytest

from neve.engine.chat_template import ChatTemplate
from neve.errors import BadRequest

STRICT = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant') }}{% endif %}"
    "[{{ m['role'] }}] {{ m['content'] | trim }}\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


def test_renders_with_bos_and_generation_prompt() -> None:
    template = ChatTemplate(STRICT, bos_token="<s>", eos_token="</s>")
    text = template.render([{"role": "user", "content": " hi "}])
    assert text == "<s>[user] hi\n[assistant] "


def test_a_template_refusing_the_messages_is_a_bad_request() -> None:
    template = ChatTemplate(STRICT, bos_token="<s>", eos_token="</s>")
    with pytest.raises(BadRequest, match="roles must alternate"):
        template.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_models_without_a_template_get_chatml() -> None:
    text = ChatTemplate(None, bos_token="", eos_token="").render(
        [{"role": "user", "content": "hi"}]
    )
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
