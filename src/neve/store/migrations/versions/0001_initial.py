"""The first schema: users, groups, API keys, conversations, messages, feedback and the
request log.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

from neve.store.tables import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_table(
        "groups",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False, unique=True),
    )
    op.create_table(
        "user_groups",
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
        ),
        sa.Column(
            "group_id", sa.Integer, sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True
        ),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column(
            "user_id", sa.Integer, sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False, unique=True),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("rpm", sa.Integer),
        sa.Column("tpm", sa.Integer),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("revoked_at", UtcDateTime),
    )
    op.create_index("ix_api_keys_user_id", "api_keys", ["user_id"])
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("username", sa.String(200), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False),
        sa.Column("updated_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_conversations_username", "conversations", ["username"])
    op.create_table(
        "messages",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "conversation_id",
            sa.String(36),
            sa.ForeignKey("conversations.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("reasoning", sa.Text),
        sa.Column("model", sa.String(200)),
        sa.Column("citations", sa.JSON),
        sa.Column("created_at", UtcDateTime, nullable=False),
    )
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])
    op.create_table(
        "feedback",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("timestamp", UtcDateTime, nullable=False),
        sa.Column("user_prompt", sa.Text),
        sa.Column("assistant_response", sa.Text),
        sa.Column("score", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text),
        sa.Column("model", sa.String(200)),
        sa.Column("username", sa.String(200)),
        sa.Column("conversation_id", sa.String(36)),
        sa.Column("message_id", sa.String(36)),
    )
    op.create_index("ix_feedback_timestamp", "feedback", ["timestamp"])
    op.create_index("ix_feedback_username", "feedback", ["username"])
    op.create_table(
        "request_log",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("time", UtcDateTime, nullable=False),
        sa.Column("username", sa.String(200)),
        sa.Column("key_id", sa.String(32)),
        sa.Column("route", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("ttft_ms", sa.Float),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_index("ix_request_log_time", "request_log", ["time"])


def downgrade() -> None:
    for table in ("request_log", "feedback", "messages", "conversations", "api_keys",
                  "user_groups", "groups", "users"):  # fmt: skip
        op.drop_table(table)
