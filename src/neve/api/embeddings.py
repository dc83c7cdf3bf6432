"""POST /v1/embeddings in OpenAI's format."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from neve.api.request_log import outcome_of
from neve.api.state import state_of
from neve.errors import BadRequest
from neve.protocol.openai import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage, Usage

router = APIRouter(prefix="/v1")


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 form: little-endian float32, what its SDKs ask for by default."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/embeddings", response_model=None, responses={200: {"model": EmbeddingList}})
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingList | JSONResponse:
    state = state_of(request)
    embedder, engine = state.embedder, state.engine
    served = {m.id for m in engine.models()}
    if body.model in served or body.model not in (None, embedder.name):
        # The engine's model (an upstream may serve embeddings, even under this name).
        return JSONResponse(await engine.embeddings(body))
    # OpenAI's `dimensions` (not in the schema: the model cannot shorten its vectors) is
    # taken at the model's own size only.
    dimensions = (body.model_extra or {}).get("dimensions")
    if dimensions is not None and dimensions != embedder.dimensions:
        raise BadRequest(
            f"dimensions: {embedder.name} gives {embedder.dimensions} dimensions and cannot "
            "shorten its vectors; leave dimensions out",
            param="dimensions",
        )
    vectors, tokens = await embedder.aencode_counted(body.texts())
    outcome_of(request).used(Usage.of(tokens))
    encode = _base64 if body.encoding_format == "base64" else list
    return EmbeddingList(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(vectors)],
        model=embedder.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
