"""POST /v1/embeddings in OpenAI's format."""

from __future__ import annotations

import base64
import struct

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from neve.api.protocol import Embedding, EmbeddingList, EmbeddingRequest, EmbeddingUsage
from neve.engine.base import BadRequest

router = APIRouter(prefix="/v1")


def _base64(vector: list[float]) -> str:
    """OpenAI's base64 form: little-endian float32, what its SDKs ask for by default."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


@router.post("/embeddings", response_model=None)
async def embeddings(body: EmbeddingRequest, request: Request) -> EmbeddingList | JSONResponse:
    embedder, engine = request.app.state.embedder, request.app.state.engine
    served = {m.id for m in engine.models()}
    if body.model in served or body.model not in (None, embedder.name):
        # The engine's model (an upstream may serve embeddings, even under this name).
        return JSONResponse(await engine.embeddings(body))
    texts = body.texts()
    if any(not t for t in texts):
        raise BadRequest("input must not hold empty strings", param="input")
    vectors, tokens = await embedder.aencode_counted(texts)
    encode = _base64 if body.encoding_format == "base64" else list
    return EmbeddingList(
        data=[Embedding(index=i, embedding=encode(v)) for i, v in enumerate(vectors)],
        model=embedder.name,
        usage=EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
    )
