"""Responses of the Responses API, stored for their users; a feedback row's message_id
may name one (their ids run longer than a UUID).

Revision ID: 0002
"""

import sqlalchemy as sa
from alembic import op

from neve.store.tables import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("previous_response_id", sa.String(64)),
        sa.Column("input", sa.JSON, nullable=False),
        sa.Column("response", sa.JSON, nullable=False),
    )
    op.create_index("ix_responses_username", "responses", ["username"])
    # SQLite cannot alter a column: batch mode copies the table, rows and all.
    with op.batch_alter_table("feedback") as table:
        table.alter_column("message_id", type_=sa.String(64), existing_type=sa.String(36))


def downgrade() -> None:
    with op.batch_alter_table("feedback") as table:
        table.alter_column("message_id", type_=sa.String(36), existing_type=sa.String(64))
    op.drop_table("responses")
