"""Anthropic's Messages API (POST /v1/messages, /v1/messages/count_tokens): its wire
types, and their translation to and from OpenAI's chat, which every engine answers.
Claude Code and Anthropic's SDKs speak only this.

Where neve differs: a stop string and the model's own end both give `end_turn` (the
engines do not say which ended an answer); images and documents are refused by name;
`thinking` is accepted and ignored (a model that thinks in <think> blocks has its
thinking returned as thinking blocks either way)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from neve.errors import BadRequest
from neve.protocol.openai import (
    INTEGRAL,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Text,
    Usage,
    new_id,
)

STRICT = ConfigDict(strict=True, extra="allow")  # cache_control, citations: taken, unused


class TextBlock(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: Text


class ToolUseBlock(BaseModel):
    model_config = STRICT

    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(BaseModel):
    model_config = STRICT

    type: Literal["tool_result"]
    tool_use_id: str
    content: Text | list[TextBlock] | None = None
    is_error: bool = False

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(b.text for b in self.content)
        return self.content or ""


class ThinkingBlock(BaseModel):
    model_config = STRICT

    type: Literal["thinking"]
    thinking: Text
    signature: str | None = None


# Plain unions (anyOf), not discriminated ones (oneOf): each form's `type` is a literal,
# so one form alone validates, and fuzzers read anyOf without false alarms.
Block = TextBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock


BLOCK_TYPES = ("text", "tool_use", "tool_result", "thinking")


class InputMessage(BaseModel):
    model_config = STRICT

    role: Literal["user", "assistant"]
    content: Text | list[Block]

    @field_validator("content", mode="before")
    @classmethod
    def _known_blocks(cls, value: object) -> object:
        """A block of a kind neve cannot read (image, document, ...) is refused by name."""
        for block in value if isinstance(value, list) else []:
            kind = block.get("type") if isinstance(block, dict) else None
            if isinstance(kind, str) and kind not in BLOCK_TYPES:
                raise ValueError(
                    f"{kind} blocks are not supported here; {', '.join(BLOCK_TYPES)} are"
                )
        return value


class ToolDefinition(BaseModel):
    model_config = STRICT

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Text | None = None
    input_schema: dict[str, Any]


class AnyToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["auto", "any", "none"]
    disable_parallel_tool_use: bool = False


class NamedToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["tool"]
    name: Annotated[str, Field(min_length=1)]
    disable_parallel_tool_use: bool = False


ToolChoice = AnyToolChoice | NamedToolChoice


class CountTokensRequest(BaseModel):
    model_config = STRICT

    model: str
    messages: list[InputMessage] = Field(min_length=1)
    system: Text | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None

    def to_chat(self, **sampling: Any) -> ChatCompletionRequest:
        """The same conversation as an OpenAI chat request, for the engines."""
        messages: list[dict[str, Any]] = []
        if self.system:
            system = self.system
            text = system if isinstance(system, str) else "".join(b.text for b in system)
            messages.append({"role": "system", "content": text})
        for message in self.messages:
            messages.extend(_chat_messages(message))
        body: dict[str, Any] = {"model": self.model, "messages": messages, **sampling}
        if self.tools:
            body["tools"] = [
                {"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.input_schema}}
                for t in self.tools
            ]  # fmt: skip
        choice = self.tool_choice
        if choice is not None:
            if isinstance(choice, NamedToolChoice):
                body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
            else:
                body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[
                    choice.type
                ]
            body["parallel_tool_calls"] = not choice.disable_parallel_tool_use
        try:
            return ChatCompletionRequest.model_validate(body)
        except ValidationError as exc:  # what Anthropic allows and chat does not
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise BadRequest(f"cannot be answered here: {where}: {first['msg']}") from None


class MessagesRequest(CountTokensRequest):
    max_tokens: Annotated[int, Field(ge=1), INTEGRAL]
    stop_sequences: list[Annotated[Text, Field(min_length=1)]] = Field(default_factory=list)
    temperature: float = Field(1.0, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: Annotated[int, Field(ge=0), INTEGRAL] | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None

    def chat(self) -> ChatCompletionRequest:
        sampling: dict[str, Any] = {
            "max_tokens": self.max_tokens,
            "stop": self.stop_sequences,
            "temperature": self.temperature,
            "stream": self.stream,
        }
        if self.stream:
            sampling["stream_options"] = {"include_usage": True}
        if self.top_p is not None:
            sampling["top_p"] = self.top_p
        if self.top_k is not None:
            sampling["top_k"] = self.top_k
        user = (self.metadata or {}).get("user_id")
        if isinstance(user, str):
            sampling["user"] = user
        return self.to_chat(**sampling)


def _chat_messages(message: InputMessage) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI chat messages: a user's tool results become tool
    messages (before the text, as they answer the calls that came before it)."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts = [b.text for b in message.content if isinstance(b, TextBlock)]
    if message.role == "user":
        out: list[dict[str, Any]] = [
            {"role": "tool", "tool_call_id": b.tool_use_id, "content": b.text()}
            for b in message.content
            if isinstance(b, ToolResultBlock)
        ]
        if texts or not out:
            out.append({"role": "user", "content": "".join(texts)})
        return out
    calls = [
        {"id": b.id, "type": "function",
         "function": {"name": b.name, "arguments": json.dumps(b.input)}}
        for b in message.content
        if isinstance(b, ToolUseBlock)
    ]  # fmt: skip
    thinking = "".join(b.thinking for b in message.content if isinstance(b, ThinkingBlock))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts)}
    if calls:
        reply["tool_calls"] = calls
    if thinking:
        reply["reasoning_content"] = thinking
    return [reply]


# --- responses --------------------------------------------------------------------------

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                "abort": "end_turn"}  # fmt: skip


def usage(u: Usage | None) -> dict[str, int]:
    u = u or Usage()
    cached = u.prompt_tokens_details.cached_tokens if u.prompt_tokens_details else 0
    return {
        "input_tokens": u.prompt_tokens - cached,
        "output_tokens": u.completion_tokens,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


def message(whole: ChatCompletion) -> dict[str, Any]:
    """A whole chat completion as Anthropic's Message."""
    choice = whole.choices[0]
    answer = choice.message
    content: list[dict[str, Any]] = []
    if answer.reasoning_content:
        content.append({"type": "thinking", "thinking": answer.reasoning_content,
                        "signature": ""})  # fmt: skip
    if answer.content or not answer.tool_calls:
        content.append({"type": "text", "text": answer.content or ""})
    for call in answer.tool_calls or []:
        content.append({"type": "tool_use", "id": call.id, "name": call.function.name,
                        "input": _arguments(call.function.arguments)})  # fmt: skip
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "model": whole.model,
        "content": content,
        "stop_reason": STOP_REASONS.get(choice.finish_reason or "stop", "end_turn"),
        "stop_sequence": None,
        "usage": usage(whole.usage),
    }


