"""When each feedback and request-log row was copied to Snowflake's tables (NULL: not
yet); indexed, so finding the rows still to send does not read the whole table.

Revision ID: 0004
"""

import sqlalchemy as sa
from alembic import op

from neve.store.tables import UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("feedback", "request_log")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("exported_at", UtcDateTime, nullable=True))
        op.create_index(f"ix_{table}_exported_at", table, ["exported_at"])


def downgrade() -> None:
    for table in TABLES:
        op.drop_index(f"ix_{table}_exported_at", table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column("exported_at")
