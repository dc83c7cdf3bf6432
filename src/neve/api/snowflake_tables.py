"""Feedback and the request log copied into tables of the user's Snowflake database, as
they are written (setting `snowflake_tables`; on by itself inside SPCS). The local store
stays the record: a row is marked sent only after Snowflake took it, so while the hub or
Snowflake is away rows wait in the store, and each batch is a MERGE on the row's key, so
one sent twice lands once."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

from neve.config import Settings
from neve.logs import first_line
from neve.snowflake import session
from neve.snowflake.tables import FEEDBACK, REQUEST_LOG, TABLES, Table
from neve.store import outbox
from neve.store.db import Store

log = logging.getLogger("neve.api")


def wanted(settings: Settings) -> bool:
    if settings.snowflake_tables == "auto":
        return session.in_spcs()
    return settings.snowflake_tables == "on"


class SnowflakeTables:
    """Sends what the store has not yet sent, one table after the other, `rows` at a time,
    over one connection that is opened when first needed and again after a failure."""

    def __init__(
        self, store: Store, connect: Callable[[], Any], names: dict[str, str], rows: int
    ) -> None:
        self.store = store
        self.connect = connect
        self.names = names  # source table → the Snowflake table's qualified name
        self.rows = rows
        self._connection: Any = None

    @classmethod
    def configured(cls, settings: Settings, store: Store) -> SnowflakeTables:
        spcs = settings.spcs
        names = {
            FEEDBACK.source: spcs.qualified(spcs.feedback_table),
            REQUEST_LOG.source: spcs.qualified(spcs.request_log_table),
        }
        connect = functools.partial(session.connect, spcs, in_schema=True)
        return cls(store, connect, names, settings.snowflake_export_rows)

    def send(self) -> int:
        """Send every row waiting now; returns how many. Raises what the store or
        Snowflake raised, having sent (and marked) the batches before it."""
        sent = 0
        try:
            for table in TABLES:
                while rows := outbox.pending(self.store, table.source, self.rows):
                    self._merge(table, rows)
                    outbox.mark(self.store, table.source, [r[table.key.lower()] for r in rows])
                    sent += len(rows)
        except BaseException:
            self.close()  # a connection that failed once is not trusted again
            raise
        return sent

    def _merge(self, table: Table, rows: list[dict[str, Any]]) -> None:
        if self._connection is None:
            self._connection = self.connect()
            cursor = self._connection.cursor()
            for each in TABLES:  # as `neve deploy spcs up` does; a no-op when it has
                cursor.execute(each.create(self.names[each.source]))
        self._connection.cursor().execute(
            table.merge(self.names[table.source], len(rows)), table.bound(rows)
        )

    def close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # already gone
                self._connection.close()
            self._connection = None


async def keep_sending(tables: SnowflakeTables, interval: float) -> None:
    """Send every `interval` seconds; while sending fails, say so once and wait longer
    (up to ten intervals) before the next try."""
    failing = 0
    while True:
        try:
            sent = await asyncio.to_thread(tables.send)
            if failing:
                log.warning("Snowflake tables written again", extra={"rows": sent})
            failing = 0
        except Exception as exc:  # the connector's, the store's, ours: all wait alike
            if not failing:
                log.warning(
                    "Snowflake tables wait: rows stay in the store until it answers",
                    extra={"error": first_line(exc)},
                )
            failing += 1
        await asyncio.sleep(interval * min(2**failing, 10) if failing else interval)
