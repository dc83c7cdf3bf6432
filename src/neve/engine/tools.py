"""Tool calls for models served in process, in one format every model can follow.

Chat templates disagree on how tools are offered and how calls come back (and a small
model's own template may know none), so neve uses the generic form llama.cpp's server
falls back to: the tools are described in the system message, and the answer is one JSON
object, `{"tool_calls": [{"name": ..., "arguments": {...}}]}` or `{"response": "..."}`,
which a grammar enforces. Every answer therefore parses; whether the model chose well is
the model's business. Earlier calls and tool results go back through the template as
the same JSON, so a conversation reads alike from turn to turn.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from neve.engine import structured
from neve.errors import BadRequest
from neve.protocol.openai import ChatCompletionRequest, ChatMessage, FunctionCall, ToolCall


def active(request: ChatCompletionRequest) -> bool:
    """Whether the answer may call tools: tools are given, and tool_choice is not none."""
    return bool(request.tools) and request.tool_choice != "none"


def answer_schema(request: ChatCompletionRequest) -> dict[str, Any]:
    """The JSON schema of the answer, which becomes its grammar."""
    assert request.tools
    choice = request.tool_choice
    tools = request.tools
    if choice is not None and not isinstance(choice, str):
        tools = [t for t in tools if t.function.name == choice.function.name]
        if not tools:
            names = ", ".join(t.function.name for t in request.tools)
            raise BadRequest(f"tool_choice names the function {choice.function.name!r}, "
                             f"which tools does not hold (it holds {names})",
                             param="tool_choice", code="unknown_tool")  # fmt: skip
    for i, t in enumerate(request.tools):
        structured.check(t.function.parameters or {}, "tools", f"#/tools/{i}/function/parameters")
    call = {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": t.function.name},
                    "arguments": t.function.parameters or {"type": "object"},
                },
                "required": ["name", "arguments"],
            }
            for t in tools
        ]
    }
    single = not request.parallel_tool_calls or not isinstance(choice, str | None)
    calls = {
        "type": "object",
        "properties": {
            "tool_calls": {
                "type": "array",
                "items": call,
                "minItems": 1,
                **({"maxItems": 1} if single else {}),
            }
        },
        "required": ["tool_calls"],
    }
    if choice == "required" or (choice is not None and not isinstance(choice, str)):
        return calls
    reply = {
        "type": "object",
        "properties": {"response": {"type": "string"}},
        "required": ["response"],
    }
    return {"anyOf": [calls, reply]}


def instructions(request: ChatCompletionRequest) -> str:
    """What the system message tells the model about the tools and the answer's form."""
    assert request.tools
    described = [
        {k: v for k, v in t.function.model_dump().items() if k != "strict" and v is not None}
        for t in request.tools
    ]
    choice = request.tool_choice
    if choice == "required":
        how = 'Call one or more of the tools: {"tool_calls": [{"name": ..., "arguments": {...}}]}'
    elif choice is not None and not isinstance(choice, str):
        how = (f'Call the tool {choice.function.name}: {{"tool_calls": [{{"name": '
               f'"{choice.function.name}", "arguments": {{...}}}}]}}')  # fmt: skip
    else:
        how = ('To call tools: {"tool_calls": [{"name": ..., "arguments": {...}}]}. '
               'To answer the user directly: {"response": "..."}')  # fmt: skip
    return (f"You can call these tools:\n{json.dumps(described, ensure_ascii=False)}\n\n"
            f"Answer with one JSON object. {how}")  # fmt: skip


def messages(request: ChatCompletionRequest) -> list[dict[str, str]]:
    """The conversation for the template: the tools' description in the system message,
    earlier calls and results as the JSON the model answers in."""
    out: list[dict[str, str]] = []
    for m in request.messages:
        out.append({"role": m.template_role(), "content": _content(m)})
        if m.role == "tool":
            out[-1]["role"] = "user"  # not every template knows the tool role
    described = instructions(request)
    if out and out[0]["role"] == "system":
        out[0]["content"] = f"{out[0]['content']}\n\n{described}"
    else:
        out.insert(0, {"role": "system", "content": described})
    return out


def _content(m: ChatMessage) -> str:
    if m.role == "tool":
        return json.dumps({"tool_response": {"tool_call_id": m.tool_call_id,
                                             "content": m.text()}}, ensure_ascii=False)  # fmt: skip
    if m.role == "assistant" and m.tool_calls:
        calls = [{"name": c.function.name, "arguments": _arguments(c.function.arguments)}
                 for c in m.tool_calls]  # fmt: skip
        return json.dumps({"tool_calls": calls}, ensure_ascii=False)
    return m.text()


def _arguments(text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse(text: str) -> tuple[str | None, list[ToolCall]]:
    """An answer's content and its calls. Text that is not the grammar's JSON (an answer
    cut by max_tokens) is content, as it came."""
    try:
        answer = json.loads(text)
    except json.JSONDecodeError:
        return text, []
    if isinstance(answer, dict) and isinstance(answer.get("tool_calls"), list):
        return None, [
            ToolCall(
                id=f"call_{uuid.uuid4().hex[:24]}",
                function=FunctionCall(
                    name=c["name"], arguments=json.dumps(c["arguments"], ensure_ascii=False)
                ),
            )
            for c in answer["tool_calls"]
        ]
    if isinstance(answer, dict) and isinstance(answer.get("response"), str):
        return answer["response"], []
    return text, []
