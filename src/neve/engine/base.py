"""The engine interface every backend implements, its errors, and the factory.

Engines speak the OpenAI protocol types (api/protocol.py) at their edges, so an engine
that forwards to an OpenAI-compatible upstream passes chunks through untouched, while an
in-process engine builds them from tokens. Both return a stream: the api turns it into
SSE, or gathers it into one response.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

if TYPE_CHECKING:
    from neve.api.protocol import (
        ChatCompletionRequest,
        ChatReply,
        CompletionReply,
        CompletionRequest,
        EmbeddingRequest,
    )
    from neve.config import Settings


class EngineError(Exception):
    """An error a client caused or must wait out; maps onto an HTTP status."""

    status = 500
    code = "internal_error"
    type = "server_error"
    retry_after: int | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class BadRequest(EngineError):
    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class ModelNotFound(BadRequest):
    status = 404  # as OpenAI answers an unknown model
    code = "model_not_found"


class ContextTooLong(BadRequest):
    code = "context_length_exceeded"


class TokenOutOfRange(BadRequest):
    code = "invalid_token_id"


class Overloaded(EngineError):
    status = 429
    code = "overloaded"
    type = "rate_limit_error"
    retry_after = 1


class NotReady(EngineError):
    status = 503
    code = "model_not_ready"
    type = "server_error"
    retry_after = 2


class EngineState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    detail: str = ""


ModelKind = Literal["chat", "embedding"]


@dataclass(frozen=True)
class ModelCard:
    id: str
    owned_by: str = "neve"
    max_model_len: int | None = None
    kind: ModelKind = "chat"


class Engine(Protocol):
    """What the api needs from a backend."""

    def status(self) -> EngineStatus: ...

    def models(self) -> list[ModelCard]: ...

    def load(self) -> tuple[int, int]:
        """(running, waiting) sequences, for readiness and metrics."""
        ...

    async def start(self) -> None:
        """Load or connect; the api serves /health meanwhile and /ready says 503."""

    async def close(self) -> None: ...

    async def chat(self, request: ChatCompletionRequest) -> ChatReply:
        """Validate and admit the request (raising EngineError before any chunk), then
        return its chunks (the last carries usage), or, for a request that does not
        stream, possibly the whole response."""
        ...

    async def complete(self, request: CompletionRequest) -> CompletionReply: ...

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        """Embeddings from a model the engine serves (the hub's own embedder answers
        for its model before the engine is asked)."""
        ...


def create_engine(settings: Settings) -> Engine:
    if settings.engine == "llamacpp":
        from neve.engine.llamacpp import LlamaCppEngine

        return LlamaCppEngine(settings)
    if settings.engine == "openai":
        from neve.engine.upstream import UpstreamEngine

        return UpstreamEngine(settings)
    from neve.engine.vllm import VllmEngine

    return VllmEngine(settings)
