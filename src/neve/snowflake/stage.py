"""Documents kept in a Snowflake stage, mirrored into a local folder for ingesting.

The stage's directory table lists its files with their MD5, and GET_PRESIGNED_URL gives
each an address to download it from, in the same statement: a file whose MD5 the mirror
already has is not downloaded again, and one gone from the stage is deleted from the
mirror, so ingesting the mirror with pruning follows the stage. Inside SPCS the hub
reads a stage mounted as a volume instead (no download, no egress)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from neve.errors import BadRequest

_STAGE = re.compile(
    r"^@(?P<stage>[A-Za-z_][\w$]*(?:\.[A-Za-z_][\w$]*){0,2})(?:/(?P<path>[^\s']*))?$"
)
STAGES_PATH = "/stages"  # where the SPCS specification mounts the hub's rag_stages
MANIFEST = ".stage-files.json"  # relative path → MD5 of the copy in the mirror
URL_SECONDS = 3600  # how long a download address lasts


class StageError(BadRequest):
    """A stage that cannot be read: its name, its directory table, or a file."""

    code = "stage_unreadable"


@dataclass(frozen=True)
class StageRef:
    stage: str  # DB.SCHEMA.STAGE, or as qualified as the user wrote it
    path: str  # a folder within it; "" for all of it

    @classmethod
    def parse(cls, text: str) -> StageRef:
        match = _STAGE.match(text.strip())
        if match is None:
            raise StageError(
                f"{text!r} is not a stage: write @DATABASE.SCHEMA.STAGE or "
                "@DATABASE.SCHEMA.STAGE/folder"
            )
        return cls(match["stage"].upper(), (match["path"] or "").strip("/"))

    def __str__(self) -> str:
        return f"@{self.stage}" + (f"/{self.path}" if self.path else "")

    @property
    def folder(self) -> str:
        """Its mirror's folder name: the stage and path, readable and flat."""
        return re.sub(r"[^\w.-]+", "_", f"{self.stage}/{self.path}".strip("/")).lower()

    def refresh_sql(self) -> str:
        # An internal stage's directory table sees new files only when refreshed.
        return f"ALTER STAGE {self.stage} REFRESH"

    def listing_sql(self) -> str:
        where = f"\n  WHERE STARTSWITH(RELATIVE_PATH, '{self.path}/')" if self.path else ""
        return (
            f"SELECT RELATIVE_PATH, MD5, SIZE,\n"
            f"  GET_PRESIGNED_URL(@{self.stage}, RELATIVE_PATH, {URL_SECONDS}) AS URL\n"
            f"  FROM DIRECTORY(@{self.stage}){where}\n  ORDER BY RELATIVE_PATH"
        )


@dataclass
class Mirrored:
    downloaded: int = 0
    unchanged: int = 0
    deleted: int = 0


Download = Callable[[str], bytes]


def mirror(rows: list[dict[str, Any]], ref: StageRef, folder: Path, download: Download) -> Mirrored:
    """Make `folder` hold the files the directory-table `rows` list (those under ref's
    path, at their paths below it): new and changed ones downloaded, gone ones deleted."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = folder / MANIFEST
    had: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    have: dict[str, str] = {}
    done = Mirrored()
    for row in rows:
        relative = _inside(str(row["RELATIVE_PATH"]), ref)
        target = folder / relative
        md5 = str(row["MD5"] or "")
        if had.get(relative) == md5 and md5 and target.is_file():
            done.unchanged += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(download(str(row["URL"])))
            done.downloaded += 1
        have[relative] = md5
    for relative in set(had) - set(have):
        (folder / relative).unlink(missing_ok=True)
        done.deleted += 1
    manifest_path.write_text(json.dumps(have))
    return done


def _inside(relative: str, ref: StageRef) -> str:
    """The file's path below ref's folder, refused if it would leave the mirror."""
    path = PurePosixPath(relative)
    if ref.path:
        path = path.relative_to(ref.path)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise StageError(f"{ref}: the stage lists a file at {relative!r}, outside it")
    return str(path)


def listing(connection: Any, ref: StageRef) -> list[dict[str, Any]]:
    """The directory table's rows under ref's path, refreshed first."""
    import snowflake.connector

    try:
        cursor = connection.cursor(snowflake.connector.DictCursor)
        cursor.execute(ref.refresh_sql())
        cursor.execute(ref.listing_sql())
        return list(cursor.fetchall())
    except snowflake.connector.Error as exc:
        raise StageError(
            f"cannot list {ref}: {exc.msg or exc} (a stage neve reads needs a directory "
            f"table: ALTER STAGE {ref.stage} SET DIRECTORY = (ENABLE = TRUE))"
        ) from None
