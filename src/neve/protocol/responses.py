"""OpenAI's Responses API (POST /v1/responses, and the responses a hub stores): its wire
types, and their translation to and from chat, which every engine answers. Codex CLI and
OpenAI's Agents SDK speak it.

Where neve differs: tools neve's models cannot be offered (web search, file search, code
interpreter, image generation, computer use, MCP, shell, custom and namespaced tools) are
taken and left out of the prompt, so the model never calls them; images, files and audio
are refused by name, as are item references, `background`, `conversation` and stored
`prompt`s; `reasoning` and `include` are accepted and ignored (a model that thinks in
<think> blocks returns its thinking as reasoning items either way, in plain text)."""

from __future__ import annotations

import json
import time
import uuid
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from neve.errors import BadRequest
from neve.protocol.openai import (
    INTEGRAL,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Text,
    Usage,
)

STRICT = ConfigDict(strict=True, extra="allow")  # annotations, status, ids: taken, unused


def new_id(prefix: str) -> str:
    """An id of at most 36 characters (a feedback row's message_id holds one)."""
    return f"{prefix}_{uuid.uuid4().hex[:30]}"


# --- requests ---------------------------------------------------------------------------


class InputText(BaseModel):
    model_config = STRICT

    type: Literal["input_text"]
    text: Text


class OutputText(BaseModel):
    model_config = STRICT

    type: Literal["output_text"]
    text: Text


class Refusal(BaseModel):
    model_config = STRICT

    type: Literal["refusal"]
    refusal: Text


Part = InputText | OutputText | Refusal
PART_TYPES = ("input_text", "output_text", "refusal")


def _known(value: object, kinds: tuple[str, ...], what: str) -> object:
    """An element of a kind neve cannot read (an image, a file, ...) is refused by name."""
    for element in value if isinstance(value, list) else []:
        kind = element.get("type") if isinstance(element, dict) else None
        if isinstance(kind, str) and kind not in kinds:
            raise ValueError(f"{kind} {what} are not supported here; {', '.join(kinds)} are")
    return value


def _text(content: str | list[Part]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p.refusal if isinstance(p, Refusal) else p.text for p in content)


class MessageItem(BaseModel):
    model_config = STRICT

    type: Literal["message"] = "message"  # optional in OpenAI's "easy" input message
    role: Literal["user", "assistant", "system", "developer"]
    content: Text | list[Part]

    @field_validator("content", mode="before")
    @classmethod
    def _known_parts(cls, value: object) -> object:
        return _known(value, PART_TYPES, "parts")


class FunctionCallItem(BaseModel):
    model_config = STRICT

    type: Literal["function_call"]
    call_id: Annotated[str, Field(min_length=1)]
    name: str
    arguments: Text


class FunctionCallOutputItem(BaseModel):
    model_config = STRICT

    type: Literal["function_call_output"]
    call_id: Annotated[str, Field(min_length=1)]
    output: Text | list[Part]

    @field_validator("output", mode="before")
    @classmethod
    def _known_parts(cls, value: object) -> object:
        return _known(value, PART_TYPES, "parts")


class ReasoningText(BaseModel):
    model_config = STRICT

    type: Literal["reasoning_text", "summary_text"]
    text: Text


class ReasoningItem(BaseModel):
    model_config = STRICT

    type: Literal["reasoning"]
    summary: list[ReasoningText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content or self.summary)


# Plain unions (anyOf): each form's `type` is a literal, so one form alone validates.
Item = MessageItem | FunctionCallItem | FunctionCallOutputItem | ReasoningItem
ITEM_FORMS: dict[str, type[BaseModel]] = {
    "message": MessageItem, "function_call": FunctionCallItem,
    "function_call_output": FunctionCallOutputItem, "reasoning": ReasoningItem,
}  # fmt: skip


