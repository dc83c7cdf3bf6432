"""neve: a private LLM hub."""

__version__ = "0.1.0"
