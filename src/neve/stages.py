"""Documents from Snowflake stages into the index: a stage mounted as a folder (inside
SPCS) is ingested where it is; any other is mirrored through a Snowflake connection
first (neve.snowflake.stage). Either way the ingest prunes, so a file removed from the
stage leaves the index, and one unchanged is skipped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from neve.config import Settings
from neve.rag.ingest import Progress
from neve.rag.service import Rag
from neve.snowflake import session
from neve.snowflake.stage import STAGES_PATH, StageError, StageRef, listing, mirror


def ingest_stage(
    settings: Settings,
    rag: Rag,
    ref: StageRef,
    *,
    groups: list[str] | None = None,
    connect: Callable[[], Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    mounts: Path = Path(STAGES_PATH),
) -> Progress:
    folder = mounts / ref.folder
    if not folder.is_dir():  # not mounted: mirrored through a connection
        folder = settings.rag_path / "stages" / ref.folder
        connection = (connect or (lambda: session.connect(settings.spcs)))()
        try:
            mirror(listing(connection, ref), ref, folder, _download)
        finally:
            connection.close()
    return rag.ingester().run([folder], groups=groups, prune=True, on_progress=on_progress)


def _download(url: str) -> bytes:
    try:
        answer = httpx.get(url, timeout=60, follow_redirects=True)
        answer.raise_for_status()
    except httpx.HTTPError as exc:
        raise StageError(f"cannot download a staged file: {exc}") from None
    return answer.content
