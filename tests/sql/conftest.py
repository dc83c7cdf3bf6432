from __future__ import annotations

import contextlib
from collections.abc import Iterator

import duckdb

from neve.client import NeveClient
from neve.sql.duckdb import register
from tests.conftest import Hub


@contextlib.contextmanager
def connected(hub: Hub) -> Iterator[duckdb.DuckDBPyConnection]:
    """A DuckDB connection with neve's functions registered, answered by `hub`."""
    connection = duckdb.connect()
    with NeveClient(hub.url) as client:
        register(connection, client)
        yield connection
    connection.close()
