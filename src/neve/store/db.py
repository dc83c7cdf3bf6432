"""Opening the database, migrating it, and sessions that read or write it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from neve.config import Settings
from neve.errors import Unavailable

MIGRATIONS = str(Path(__file__).with_name("migrations"))


class StoreError(Unavailable):
    """The database cannot be opened or used; the message is one line."""


class Store:
    def __init__(self, url: str, *, timeout: float = 10, pool_size: int = 10) -> None:
        self.url = make_url(url)
        if self.url.drivername in ("postgresql", "postgres"):
            # The URL PostgreSQL's own tools take; SQLAlchemy would pick psycopg2 for it,
            # which neve does not install.
            self.url = self.url.set(drivername="postgresql+psycopg")
        self.shown = self.url.render_as_string(hide_password=True)
        if self.url.get_backend_name() == "sqlite":
            if self.url.database:
                Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(self.url, connect_args={"timeout": timeout})
            _sqlite_pragmas(self.engine)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                pool_pre_ping=True,  # a restarted server's dead connections are replaced
                connect_args={"connect_timeout": max(1, int(timeout))},
            )
        # Writers take SQLite's write lock when they begin, not on their first write: a
        # deferred transaction that reads and then writes can fail at once under WAL.
        self._writer = self.engine.execution_options(sqlite_immediate=True)

    @classmethod
    def open(cls, settings: Settings) -> Store:
        """The configured database, migrated to the current schema."""
        if settings.database_url is not None:
            url = settings.database_url.get_secret_value()
        else:
            url = f"sqlite:///{settings.data_dir / 'neve.db'}"
        try:
            store = cls(url, timeout=settings.database_timeout, pool_size=settings.database_pool)
        except (SQLAlchemyError, ImportError, ValueError) as exc:
            raise StoreError(f"cannot use database_url: {_first_line(exc)}") from None
        store.migrate()
        return store

    def migrate(self) -> None:
        """Bring the schema to the newest migration; a no-op when it is there already."""
        config = Config()
        config.set_main_option("script_location", MIGRATIONS)
        try:
            with self._writer.begin() as connection:
                config.attributes["connection"] = connection
                command.upgrade(config, "head")
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot migrate the database {self.shown}: {_first_line(exc)}"
            ) from None

    @contextmanager
    def reading(self) -> Iterator[Session]:
        with Session(self.engine) as session:
            yield session

    @contextmanager
    def writing(self) -> Iterator[Session]:
        """A session committed on leaving, rolled back on an error."""
        with Session(self._writer, expire_on_commit=False) as session, session.begin():
            yield session

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # SQLAlchemy's begin event issues BEGIN
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def begin(connection: Any) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else exc.__class__.__name__
