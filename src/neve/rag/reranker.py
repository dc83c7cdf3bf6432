"""Rerankers: a question and passages in, a relevance score per passage out.

`rag_reranker` names one: a folder holding a Hugging Face sequence-classification model
(a cross-encoder) or what training/rerank.py trained (a delta over the shipped embedding
model, assembled once), a Hugging Face id (downloaded into the models directory when
online), or an upstream's rerank endpoint (`http(s)://host/v1`, whose `/rerank` answers
as vLLM's and llama.cpp's servers do). A local cross-encoder runs as an int8 ONNX export
made once, as the embedder does (neve/rag/embedder.py)."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np
from pydantic import SecretStr

from neve.errors import Unavailable
from neve.rag import onnx
from neve.rag.embedder import model_location

log = logging.getLogger("neve.rag")

BATCH = 32  # pairs per run


class RerankerUnavailable(Unavailable):
    code = "reranker_unavailable"


@dataclass(frozen=True)
class Scores:
    """Each document's relevance to the query, higher is closer, and the tokens read."""

    values: list[float]
    tokens: int


class Reranker(Protocol):
    name: str

    def score(self, query: str, documents: list[str]) -> Scores: ...


class CrossEncoder:
    """A local cross-encoder, loaded on first use."""

    def __init__(self, name: str, folder: Path, cache: Path, max_tokens: int) -> None:
        self.name = name
        self.folder = folder
        self.cache = cache
        self.max_tokens = max_tokens
        self._session: Any = None
        self._lock = threading.Lock()

    def _loaded(self) -> Any:
        with self._lock:
            if self._session is None:
                from tokenizers import Tokenizer

                try:
                    path = onnx.exported(self.folder, self.cache, "logits")
                    tokenizer = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
                except Exception as exc:
                    raise RerankerUnavailable(
                        f"cannot load reranker {self.name!r}: {exc}"
                    ) from None
                tokenizer.no_padding()
                tokenizer.enable_truncation(self.max_tokens, strategy="only_second")
                self._session = (onnx.session(path), tokenizer)
            return self._session

    def score(self, query: str, documents: list[str]) -> Scores:
        """The pairs BATCH at a time, padded to the longest of each run: a batch keeps the
        matrix products wide, where one pair at a time left the cores waiting."""
        values: list[float] = []
        tokens = 0
        for start in range(0, len(documents), BATCH):
            run = self._run(query, documents[start : start + BATCH])
            values += run.values
            tokens += run.tokens
        return Scores(values, tokens)

    def _run(self, query: str, documents: list[str]) -> Scores:
        session, tokenizer = self._loaded()
        encodings = tokenizer.encode_batch([(query, d) for d in documents])
        width = max(len(e.ids) for e in encodings)
        ids = np.zeros((len(encodings), width), dtype=np.int64)
        types, mask = np.zeros_like(ids), np.zeros_like(ids)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            types[row, : len(e.ids)] = e.type_ids
            mask[row, : len(e.ids)] = 1
        feed = {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}
        logits = session.run(None, feed)[0].reshape(-1)
        return Scores([float(x) for x in logits], int(mask.sum()))


class UpstreamReranker:
    """An upstream's /rerank (vLLM, llama.cpp's server, another neve)."""

    def __init__(
        self, base_url: str, api_key: SecretStr | None, model: str | None, timeout: float
    ) -> None:
        self.name = model or base_url
        self.url = base_url.rstrip("/") + "/rerank"
        self.model = model
        self.headers = {"Authorization": f"Bearer {api_key.get_secret_value()}"} if api_key else {}
        self.timeout = timeout

    def score(self, query: str, documents: list[str]) -> Scores:
        body = {"query": query, "documents": documents, "top_n": len(documents)}
        if self.model:
            body["model"] = self.model
        try:
            answer = httpx.post(self.url, json=body, headers=self.headers, timeout=self.timeout)
            answer.raise_for_status()
            answered = answer.json()
            scores = [0.0] * len(documents)
            for r in answered["results"]:
                scores[int(r["index"])] = float(r["relevance_score"])
            # vLLM's and llama.cpp's servers (and neve) say what they read; others may not.
            tokens = int((answered.get("usage") or {}).get("total_tokens") or 0)
        except (httpx.HTTPError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise RerankerUnavailable(f"reranker at {self.url}: {exc}") from None
        return Scores(scores, tokens)


def assembled(delta: Path, models: Path) -> Path:
    """A trained delta (training/rerank.py's output: the tensors it changed and the
    model's configuration) put together with the shipped embedding model's weights, once,
    into the models directory."""
    from neve.rag.assemble import assemble

    fingerprint = hashlib.sha256((delta / "delta.safetensors").read_bytes()).hexdigest()[:12]
    target = models / "rerank" / f"{delta.name}-{fingerprint}"
    if not (target / "model.safetensors").is_file():
        assemble(Path(model_location("all-minilm-l6-v2")), delta, target)
    return target


def configured_reranker(settings: Any) -> Reranker | None:
    """The reranker `rag_reranker` names, or None when it is off."""
    name: str = settings.rag_reranker
    if name == "off":
        return None
    if name.startswith(("http://", "https://")):
        return UpstreamReranker(
            name, settings.rag_reranker_api_key, settings.rag_reranker_model,
            settings.upstream_timeout,
        )  # fmt: skip
    folder = Path(name).expanduser()
    if not folder.is_dir():
        folder = _downloaded(name, settings.models_path)
    elif (folder / "delta.safetensors").is_file():
        folder = assembled(folder, settings.models_path)
    return CrossEncoder(name, folder, settings.models_path / "onnx", settings.rag_rerank_tokens)


def _downloaded(name: str, models: Path) -> Path:
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, cache_dir=models / "hub"))
    except Exception as exc:
        raise RerankerUnavailable(
            f"reranker {name!r} is neither a folder nor a model that could be downloaded "
            f"({exc.__class__.__name__}); set rag_reranker to a folder, a URL or off"
        ) from None
