"""The engines, by the name the `engine` setting gives. Adding one is a module beside
these and a line here; the settings' validation reads this table too."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from neve.config import Settings
    from neve.engine.base import Engine


@dataclass(frozen=True)
class EngineEntry:
    where: str  # "module:Class", imported only when chosen: each pulls its own libraries
    about: str  # for the setting's description


ENGINES = {
    "llamacpp": EngineEntry("neve.engine.llamacpp:LlamaCppEngine", "in process"),
    "openai": EngineEntry("neve.engine.openai:OpenAIEngine", "OpenAI-compatible upstreams"),
    "vllm": EngineEntry("neve.engine.vllm:VllmEngine", "a vLLM server neve launches"),
}


def create_engine(settings: Settings) -> Engine:
    module, _, name = ENGINES[settings.engine].where.partition(":")
    engine: Engine = getattr(importlib.import_module(module), name)(settings)
    return engine
