"""A Hugging Face model exported once to int8 ONNX (weights quantized per channel) and
kept in a cache folder named by the model's files: the embedder's and the reranker's path
to running on onnxruntime, several times faster than PyTorch fp32 on a CPU."""

from __future__ import annotations

import hashlib
import logging
import threading
import warnings
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger("neve.rag")
INPUTS = ["input_ids", "attention_mask", "token_type_ids"]


# What a model gives: its last hidden state per token (an embedder pools it), or one
# relevance logit per input (a cross-encoder); the class that loads it; the file's prefix.
HEADS = {
    "hidden": ("AutoModel", "last_hidden_state", ""),
    "logits": ("AutoModelForSequenceClassification", "logits", "rerank-"),
}


def exported(folder: Path, cache: Path, head: Literal["hidden", "logits"]) -> Path:
    """The int8 ONNX file of the model in `folder`, giving `head` (named so)."""
    loader, field, prefix = HEADS[head]
    weights = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    fingerprint = hashlib.sha256((folder / "config.json").read_bytes())
    for w in weights:
        fingerprint.update(f"{w.name}:{w.stat().st_size}".encode())
    target = cache / f"{prefix}{folder.name}-{fingerprint.hexdigest()[:12]}" / "model-int8.onnx"
    if target.is_file():
        return target
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers.utils import logging as transformers_logging

    log.warning("exporting a model to int8 ONNX once", extra={"to": str(target)})
    target.parent.mkdir(parents=True, exist_ok=True)
    transformers_logging.disable_progress_bar()
    import transformers

    model = getattr(transformers, loader).from_pretrained(str(folder)).eval()

    class Head(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            out = self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            )
            return getattr(out, field)

    sample = torch.ones((1, 8), dtype=torch.int64)
    axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "tokens"} for n in INPUTS}
    axes[head] = {0: "batch", 1: "tokens"} if head == "hidden" else {0: "batch"}
    fp32 = target.with_name(f"fp32-{threading.get_ident()}.onnx")
    with warnings.catch_warnings():  # the tracer's notes on the model's Python branches
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Head(), (sample, sample, torch.zeros_like(sample)), str(fp32),
            input_names=INPUTS, output_names=[head], opset_version=17, dynamo=False,
            dynamic_axes=axes,
        )  # fmt: skip
    partial = target.with_name(f"int8-{threading.get_ident()}.onnx")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer advises pre-processing on the root logger
    try:
        quantize_dynamic(str(fp32), str(partial), weight_type=QuantType.QInt8, per_channel=True)
    finally:
        root.setLevel(level)
    fp32.unlink()
    partial.replace(target)  # another process exporting at once ends with the same file
    return target


def session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
