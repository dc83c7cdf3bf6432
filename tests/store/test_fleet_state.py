"""What the instances of a fleet share, each instance played by its own Store (its own
connection pool) on one real PostgreSQL: the rate windows, the relay's batch answers and
the documents their indexes replicate. SQLite runs the same code for the batch answers."""

from __future__ import annotations

import asyncio
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from neve.config import Settings
from neve.rag.embedder import Embedder
from neve.rag.index import Access
from neve.rag.service import Rag
from neve.store import limits
from neve.store.batches import SharedRetryCache
from neve.store.db import Store
from neve.store.documents import SharedDocuments
from tests.postgres import PgServer


@pytest.fixture
def stores(database_url: str) -> list[Store]:
    """Two instances' views of one database."""
    first = Store(database_url)
    first.migrate()
    return [first, Store(database_url)]


@pytest.fixture
def pg_stores(postgres: PgServer) -> list[Store]:
    url = postgres.create_database(f"fleet_{uuid.uuid4().hex[:12]}")
    first = Store(url)
    first.migrate()
    return [first, Store(url), Store(url)]


def test_a_key_s_minute_is_counted_once_across_instances(pg_stores: list[Store]) -> None:
    async def burst() -> list[tuple[str, int] | None]:
        instances = [limits.SharedWindows(s, connections=4, timeout=5) for s in pg_stores]
        answers = await asyncio.gather(*(instances[i % 3].admit("key-1", 10, 0) for i in range(30)))
        other = await instances[0].admit("key-2", 10, 0)  # another key: its own minute
        for windows in instances:
            await windows.close()
        return [*answers, other]

    *answers, other = asyncio.run(burst())
    admitted = [a for a in answers if a is None]
    refused = [a for a in answers if a is not None]
    assert len(admitted) == 10
    assert all(what == "10 requests per minute" and 1 <= wait <= 60 for what, wait in refused)
    assert other is None


def test_tokens_spent_through_one_instance_limit_the_other(pg_stores: list[Store]) -> None:
    async def spend_then_ask() -> tuple[str, int] | None:
        first, second = (limits.SharedWindows(s, connections=1, timeout=5) for s in pg_stores[:2])
        assert await first.admit("key-1", 0, 100) is None
        await first.spend("key-1", 150)
        refused = await second.admit("key-1", 0, 100)
        await first.close(), await second.close()
        return refused

    refused = asyncio.run(spend_then_ask())
    assert refused is not None and refused[0] == "100 tokens per minute"


def _caches(stores: list[Store], claim_timeout: float = 5) -> list[SharedRetryCache]:
    return [SharedRetryCache(s, ttl=60, claim_timeout=claim_timeout) for s in stores]


def test_a_batch_retried_on_another_instance_waits_for_the_first_answer(
    stores: list[Store],
) -> None:
    first, second = _caches(stores)
    runs = 0

    async def compute() -> dict[str, Any]:
        nonlocal runs
        runs += 1
        await asyncio.sleep(0.5)
        return {"data": [[0, f"answer {runs}"]]}

    async def both() -> list[tuple[dict[str, Any], bool]]:
        running = asyncio.create_task(first.answer("complete:b1:x", compute))
        await asyncio.sleep(0.1)  # the retry arrives while the first attempt runs
        return [await second.answer("complete:b1:x", compute), await running]

    (retried, repeat), (original, fresh) = asyncio.run(both())
    assert runs == 1
    assert retried == original == {"data": [[0, "answer 1"]]}
    assert (repeat, fresh) == (True, False)
    # Later retries, through either instance, get the stored answer.
    assert asyncio.run(first.answer("complete:b1:x", compute)) == (original, True)
    assert runs == 1


def test_a_failed_batch_runs_again_and_a_dead_instance_s_batch_is_taken_over(
    stores: list[Store],
) -> None:
    first, second = _caches(stores, claim_timeout=1)

    async def fails() -> dict[str, Any]:
        raise RuntimeError("the engine failed")

    async def works() -> dict[str, Any]:
        return {"data": [[0, "ok"]]}

    with pytest.raises(RuntimeError):
        asyncio.run(first.answer("k-failed", fails))
    assert asyncio.run(second.answer("k-failed", works)) == ({"data": [[0, "ok"]]}, False)

    # An instance that claimed a batch and died renews nothing: after claim_timeout the
    # retry runs it elsewhere instead of waiting for ever.
    assert first._claim("k-dead") is None
    answer = asyncio.run(asyncio.wait_for(second.answer("k-dead", works), 10))
    assert answer == ({"data": [[0, "ok"]]}, False)


# -- documents -------------------------------------------------------------------------


def _rag(tmp: Path, name: str, store: Store, embedder: Embedder) -> Rag:
    settings = Settings(data_dir=tmp / name, rag_chunk_tokens=120, rag_chunk_overlap=10)
    return Rag(settings, embedder, log=SharedDocuments(store))


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


def _titles(rag: Rag) -> set[str]:
    return {d["title"] for d in rag.index.list_documents(Access(everything=True))}


def test_documents_written_through_one_instance_are_searched_by_all(
    pg_stores: list[Store], embedder: Embedder, tmp_path: Path
) -> None:
    a, b, c = (_rag(tmp_path, n, s, embedder) for n, s in zip("abc", pg_stores, strict=True))
    folder = tmp_path / "docs"
    _write(folder, "tides.md", "# Tides\n\nThe moon's pull raises the sea twice a day.")
    a.ingester().run([folder])
    assert b.sync() == 1 and c.sync() == 1
    hits = c.search("what raises the sea", access=Access(everything=True))
    assert hits and hits[0].title == "Tides"

    # Removed through B: gone from A and C at their next sync.
    (doc,) = b.index.list_documents(Access(everything=True))
    b.index.remove([doc["doc_id"]])
    a.sync(), c.sync()
    assert _titles(a) == _titles(c) == set()
    assert not c.search("what raises the sea", access=Access(everything=True))


def test_two_instances_ingesting_at_once_lose_nothing(
    pg_stores: list[Store], embedder: Embedder, tmp_path: Path
) -> None:
    a, b, c = (_rag(tmp_path, n, s, embedder) for n, s in zip("abc", pg_stores, strict=True))
    left = [
        _write(tmp_path / "left", f"l{i}.md", f"# Left {i}\n\nleft text {i}") for i in range(12)
    ]
    right = [
        _write(tmp_path / "right", f"r{i}.md", f"# Right {i}\n\nright text {i}") for i in range(12)
    ]

    def ingest(rag: Rag, paths: list[Path]) -> None:
        for path in paths:  # one file per run: many small commits, interleaved
            rag.ingester().run([path])

    with ThreadPoolExecutor(2) as pool:
        for job in [pool.submit(ingest, a, left), pool.submit(ingest, b, right)]:
            job.result()
    wanted = {f"Left {i}" for i in range(12)} | {f"Right {i}" for i in range(12)}
    for rag in (a, b, c):
        rag.sync()
        assert _titles(rag) == wanted


def test_a_new_instance_rebuilds_from_the_database_and_a_hub_joining_keeps_its_documents(
    pg_stores: list[Store], embedder: Embedder, tmp_path: Path
) -> None:
    # A hub that ran alone has documents in its own index only.
    alone = Rag(Settings(data_dir=tmp_path / "alone"), embedder)
    alone.ingester().run([_write(tmp_path / "own", "own.md", "# Own\n\nkept through the move")])
    joined = _rag(tmp_path, "alone", pg_stores[0], embedder)  # now one of a fleet
    joined.sync()
    fresh = _rag(tmp_path, "fresh", pg_stores[1], embedder)
    assert fresh.sync() == 1
    assert _titles(fresh) == _titles(joined) == {"Own"}
    hits = fresh.search("kept through the move", access=Access(everything=True))
    assert hits and hits[0].title == "Own"
