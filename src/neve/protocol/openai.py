"""OpenAI wire types: requests as validated models, responses as OpenAI writes them."""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_serializer,
)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# --- requests ---------------------------------------------------------------------------


def lone_surrogate(text: str) -> int | None:
    """Where `text` holds a lone UTF-16 surrogate: JSON allows one ("\\ud800"), and no
    tokenizer can encode it."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _unicode(text: str) -> str:
    at = lone_surrogate(text)
    if at is not None:
        raise ValueError(
            f"holds a lone surrogate ({text[at]!r} at character {at}); text must be valid Unicode"
        )
    return text


# Text that reaches a tokenizer: valid Unicode, or a 400 naming the field.
Text = Annotated[str, AfterValidator(_unicode)]
# What clients may send as `stop` (it is held as a list).
STOP_SCHEMA = {"anyOf": [{"type": "string", "minLength": 1},
                         {"type": "array", "items": {"type": "string", "minLength": 1}},
                         {"type": "null"}]}  # fmt: skip


# json_schema's fields, checked by check_response_format and stated in the spec from this
# one table (bool is no int here: strict).
JSON_SCHEMA_FIELDS: dict[str, tuple[type, ...]] = {
    "name": (str,), "description": (str,), "schema": (dict,), "strict": (bool, type(None)),
}  # fmt: skip
KIND_NAMES = {str: "a string", dict: "an object", bool: "a boolean", type(None): "null"}
KIND_TYPES = {str: "string", dict: "object", bool: "boolean", type(None): "null"}
RESPONSE_FORMAT_SCHEMA = {"anyOf": [
    {"type": "object", "properties": {"type": {"enum": ["text", "json_object"]}},
     "required": ["type"]},
    {"type": "object", "properties": {
        "type": {"const": "json_schema"},
        "json_schema": {"type": "object", "properties": {
            key: {"type": [KIND_TYPES[k] for k in kinds]}
            for key, kinds in JSON_SCHEMA_FIELDS.items()}}},
     "required": ["type", "json_schema"]},
    {"type": "null"},
]}  # fmt: skip


def check_response_format(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """OpenAI's response_format, its shape checked (its schema is the engine's to check)."""
    if value is None:
        return None
    kind = value.get("type")
    if kind not in ("text", "json_object", "json_schema"):
        raise ValueError(f"type must be text, json_object or json_schema, not {kind!r}")
    if kind != "json_schema":
        return value
    spec = value.get("json_schema")
    if not isinstance(spec, dict):
        raise ValueError("json_schema must be an object holding the schema under 'schema'")
    for key, kinds in JSON_SCHEMA_FIELDS.items():
        if key in spec and not isinstance(spec[key], kinds):
            raise ValueError(
                f"json_schema.{key} must be {' or '.join(KIND_NAMES[k] for k in kinds)}"
            )
    return value


def _integral(value: object) -> object:
    """JSON has one kind of number: 4.0 is the integer 4 (JSON Schema says so too)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# Requests are validated strictly, so what the schema says is what is taken: no "4" for
# 4, no 0 for false. An integer may still come as 4.0. (INTEGRAL goes after an integer's
# bounds, or the JSON schema loses them.)
STRICT = ConfigDict(strict=True)
INTEGRAL = BeforeValidator(_integral)
JsonInt = Annotated[int, INTEGRAL]
TokenIds = Annotated[list[Annotated[int, Field(ge=0), INTEGRAL]], Field(min_length=1)]


class StreamOptions(BaseModel):
    model_config = STRICT

    include_usage: bool = False


class TextPart(BaseModel):
    model_config = STRICT

    type: Literal["text"]
    text: Text


class FunctionCall(BaseModel):
    name: str
    arguments: str  # JSON, as OpenAI sends it


class ToolCall(BaseModel):
    model_config = STRICT

    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class FunctionDefinition(BaseModel):
    model_config = STRICT

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: Text | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class Tool(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: FunctionDefinition


class NamedFunction(BaseModel):
    name: str


class NamedToolChoice(BaseModel):
    model_config = STRICT

    type: Literal["function"]
    function: NamedFunction


class ChatMessage(BaseModel):
    model_config = STRICT

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Text | list[TextPart] | None = None
    name: Text | None = None
    reasoning_content: Text | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""

    def template_role(self) -> str:
        """The role for a chat template: OpenAI's developer messages are the system's
        instructions under a newer name, which templates do not know."""
        return "system" if self.role == "developer" else self.role


class SamplingFields(BaseModel):
    """Fields shared by chat and text completions (OpenAI's, plus vLLM's top_k and
    ignore_eos)."""

    # Clients send many optional OpenAI fields; unknown ones are ignored as OpenAI does,
    # while the ones we cannot honour are refused by name (see `unsupported`).
    model_config = ConfigDict(extra="allow", strict=True)

    model: str | None = None
    max_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    temperature: float = Field(1.0, ge=0, le=2)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: Annotated[int, Field(ge=-1), INTEGRAL] = 0
    n: Annotated[int, Field(ge=1, le=16), INTEGRAL] = 1
    stop: Annotated[list[Text], WithJsonSchema(STOP_SCHEMA)] = Field(default_factory=list)
    seed: JsonInt | None = None
    presence_penalty: float = Field(0.0, ge=-2, le=2)
    frequency_penalty: float = Field(0.0, ge=-2, le=2)
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ignore_eos: bool = False

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_strings(cls, value: object) -> object:
        """OpenAI accepts one string, a list, or null."""
        stops = [value] if isinstance(value, str) else value if value is not None else []
        if isinstance(stops, list) and any(s == "" for s in stops):
            raise ValueError("stop strings must not be empty")
        return stops

    @property
    def include_usage(self) -> bool:
        return bool(self.stream and self.stream_options and self.stream_options.include_usage)

    def unsupported(self) -> str | None:
        """Name of a field that asks for something this server does not do."""
        extra = self.model_extra or {}
        for name in ("functions", "logit_bias", "suffix"):
            if extra.get(name):
                return name
        return None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: Annotated[int, Field(ge=1), INTEGRAL] | None = None
    # Its shape is checked here, its schema where it is used (engine/structured.py); it is
    # passed on as sent to upstreams.
    response_format: Annotated[
        dict[str, Any] | None,
        AfterValidator(check_response_format),
        WithJsonSchema(RESPONSE_FORMAT_SCHEMA),
    ] = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool = True
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20), INTEGRAL] | None = None

    def logprobs_asked(self) -> int | None:
        """None, or how many likeliest tokens to give beside each sampled one."""
        if not self.logprobs:
            return None
        return self.top_logprobs or 0

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens


