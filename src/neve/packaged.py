"""Files that ship inside PyPI packages (models, mostly), found without importing them."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def packaged_path(package: str, relative: str) -> Path | None:
    """Where `relative` lies inside the installed distribution `package`; None when the
    package is not installed. Located through its metadata, never imported: a model
    package's own code may need what neve deliberately leaves out (llm, for one)."""
    try:
        dist = importlib.metadata.distribution(package)
    except importlib.metadata.PackageNotFoundError:
        return None
    return Path(str(dist.locate_file(relative)))
