"""The interface every engine implements (registry.py names them; replies.py holds what
they answer with).

Engines take the OpenAI protocol's requests (protocol/openai.py) and answer in its
chunks, so an engine that forwards to an OpenAI-compatible upstream passes chunks
through untouched, while an in-process engine builds them from tokens. Both return a
stream: the api turns it into SSE, or gathers it into one response. Their errors are
neve's own (errors.py), each carrying the HTTP status it maps to.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from neve.errors import ModelNotFound

if TYPE_CHECKING:
    from neve.engine.replies import ChatReply, CompletionReply
    from neve.protocol.openai import ChatCompletionRequest, CompletionRequest, EmbeddingRequest


class EngineState(enum.Enum):
    LOADING = "loading"
    READY = "ready"
    FAILED = "failed"
    STOPPED = "stopped"


@dataclass(frozen=True)
class EngineStatus:
    state: EngineState
    detail: str = ""
    # Engines whose model runs as replicas elsewhere (ray) say how many are in each state
    # (RUNNING, STARTING, ...), and how many requests they sent again after a replica died.
    replicas: dict[str, int] | None = None
    retried: int = 0


ModelKind = Literal["chat", "embedding"]


@dataclass(frozen=True)
class ModelCard:
    id: str
    owned_by: str = "neve"
    max_model_len: int | None = None
    kind: ModelKind = "chat"


def check_model(asked: str | None, served: str) -> None:
    """The model a request to a one-model engine names: its own, or none (meaning its
    own)."""
    if asked is not None and asked != served:
        raise ModelNotFound.among(asked, [served])


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
        """Validate and admit the request (raising NeveError before any chunk), then
        return its chunks (the last carries usage), or, for a request that does not
        stream, possibly the whole response."""
        ...

    async def complete(self, request: CompletionRequest) -> CompletionReply: ...

    async def embeddings(self, request: EmbeddingRequest) -> dict[str, Any]:
        """Embeddings from a model the engine serves (the hub's own embedder answers
        for its model before the engine is asked)."""
        ...
