"""/health says the process answers; /ready says the model can serve."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from neve.api.state import state_of
from neve.engine.base import EngineState
from neve.errors import NotReady

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


_STATE = {"type": "object", "required": ["status", "detail"], "properties": {
    "status": {"enum": [s.value for s in EngineState]}, "detail": {"type": "string"},
    "running": {"type": "integer"}, "waiting": {"type": "integer"},
    "replicas": {"type": "object", "additionalProperties": {"type": "integer"},
                 "description": "replicas by state (engine ray)"}}}  # fmt: skip


_AS_STATE = {"application/json": {"schema": _STATE}}


@router.get(
    "/ready",
    responses={
        200: {"description": "the model can serve", "content": _AS_STATE},
        503: {"description": "loading (with Retry-After) or failed", "content": _AS_STATE},
    },
)
async def ready(request: Request) -> JSONResponse:
    engine = state_of(request).engine
    status = engine.status()
    body: dict[str, object] = {"status": status.state.value, "detail": status.detail}
    if status.replicas is not None:
        body["replicas"] = status.replicas
    if status.state is EngineState.READY:
        body["running"], body["waiting"] = engine.load()
        return JSONResponse(body)
    # A failed load will not fix itself: no Retry-After then.
    headers = {"Retry-After": str(NotReady.retry_after)}
    return JSONResponse(
        body, status_code=503, headers=headers if status.state is EngineState.LOADING else None
    )
