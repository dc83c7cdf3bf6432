from __future__ import annotations

import subprocess
import sys
import tarfile
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def pypdf_resources(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The PDFs of pypdf's own test suite (broken, encrypted and odd ones among them),
    from its source distribution, fetched from the package registry."""
    folder = tmp_path_factory.mktemp("pypdf")
    wanted = f"pypdf=={version('pypdf')}"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-binary", ":all:",
         "--no-deps", "--dest", str(folder), wanted],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (archive,) = folder.glob("pypdf-*.tar.gz")
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers() if "/resources/" in m.name and m.isfile()]
        tar.extractall(folder, members=members, filter="data")
    (resources,) = folder.glob("pypdf-*/resources")
    yield resources
