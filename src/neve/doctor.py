"""`neve doctor`: what the llamacpp engine runs on this machine, shown by the engine
answering a short greedy completion (the same path a request takes)."""

from __future__ import annotations

import importlib.metadata
import time
from dataclasses import dataclass
from pathlib import Path

from neve.config import Settings
from neve.engine import ggml
from neve.engine.llamacpp import LlamaCppEngine
from neve.engine.replies import gather_completion
from neve.protocol.openai import CompletionRequest


@dataclass(frozen=True)
class Answer:
    prompt: str
    text: str
    tokens: int
    seconds: float


@dataclass(frozen=True)
class Report:
    llama_cpp_python: str  # its version; a `+neve.` tag marks neve's portable build
    host_cpu: str
    host_amx: tuple[str, ...]  # the AMX flags this host's kernel reports
    cpu: ggml.CpuBackend
    weight_repack: str
    extra_buffers: bool  # whether weights may go to the extra buffer types
    weight_buffers: dict[str, float]  # buffer type -> MiB of the model's weights
    answer: Answer | None


def host_cpu(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, tuple[str, ...]]:
    """This host's CPU model name and its AMX flags, as the kernel lists them."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return "unknown", ()
    name, flags = "unknown", set[str]()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown":
            name = value.strip()
        elif key.strip() == "flags":
            flags.update(f for f in value.split() if f.startswith("amx"))
    return name, tuple(sorted(flags))


async def examine(settings: Settings, prompt: str | None, max_tokens: int) -> Report:
    """Load the settings' model and, given a prompt, have the engine complete it greedily."""
    engine = LlamaCppEngine(settings)
    await engine.start()
    try:
        answer = None
        if prompt is not None:
            request = CompletionRequest(
                model=engine.name, prompt=prompt, max_tokens=max_tokens, temperature=0
            )
            started = time.perf_counter()
            done = await gather_completion(await engine.complete(request))
            answer = Answer(
                prompt,
                done.choices[0].text,
                done.usage.completion_tokens if done.usage else 0,
                time.perf_counter() - started,
            )
        cpu = ggml.cpu_backend()
        name, amx = host_cpu()
        return Report(
            llama_cpp_python=importlib.metadata.version("llama_cpp_python"),
            host_cpu=name,
            host_amx=amx,
            cpu=cpu,
            weight_repack=settings.weight_repack,
            extra_buffers=ggml.extra_buffers(settings.weight_repack, cpu),
            weight_buffers=engine.weight_buffers,
            answer=answer,
        )
    finally:
        await engine.close()
