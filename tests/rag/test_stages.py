"""Documents from a Snowflake stage: `neve ingest @DB.SCHEMA.STAGE/path` and the hub's
rag_stages. The account is the stand-in (tests/standins/snowflake_server.py): fakesnow
has no directory tables and no GET_PRESIGNED_URL, which neve reads a stage with. The
files are downloaded over real HTTP and ingested by the real pipeline."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from neve.config import load_settings
from neve.rag.index import Access
from neve.rag.service import Rag
from neve.snowflake.stage import StageRef
from neve.stages import ingest_stage
from tests.conftest import app_hub_at, free_port, neve
from tests.standins.snowflake_server import Account, running

STAGE = "NEVE_DB.PUBLIC.DOCS"


@pytest.fixture
def account(tmp_path: Path) -> Iterator[tuple[Account, dict[str, str]]]:
    port = free_port()
    files = tmp_path / "stage"
    (files / "guide" / "sub").mkdir(parents=True)
    (files / "other").mkdir()
    (files / "guide" / "tides.md").write_text("# Tides\n\nSpring tides follow the full moon.\n")
    (files / "guide" / "moon.md").write_text("# Moon\n\nThe moon orbits in 27 days.\n")
    (files / "other" / "skip.md").write_text("# Elsewhere\n\nNot under guide.\n")
    account = Account(stages={STAGE: files}, url=f"http://127.0.0.1:{port}")
    env = {"SNOWFLAKE_ACCOUNT": "standin", "SNOWFLAKE_USER": "reader",
           "SNOWFLAKE_PASSWORD": "pw", "SNOWFLAKE_HOST": "127.0.0.1",
           "SNOWFLAKE_PORT": str(port), "SNOWFLAKE_PROTOCOL": "http"}  # fmt: skip
    with running(account, port):
        yield account, env


def titles(data: Path, models: Path) -> dict[str, str]:
    """Indexed documents' titles → their content hashes."""
    ran = neve("docs", "--json", "--data-dir", str(data), "--set", f"models_dir={models}")
    assert ran.returncode == 0, ran.stderr
    rows = [json.loads(line) for line in ran.stdout.splitlines()]
    return {row["title"]: row["sha256"] for row in rows}


def test_a_stage_is_ingested_and_follows_its_changes(
    tmp_path: Path, account: tuple[Account, dict[str, str]], models_dir: Path
) -> None:
    standin, env = account
    data = tmp_path / "data"
    args = ("ingest", f"@{STAGE}/guide", "--data-dir", str(data),
            "--set", f"models_dir={models_dir}")  # fmt: skip
    first = neve(*args, **env)
    assert first.returncode == 0, first.stderr
    assert "indexed 2 files" in first.stdout
    assert f"ALTER STAGE {STAGE} REFRESH" in standin.statements
    before = titles(data, models_dir)
    assert set(before) == {"Tides", "Moon"}  # other/ is not under guide/

    again = neve(*args, **env)
    assert "indexed 0 files" in again.stdout and "2 unchanged" in again.stdout

    files = standin.stages[STAGE]
    (files / "guide" / "tides.md").write_text("# Tides\n\nNeap tides follow the half moon.\n")
    (files / "guide" / "moon.md").unlink()
    (files / "guide" / "sub" / "eclipse.md").write_text("# Eclipse\n\nThe sun goes dark.\n")
    changed = neve(*args, **env)
    assert changed.returncode == 0, changed.stderr
    assert "indexed 2 files" in changed.stdout and "1 removed" in changed.stdout
    after = titles(data, models_dir)
    assert set(after) == {"Tides", "Eclipse"}
    assert after["Tides"] != before["Tides"]


def test_a_stage_named_wrong_or_unreadable_is_said_so(
    tmp_path: Path, account: tuple[Account, dict[str, str]], models_dir: Path
) -> None:
    _, env = account
    flags = ("--data-dir", str(tmp_path / "data"), "--set", f"models_dir={models_dir}")
    bad = neve("ingest", "@no stage here", *flags, **env)
    assert bad.returncode == 2 and "is not a stage" in bad.stderr
    missing = neve("ingest", "@NEVE_DB.PUBLIC.NOPE", *flags, **env)
    assert missing.returncode == 1
    assert "cannot list @NEVE_DB.PUBLIC.NOPE" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_a_mounted_stage_is_read_in_place(tmp_path: Path, models_dir: Path) -> None:
    """Inside SPCS the stage is a volume: no connection is opened."""
    ref = StageRef.parse(f"@{STAGE}/guide")
    mounts = tmp_path / "stages"
    (mounts / ref.folder).mkdir(parents=True)
    (mounts / ref.folder / "tides.md").write_text("# Tides\n\nSpring tides.\n")
    settings = load_settings({"data_dir": str(tmp_path / "data"), "models_dir": str(models_dir)})
    from neve.rag.service import configured_embedder

    rag = Rag(settings, configured_embedder(settings))

    def no_connection() -> None:
        raise AssertionError("a mounted stage needs no connection")

    done = ingest_stage(settings, rag, ref, connect=no_connection, mounts=mounts)
    assert done.files == 1 and done.failed == 0
    listed = rag.index.list_documents(Access(everything=True))
    assert [d["title"] for d in listed] == ["Tides"]


def test_the_hub_keeps_its_stages_ingested(
    tmp_path: Path,
    account: tuple[Account, dict[str, str]],
    models_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    standin, env = account
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = (f'rag_stages=["@{STAGE}/guide"]', "rag_stage_refresh=0.5")
    with app_hub_at(tmp_path, models_dir, *settings) as hub:

        def listed() -> set[str]:
            return {d["title"] for d in hub.http.get("/v1/documents").json()["data"]}

        deadline = time.monotonic() + 60
        while listed() != {"Tides", "Moon"}:
            assert time.monotonic() < deadline, listed()
            time.sleep(0.2)
        (standin.stages[STAGE] / "guide" / "moon.md").unlink()
        while listed() != {"Tides"}:
            assert time.monotonic() < deadline, listed()
            time.sleep(0.2)