class CompletionRequest(SamplingFields):
    # Never empty: a prompt with no tokens has nothing to continue.
    prompt: (
        Annotated[Text, Field(min_length=1)]
        | Annotated[list[Annotated[Text, Field(min_length=1)]], Field(min_length=1)]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1)]
    )
    echo: bool = False
    logprobs: Annotated[int, Field(ge=0, le=20), INTEGRAL] | None = None

    def logprobs_asked(self) -> int | None:
        return self.logprobs

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: text, or token ids."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        return list(p)  # type: ignore[arg-type]

    def token_limit(self) -> int | None:
        # OpenAI's legacy completions default to 16 tokens.
        return self.max_tokens if self.max_tokens is not None else 16


# --- responses --------------------------------------------------------------------------


class _Sparse(BaseModel):
    """A streamed fragment: absent fields are left out, as OpenAI does."""

    @model_serializer(mode="wrap")
    def _present(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class PromptTokensDetails(BaseModel):
    cached_tokens: int = 0


class Usage(_Sparse):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    # Of the prompt tokens, those read from the engine's prefix cache; absent where unknown.
    prompt_tokens_details: PromptTokensDetails | None = None

    @classmethod
    def of(cls, prompt: int, completion: int = 0, cached: int | None = None) -> Usage:
        details = None if cached is None else PromptTokensDetails(cached_tokens=cached)
        return cls(
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=prompt + completion,
            prompt_tokens_details=details,
        )

    @classmethod
    def read(cls, wire: dict[str, Any]) -> Usage:
        """A usage object as chat writes it, or as the Responses API does."""
        if "input_tokens" in wire:
            cached = (wire.get("input_tokens_details") or {}).get("cached_tokens")
            return cls.of(wire["input_tokens"] or 0, wire.get("output_tokens") or 0, cached)
        return cls(**wire)

    def add(self, other: Usage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.total_tokens += other.total_tokens
        if other.prompt_tokens_details is not None:
            details = self.prompt_tokens_details or PromptTokensDetails()
            details.cached_tokens += other.prompt_tokens_details.cached_tokens
            self.prompt_tokens_details = details

    def set(self, other: Usage) -> None:
        self.prompt_tokens = other.prompt_tokens
        self.completion_tokens = other.completion_tokens
        self.total_tokens = other.total_tokens
        self.prompt_tokens_details = other.prompt_tokens_details


FinishReason = Literal["stop", "length", "tool_calls", "abort"]


class FunctionCallDelta(_Sparse):
    name: str | None = None
    arguments: str | None = None


class ToolCallDelta(_Sparse):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionCallDelta | None = None


class Delta(_Sparse):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDelta] | None = None


class TopLogprob(BaseModel):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(BaseModel):
    content: list[TokenLogprob] | None = None


class ChunkChoice(BaseModel):
    index: int
    delta: Delta
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None = None


class _Response(BaseModel):
    """What every completion object carries besides its choices, in OpenAI's order
    (subclasses narrow `object`, which keeps its place)."""

    id: str
    object: str
    created: int
    model: str


class ChatCompletionChunk(_Response):
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    choices: list[ChunkChoice]
    usage: Usage | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None = None
    finish_reason: FinishReason | None


class ChatCompletion(_Response):
    object: Literal["chat.completion"] = "chat.completion"
    choices: list[ChatChoice]
    usage: Usage


class CompletionLogprobs(BaseModel):
    """The legacy completions' form: parallel lists, one entry per token."""

    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class CompletionChoice(BaseModel):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: FinishReason | None = None


class CompletionChunk(_Response):
    """One streamed piece of a text completion (OpenAI streams `text_completion` objects)."""

    object: Literal["text_completion"] = "text_completion"
    choices: list[CompletionChoice]
    usage: Usage | None = None


class Completion(CompletionChunk):
    usage: Usage | None = Field(default_factory=Usage)


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    max_model_len: int | None = None
    kind: Literal["chat", "embedding"] = "chat"  # neve's own: pickers list chat models only


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    input: (
        Annotated[Text, Field(min_length=1)]
        | Annotated[list[Annotated[Text, Field(min_length=1)]], Field(min_length=1)]
    )
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _no_token_ids(cls, value: object) -> object:
        """Token ids are refused by name: whose tokenizer made them cannot be known
        (LangChain's OpenAIEmbeddings sends tiktoken's), and guessing wrong would embed
        other text without a word."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(x, int) or (isinstance(x, list) and x) for x in items):
            raise ValueError(
                "token ids are not accepted; send text (LangChain: "
                "OpenAIEmbeddings(check_embedding_ctx_length=False))"
            )
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class Embedding(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Embedding]
    model: str
    usage: EmbeddingUsage


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorBody
