"""The relay's batch answers in the database, so a batch Snowflake retries onto another
hub instance is answered from the first attempt instead of generated again.

An instance claims a batch's key before it runs it and renews the claim while it runs; a
retry that finds the claim waits for the answer, and takes the batch over only when the
claim was not renewed within `claim_timeout` (its instance died). A failed batch leaves
no row, so its retry runs it afresh."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError

from neve.store.db import Store
from neve.store.tables import RelayBatch

POLL = 0.2  # seconds between looks at a batch another instance runs


class SharedRetryCache:
    def __init__(self, store: Store, ttl: float, claim_timeout: float) -> None:
        self.store = store
        self.ttl = ttl
        self.claim_timeout = claim_timeout
        self.owner = uuid.uuid4().hex  # this instance
        self._running: dict[str, asyncio.Future[dict[str, Any]]] = {}

    async def answer(
        self, key: str | None, compute: Callable[[], Awaitable[dict[str, Any]]]
    ) -> tuple[dict[str, Any], bool]:
        """(answer, whether it was a repeat)."""
        if key is None:
            return await compute(), False
        if key in self._running:  # a retry onto this same instance
            return await asyncio.shield(self._running[key]), True
        while True:
            try:
                found = await asyncio.to_thread(self._claim, key)
            except IntegrityError:  # another instance claimed it in the same instant
                continue
            if found is None:
                break
            if found.answer is not None:
                return found.answer, True
            await asyncio.sleep(POLL)  # another instance runs it
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._running[key] = future
        renewing = asyncio.create_task(self._renew(key))
        try:
            answer = await compute()
            await asyncio.to_thread(self._finish, key, answer)
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: a retry may or may not be waiting on it
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._release, key)
            raise
        finally:
            renewing.cancel()
            del self._running[key]
        future.set_result(answer)
        return answer, False

    def _claim(self, key: str) -> RelayBatch | None:
        """None when this instance now holds the batch; else the row that holds it."""
        now = time.time()
        with self.store.writing() as session:
            session.execute(delete(RelayBatch).where(RelayBatch.expires < now))
            found = session.get(RelayBatch, key, with_for_update=True)
            if found is not None:
                if found.answer is not None or found.renewed > now - self.claim_timeout:
                    session.expunge(found)
                    return found
                session.delete(found)  # its instance stopped renewing: taken over
                session.flush()
            expires = now + self.ttl + self.claim_timeout
            session.add(RelayBatch(key=key, owner=self.owner, renewed=now, expires=expires))
        return None

    async def _renew(self, key: str) -> None:
        while True:
            await asyncio.sleep(self.claim_timeout / 3)
            with contextlib.suppress(Exception):  # a missed renewal only risks a rerun
                await asyncio.to_thread(self._touch, key)

    def _touch(self, key: str) -> None:
        now = time.time()
        with self.store.writing() as session:
            session.execute(
                update(RelayBatch)
                .where(RelayBatch.key == key, RelayBatch.owner == self.owner)
                .values(renewed=now, expires=now + self.ttl + self.claim_timeout)
            )

    def _finish(self, key: str, answer: dict[str, Any]) -> None:
        with self.store.writing() as session:
            session.execute(
                update(RelayBatch)
                .where(RelayBatch.key == key)
                .values(owner=self.owner, answer=answer, expires=time.time() + self.ttl)
            )

    def _release(self, key: str) -> None:
        with self.store.writing() as session:
            session.execute(
                delete(RelayBatch).where(RelayBatch.key == key, RelayBatch.owner == self.owner)
            )
