"""Alembic's entry point. neve runs migrations itself (Store.migrate), on a connection it
passes in; there is no alembic.ini."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(connection=connection, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
