"""Migrations build the schema the code expects, from an empty database, on SQLite and
PostgreSQL; running them again changes nothing."""

from __future__ import annotations

import uuid

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from neve.store.db import MIGRATIONS, Store, StoreError
from neve.store.tables import Base
from tests.postgres import PgServer

TABLES = {"users", "groups", "user_groups", "api_keys", "conversations", "messages",
          "feedback", "request_log", "responses", "rate_spend", "relay_batches",
          "rag_documents", "rag_chunks", "rag_sequence", "alembic_version"}  # fmt: skip


def test_migrations_build_the_tables_from_empty(database_url: str) -> None:
    store = Store(database_url)
    assert set(inspect(store.engine).get_table_names()) == set()
    store.migrate()
    assert set(inspect(store.engine).get_table_names()) == TABLES
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == [], "the migrations and tables.py disagree"


def test_migrating_again_is_a_no_op(database_url: str) -> None:
    store = Store(database_url)
    store.migrate()
    with store.writing() as session:
        session.execute(text("INSERT INTO groups (name) VALUES ('kept')"))
    store.migrate()
    with store.reading() as session:
        assert session.execute(text("SELECT name FROM groups")).scalars().all() == ["kept"]
        assert session.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"


def test_an_unreachable_database_is_one_line() -> None:
    store = Store("postgresql+psycopg://neve:pw@127.0.0.1:9/nowhere", timeout=2)
    try:
        store.migrate()
    except StoreError as exc:
        message = str(exc)
    else:
        raise AssertionError("migrating an unreachable database succeeded")
    assert "\n" not in message
    assert "127.0.0.1:9/nowhere" in message and "pw" not in message


def test_a_postgresql_url_as_postgresql_writes_it_opens_with_psycopg(postgres: PgServer) -> None:
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    store = Store(plain)
    store.migrate()
    assert store.url.drivername == "postgresql+psycopg"
    assert set(inspect(store.engine).get_table_names()) == TABLES


def test_feedback_stored_before_a_migration_is_kept(database_url: str) -> None:
    """0002 rebuilds the feedback table on SQLite (to widen message_id): no row is lost."""
    store = Store(database_url)
    config = Config()
    config.set_main_option("script_location", MIGRATIONS)
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with store.engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO feedback (run_id, timestamp, score, user_prompt, message_id) "
            "VALUES ('r1', '2026-12-01 09:00:00+00:00', 1, 'kept?', 'm1')"))  # fmt: skip
    store.migrate()
    with store.reading() as session:
        rows = session.execute(text("SELECT run_id, user_prompt, message_id FROM feedback"))
        assert [tuple(r) for r in rows] == [("r1", "kept?", "m1")]
        long_id = "resp_" + "a" * 59
        session.execute(text(f"UPDATE feedback SET message_id = '{long_id}'"))
        assert session.execute(text("SELECT message_id FROM feedback")).scalar() == long_id
