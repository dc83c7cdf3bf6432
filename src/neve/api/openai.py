"""The OpenAI-compatible routes: models, chat completions and completions (answer.py
turns the engine's reply into SSE or one response; embeddings.py has its own)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from neve.api import spec
from neve.api.answer import chat_reply, completion_reply
from neve.api.state import state_of
from neve.protocol.openai import (
    ChatCompletion,
    ChatCompletionRequest,
    Completion,
    CompletionRequest,
    ModelList,
    ModelObject,
)

router = APIRouter(prefix="/v1")


@router.get("/models")
async def models(request: Request) -> ModelList:
    created = state_of(request).started
    chat = [
        ModelObject(
            id=m.id,
            created=created,
            owned_by=m.owned_by,
            max_model_len=m.max_model_len,
            kind=m.kind,
        )
        for m in state_of(request).engine.models()
    ]
    local = state_of(request).embedder.name
    if local in {m.id for m in chat}:  # an upstream serves one by that name: it routes there
        return ModelList(data=chat)
    embedder = ModelObject(id=local, created=created, owned_by="neve", kind="embedding")
    return ModelList(data=[*chat, embedder])


@router.post("/chat/completions", response_model=None, responses=spec.answers(ChatCompletion))
async def chat_completions(
    body: ChatCompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    return await chat_reply(request, body)


@router.post("/completions", response_model=None, responses=spec.answers(Completion))
async def completions(
    body: CompletionRequest, request: Request
) -> JSONResponse | StreamingResponse:
    return await completion_reply(request, body)