class FunctionTool(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


# Tools the model is not offered (README: accepted and left out).
UNOFFERED_TOOLS = ("web_search", "web_search_preview", "file_search", "code_interpreter",
                   "image_generation", "computer_use", "computer_use_preview", "mcp",
                   "local_shell", "shell", "custom", "namespace", "apply_patch",
                   "tool_search")  # fmt: skip


class UnofferedTool(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")

    type: Annotated[str, Field(pattern=r"^(" + "|".join(UNOFFERED_TOOLS) + r")(_[0-9_]+)?$")]


class NamedFunction(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    name: Annotated[str, Field(min_length=1)]


class TextFormat(BaseModel):
    model_config = STRICT

    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    description: str | None = None
    strict: bool | None = None

    def response_format(self) -> dict[str, Any]:
        if self.type != "json_schema":
            return {"type": self.type}
        if self.schema_ is None:
            raise BadRequest("text.format: json_schema needs its schema", param="text.format")
        spec: dict[str, Any] = {"name": self.name or "answer", "schema": self.schema_}
        if self.strict is not None:
            spec["strict"] = self.strict
        return {"type": "json_schema", "json_schema": spec}


class TextConfig(BaseModel):
    model_config = STRICT

    format: TextFormat | None = None


REFUSED_FIELDS = {"background": "background responses are not run here",
                  "conversation": "OpenAI's Conversations API is not served here; send "
                                  "previous_response_id or the whole input",
                  "prompt": "stored prompt templates are not served here"}  # fmt: skip


class ResponsesRequest(BaseModel):
    model_config = STRICT

    model: str | None = None
    input: Text | Annotated[list[Item], Field(min_length=1)]
    instructions: Text | None = None
    tools: list[FunctionTool | UnofferedTool] = Field(default_factory=list)
    tool_choice: Literal["none", "auto", "required"] | NamedFunction | None = None
    parallel_tool_calls: bool = True
    text: TextConfig | None = None
    reasoning: dict[str, Any] | None = None
    max_output_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stream: bool = False
    store: bool = True
    previous_response_id: Annotated[str, Field(min_length=1)] | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _known_items(cls, value: object) -> object:
        return _known(value, tuple(ITEM_FORMS), "items")

    def refused(self) -> None:
        """Fields of OpenAI's that neve cannot honour, refused by name."""
        for name, why in REFUSED_FIELDS.items():
            if (self.model_extra or {}).get(name) not in (None, False):
                raise BadRequest(f"{name}: {why}", param=name)

    def items(self) -> list[dict[str, Any]]:
        """The request's input as items (a text is one user message), as stored."""
        if isinstance(self.input, str):
            return [{"type": "message", "role": "user",
                     "content": [{"type": "input_text", "text": self.input}]}]  # fmt: skip
        return [i.model_dump(mode="json", exclude_none=True, by_alias=True) for i in self.input]

    def chat(self, history: list[dict[str, Any]]) -> ChatCompletionRequest:
        """The conversation (earlier items, then this input) as a chat request."""
        messages: list[dict[str, Any]] = []
        if self.instructions:
            messages.append({"role": "system", "content": self.instructions})
        messages += chat_messages(_items([*history, *self.items()]))
        body: dict[str, Any] = {"model": self.model, "messages": messages,
                                "stream": self.stream,
                                "parallel_tool_calls": self.parallel_tool_calls}  # fmt: skip
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        for ours, theirs in (("max_output_tokens", "max_tokens"), ("temperature", "temperature"),
                             ("top_p", "top_p"), ("user", "user")):  # fmt: skip
            if getattr(self, ours) is not None:
                body[theirs] = getattr(self, ours)
        offered = [t for t in self.tools if isinstance(t, FunctionTool)]
        if offered:
            body["tools"] = [
                {"type": "function", "function": t.model_dump(exclude={"type"}, exclude_none=True)}
                for t in offered
            ]
        choice = self.tool_choice
        if isinstance(choice, NamedFunction):
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif choice == "required" and not offered:
            raise BadRequest(
                "tool_choice: required needs a function tool in tools; no other "
                "kind is offered to the model here",
                param="tool_choice",
            )
        elif choice is not None and offered:
            body["tool_choice"] = choice
        if self.text is not None and self.text.format is not None:
            body["response_format"] = self.text.format.response_format()
        try:
            return ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:  # what Responses allows and chat does not
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BadRequest(f"cannot be answered here: {where}: {first['msg']}") from None


def _items(stored: list[dict[str, Any]]) -> list[Item]:
    """Stored items (and this request's, as stored) read back."""
    forms = (ITEM_FORMS[i.get("type", "message")] for i in stored)
    return [
        cast(Item, f.model_validate(i, strict=False)) for f, i in zip(forms, stored, strict=True)
    ]


def chat_messages(items: list[Item]) -> list[dict[str, Any]]:
    """Items as chat messages: an assistant's reasoning, text and function calls in a row
    are one assistant message, as a chat model wrote them; each function call's output is
    a tool message."""
    messages: list[dict[str, Any]] = []
    turn: dict[str, Any] | None = None  # the assistant message items are adding to
    for item in items:
        if isinstance(item, ReasoningItem):
            if turn is None or turn["content"] or "tool_calls" in turn:
                turn = {"role": "assistant", "content": ""}
                messages.append(turn)
            turn["reasoning_content"] = turn.get("reasoning_content", "") + item.text()
        elif isinstance(item, FunctionCallItem):
            if turn is None:
                turn = {"role": "assistant", "content": ""}
                messages.append(turn)
            turn.setdefault("tool_calls", []).append({"id": item.call_id, "type": "function",
                "function": {"name": item.name, "arguments": item.arguments}})  # fmt: skip
        elif isinstance(item, MessageItem) and item.role == "assistant":
            if turn is None or turn["content"] or "tool_calls" in turn:
                turn = {"role": "assistant", "content": ""}
                messages.append(turn)
            turn["content"] = _text(item.content)
        elif isinstance(item, FunctionCallOutputItem):
            turn = None
            messages.append({"role": "tool", "tool_call_id": item.call_id,
                             "content": _text(item.output)})  # fmt: skip
        else:
            assert isinstance(item, MessageItem)
            turn = None
            messages.append({"role": item.role, "content": _text(item.content)})
    return messages


# --- responses --------------------------------------------------------------------------


def usage(u: Usage | None) -> dict[str, Any]:
    u = u or Usage()
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    return {
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    }


def shell(
    request: ResponsesRequest, response_id: str, created: float, model: str
) -> dict[str, Any]:
    """A response object as it starts: in progress, no output yet."""
    return {
        "id": response_id, "object": "response", "created_at": created,
        "status": "in_progress", "error": None, "incomplete_details": None,
        "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
        "model": model, "output": [], "parallel_tool_calls": request.parallel_tool_calls,
        "previous_response_id": request.previous_response_id,
        "reasoning": request.reasoning or {"effort": None, "summary": None},
        "store": request.store, "temperature": request.temperature,
        "text": (request.text.model_dump(mode="json", exclude_none=True, by_alias=True)
                 if request.text and request.text.format else {"format": {"type": "text"}}),
        "tool_choice": (request.tool_choice.model_dump()
                        if isinstance(request.tool_choice, NamedFunction)
                        else request.tool_choice or "auto"),
        "tools": [t.model_dump(mode="json", exclude_none=True) for t in request.tools],
        "top_p": request.top_p, "truncation": request.truncation or "disabled",
        "usage": None, "user": request.user, "metadata": request.metadata or {},
    }  # fmt: skip


def finished(
    head: dict[str, Any], output: list[dict[str, Any]], finish: str | None, used: Usage | None
) -> dict[str, Any]:
    """The response once its answer is whole: completed, or incomplete when the token
    limit cut it."""
    cut = finish == "length"
    return {**head, "status": "incomplete" if cut else "completed", "output": output,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "completed_at": time.time(), "usage": usage(used)}  # fmt: skip


def failed(
    head: dict[str, Any], output: list[dict[str, Any]], error: dict[str, Any]
) -> dict[str, Any]:
    """The response once its answer broke off, with the error that cut it."""
    server = error.get("type") == "server_error"
    code = error.get("code") or ("server_error" if server else "invalid_request")
    return {**head, "status": "failed", "output": output,
            "error": {"code": code, "message": error.get("message", "")}}  # fmt: skip


def output_items(answer: AssistantMessage, status: str) -> list[dict[str, Any]]:
    """An assistant's chat answer as output items: reasoning, text, function calls."""
    out: list[dict[str, Any]] = []
    if answer.reasoning_content:
        out.append(_reasoning(new_id("rs"), answer.reasoning_content))
    if answer.content or not answer.tool_calls:
        out.append(_message(new_id("msg"), answer.content or "", status))
    for call in answer.tool_calls or []:
        out.append(_call(new_id("fc"), call.id, call.function.name, call.function.arguments,
                         status))  # fmt: skip
    return out


def response(head: dict[str, Any], whole: ChatCompletion) -> dict[str, Any]:
    choice = whole.choices[0]
    status = "incomplete" if choice.finish_reason == "length" else "completed"
    return finished(head, output_items(choice.message, status), choice.finish_reason, whole.usage)


def _reasoning(item_id: str, text: str) -> dict[str, Any]:
    return {"type": "reasoning", "id": item_id, "summary": [],
            "content": [{"type": "reasoning_text", "text": text}]}  # fmt: skip


def _message(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip


def _call(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}  # fmt: skip


class ResponseEvents:
    """OpenAI chat chunks, one at a time, as the Responses event stream: response.created
    and response.in_progress; per output item (reasoning, a message, each function call)
    its output_item.added, content part, deltas and their .done events; then
    response.completed, response.incomplete (the token limit cut it) or response.failed.
    `final` holds the response as the last event gave it."""

    def __init__(self, head: dict[str, Any]) -> None:
        self.head = head
        self.sequence = 0
        self.output: list[dict[str, Any]] = []
        self.open: str | None = None  # "reasoning", "text" or a tool call's index
        self.finish: str | None = None
        self.usage: Usage | None = None
        self.final: dict[str, Any] | None = None

    def event(self, kind: str, data: dict[str, Any]) -> str:
        body = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n"

    def start(self) -> list[str]:
        return [self.event("response.created", {"response": self.head}),
                self.event("response.in_progress", {"response": self.head})]  # fmt: skip

    def chunk(self, chunk: ChatCompletionChunk) -> list[str]:
        out: list[str] = []
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta.reasoning_content:
                out += self._item("reasoning", _reasoning(new_id("rs"), ""),
                                  {"type": "reasoning_text", "text": ""})  # fmt: skip
                out.append(self._text_delta("response.reasoning_text.delta",
                                            delta.reasoning_content))  # fmt: skip
            if delta.content:
                item = _message(new_id("msg"), "", "in_progress")
                out += self._item("text", item, {**item["content"][0]})
                out.append(self._text_delta("response.output_text.delta", delta.content))
            for call in delta.tool_calls or []:
                function = call.function
                if self.open != f"call{call.index}":
                    name = function.name if function and function.name else ""
                    item = _call(new_id("fc"), call.id or new_id("call"), name, "", "in_progress")
                    out += self._item(f"call{call.index}", item, None)
                if function and function.arguments:
                    current = self.output[-1]
                    current["arguments"] += function.arguments
                    out.append(self.event("response.function_call_arguments.delta", {
                        "item_id": current["id"], "output_index": len(self.output) - 1,
                        "delta": function.arguments}))  # fmt: skip
            self.finish = choice.finish_reason or self.finish
        return out

    def end(self) -> list[str]:
        out = self._close()
        self.final = finished(self.head, self.output, self.finish, self.usage)
        kind = f"response.{self.final['status']}"  # completed, or incomplete
        return [*out, self.event(kind, {"response": self.final})]

    def fail(self, error: dict[str, Any]) -> list[str]:
        out = self._close()
        self.final = failed(self.head, self.output, error)
        return [*out, self.event("response.failed", {"response": self.final})]

    def _item(self, name: str, item: dict[str, Any], part: dict[str, Any] | None) -> list[str]:
        if self.open == name:
            return []
        out = self._close()
        self.open = name
        self.output.append(item)
        index = len(self.output) - 1
        out.append(self.event("response.output_item.added", {"output_index": index,
                                                             "item": {**item, "content": []}
                                                             if part else item}))  # fmt: skip
        if part is not None:
            out.append(self.event("response.content_part.added", {
                "item_id": item["id"], "output_index": index, "content_index": 0,
                "part": part}))  # fmt: skip
        return out

    def _text_delta(self, kind: str, text: str) -> str:
        current = self.output[-1]
        current["content"][0]["text"] += text
        extra: dict[str, Any] = {"logprobs": []} if kind == "response.output_text.delta" else {}
        return self.event(kind, {"item_id": current["id"], "output_index": len(self.output) - 1,
                                 "content_index": 0, "delta": text, **extra})  # fmt: skip

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        item = self.output[-1]
        index = len(self.output) - 1
        where = {"item_id": item["id"], "output_index": index}
        out: list[str] = []
        cut = self.finish == "length"
        if item["type"] == "function_call":
            out.append(self.event("response.function_call_arguments.done", {
                **where, "name": item["name"], "arguments": item["arguments"]}))  # fmt: skip
            item["status"] = "incomplete" if cut else "completed"
        else:
            part = item["content"][0]
            kind = "output_text" if part["type"] == "output_text" else "reasoning_text"
            extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
            out.append(
                self.event(
                    f"response.{kind}.done",
                    {**where, "content_index": 0, "text": part["text"], **extra},
                )
            )
            out.append(self.event("response.content_part.done", {**where, "content_index": 0,
                                                                 "part": part}))  # fmt: skip
            if item["type"] == "message":
                item["status"] = "incomplete" if cut else "completed"
        out.append(self.event("response.output_item.done", {"output_index": index,
                                                            "item": item}))  # fmt: skip
        return out


# --- stored responses -------------------------------------------------------------------


class ResponseObject(BaseModel):
    """A response (its output items: message, reasoning, function_call)."""

    model_config = ConfigDict(extra="allow")

    id: str
    object: Literal["response"] = "response"
    created_at: float
    status: Literal["completed", "incomplete", "failed", "in_progress"]
    model: str
    output: list[dict[str, Any]]
    usage: dict[str, Any] | None = None


class DeletedResponse(BaseModel):
    id: str
    object: Literal["response"] = "response"
    deleted: bool = True


class InputItemList(BaseModel):
    object: Literal["list"] = "list"
    data: list[dict[str, Any]]
    first_id: str | None
    last_id: str | None
    has_more: bool
