"""The engines, by the name the `engine` setting gives. Adding one is a module beside
these and a line here; the settings' validation reads this table too."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from neve.errors import ConfigError

if TYPE_CHECKING:
    from neve.config import Settings
    from neve.engine.base import Engine


@dataclass(frozen=True)
class EngineEntry:
    where: str  # "module:Class", imported only when chosen: each pulls its own libraries
    about: str  # for the setting's description
    extra: str | None = None  # the install extra that brings its libraries


ENGINES = {
    "llamacpp": EngineEntry("neve.engine.llamacpp:LlamaCppEngine", "in process"),
    "openai": EngineEntry("neve.engine.openai:OpenAIEngine", "OpenAI-compatible upstreams"),
    "vllm": EngineEntry("neve.engine.vllm:VllmEngine", "a vLLM server neve launches"),
    "ray": EngineEntry("neve.ray.engine:RayEngine", "replicas on a Ray cluster", extra="ray"),
}


def create_engine(settings: Settings) -> Engine:
    entry = ENGINES[settings.engine]
    module, _, name = entry.where.partition(":")
    try:
        found = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if entry.extra is None or (exc.name or "").startswith("neve"):
            raise
        raise ConfigError(
            f"engine {settings.engine!r} needs {exc.name}, which is not installed: "
            f"pip install 'neve[{entry.extra}]'"
        ) from None
    engine: Engine = getattr(found, name)(settings)
    return engine