def _arguments(text: str) -> dict[str, Any]:
    """A call's arguments as the object Anthropic sends (an answer cut short by max_tokens
    may leave them unfinished: then what there is, under `_partial`)."""
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        return {"_partial": text}
    return value if isinstance(value, dict) else {"_value": value}


def event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


class MessageEvents:
    """OpenAI chat chunks, one at a time, as Anthropic's stream events: message_start,
    then per content block (thinking, text, each tool call) its start, deltas and stop,
    then message_delta with the stop reason and usage, and message_stop."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.index = -1
        self.open: str | None = None  # "thinking", "text" or a tool call's index
        self.finish: str | None = None
        self.usage: Usage | None = None

    def start(self) -> list[str]:
        head: dict[str, Any] = {"id": new_id("msg"), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": None,
                "stop_sequence": None, "usage": usage(None)}  # fmt: skip
        return [event("message_start", {"message": head}), event("ping", {})]

    def chunk(self, chunk: ChatCompletionChunk) -> list[str]:
        out: list[str] = []
        if chunk.usage is not None:
            self.usage = chunk.usage
        for choice in chunk.choices[:1]:
            delta = choice.delta
            if delta.reasoning_content:
                out += self._block("thinking", {"type": "thinking", "thinking": "",
                                                "signature": ""})  # fmt: skip
                out.append(self._delta({"type": "thinking_delta",
                                        "thinking": delta.reasoning_content}))  # fmt: skip
            if delta.content:
                out += self._block("text", {"type": "text", "text": ""})
                out.append(self._delta({"type": "text_delta", "text": delta.content}))
            for call in delta.tool_calls or []:
                function = call.function
                if call.id or self.open != f"call{call.index}":
                    name = function.name if function and function.name else ""
                    out += self._block(f"call{call.index}", {
                        "type": "tool_use", "id": call.id or new_id("toolu"), "name": name,
                        "input": {}})  # fmt: skip
                if function and function.arguments:
                    out.append(self._delta({"type": "input_json_delta",
                                            "partial_json": function.arguments}))  # fmt: skip
            self.finish = choice.finish_reason or self.finish
        return out

    def end(self) -> list[str]:
        out = self._close()
        reason = STOP_REASONS.get(self.finish or "stop", "end_turn")
        spent = self.usage.completion_tokens if self.usage else 0
        out.append(event("message_delta", {
            "delta": {"stop_reason": reason, "stop_sequence": None},
            "usage": {"output_tokens": spent}}))  # fmt: skip
        out.append(event("message_stop", {}))
        return out

    def _block(self, name: str, start: dict[str, Any]) -> list[str]:
        if self.open == name:
            return []
        out = self._close()
        self.index += 1
        self.open = name
        return [*out, event("content_block_start", {"index": self.index, "content_block": start})]

    def _delta(self, delta: dict[str, Any]) -> str:
        return event("content_block_delta", {"index": self.index, "delta": delta})

    def _close(self) -> list[str]:
        if self.open is None:
            return []
        self.open = None
        return [event("content_block_stop", {"index": self.index})]


class Message(BaseModel):
    """A whole answer (its content blocks: text, thinking, tool_use)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[dict[str, Any]]
    stop_reason: Literal["end_turn", "max_tokens", "stop_sequence", "tool_use"] | None
    stop_sequence: str | None = None
    usage: dict[str, int]


class TokenCount(BaseModel):
    input_tokens: int


class ErrorDetail(BaseModel):
    type: str
    message: str
    code: str | None = None  # neve's own, as in its OpenAI-shaped errors


class ErrorResponse(BaseModel):
    """Anthropic's error shape, on its routes."""

    type: Literal["error"] = "error"
    error: ErrorDetail


ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error"}  # fmt: skip


def error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    """Anthropic's error shape (with neve's code, which Anthropic's clients pass over)."""
    kind = ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    detail = ErrorDetail(type=kind, message=message, code=code)
    return ErrorResponse(error=detail).model_dump(exclude_none=True)


def stream_error(error: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI-shaped error event's body (a stream that failed after its 200) as an
    Anthropic error event's."""
    kind = error.get("type")
    known = kind in ("invalid_request_error", "rate_limit_error")
    return {"error": {"type": kind if known else "api_error", "message": error.get("message", "")}}
