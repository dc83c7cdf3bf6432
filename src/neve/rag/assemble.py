"""A reranker trained by training/rerank.py is kept as a delta: the tensors training
changed or added (the top layers and the scoring head of the shipped embedding model,
all-MiniLM-L6-v2), beside the configuration of a Hugging Face cross-encoder
(BertForSequenceClassification, one label). The full model is put together once from the
embedding model's package, so a trained reranker is a few megabytes, not a whole model."""

from __future__ import annotations

import shutil
from pathlib import Path

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.txt",
    "special_tokens_map.json",
)


def assemble(base: Path, delta: Path, target: Path) -> None:
    """Write the cross-encoder to `target`: `base`'s BERT tensors (prefixed `bert.`, as
    the classifier names them) with `delta`'s in their place, and `delta`'s config."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    tensors = {f"bert.{k}": v for k, v in load_file(base / "model.safetensors").items()}
    tensors.update(
        {k: v.astype(np.float32) for k, v in load_file(delta / "delta.safetensors").items()}
    )
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(tensors, str(partial / "model.safetensors"))
    shutil.copy(delta / "config.json", partial / "config.json")
    for name in TOKENIZER_FILES:
        if (base / name).is_file():
            shutil.copy(base / name, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
