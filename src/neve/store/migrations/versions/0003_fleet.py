"""What several hub instances share: rate windows, the relay's batch answers, and the
documents with their chunks (each instance's LanceDB index is a replica of them). On
PostgreSQL, the function that checks and counts a request against its key's minute in
one round trip (neve.store.limits).

Revision ID: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_spend",
        sa.Column("key", sa.String(240), primary_key=True),
        sa.Column("second", sa.BigInteger, primary_key=True),
        sa.Column("requests", sa.Integer, nullable=False),
        sa.Column("tokens", sa.Integer, nullable=False),
    )
    op.create_table(
        "relay_batches",
        sa.Column("key", sa.String(240), primary_key=True),
        sa.Column("owner", sa.String(64), nullable=False),
        sa.Column("renewed", sa.Float, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
        sa.Column("answer", sa.JSON),
    )
    op.create_index("ix_relay_batches_expires", "relay_batches", ["expires"])
    op.create_table(
        "rag_documents",
        sa.Column("doc_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("row", sa.JSON),
    )
    op.create_index("ix_rag_documents_seq", "rag_documents", ["seq"])
    op.create_table(
        "rag_chunks",
        sa.Column("id", sa.String(80), primary_key=True),
        sa.Column(
            "doc_id",
            sa.String(64),
            sa.ForeignKey("rag_documents.doc_id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("row", sa.JSON, nullable=False),
        sa.Column("vector", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_rag_chunks_doc_id", "rag_chunks", ["doc_id"])
    sequence = op.create_table(
        "rag_sequence",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(sequence, [{"id": 1, "seq": 0}])
    if op.get_bind().dialect.name == "postgresql":
        op.execute(ADMIT)


# The key's lock, the seconds that left the minute forgotten, the rest summed, and the
# request counted if it may go: one statement, so one round trip per request.
ADMIT = """
CREATE FUNCTION neve_admit(p_key text, p_now double precision, p_rpm integer, p_tpm integer)
RETURNS TABLE (refused text, wait integer) AS $$
DECLARE
  sec bigint := floor(p_now);
  req bigint;
  tok bigint;
  first_req bigint;
  first_tok bigint;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext(p_key));
  DELETE FROM rate_spend WHERE key = p_key AND second <= sec - 60;
  SELECT coalesce(sum(requests), 0), coalesce(sum(tokens), 0),
         min(second) FILTER (WHERE requests > 0), min(second) FILTER (WHERE tokens > 0)
    INTO req, tok, first_req, first_tok FROM rate_spend WHERE key = p_key;
  IF p_rpm > 0 AND req >= p_rpm THEN
    RETURN QUERY SELECT 'rpm', greatest(1, ceil(first_req + 60 - p_now))::integer;
  ELSIF p_tpm > 0 AND tok >= p_tpm THEN
    RETURN QUERY SELECT 'tpm', greatest(1, ceil(first_tok + 60 - p_now))::integer;
  ELSE
    INSERT INTO rate_spend (key, second, requests, tokens) VALUES (p_key, sec, 1, 0)
      ON CONFLICT (key, second) DO UPDATE SET requests = rate_spend.requests + 1;
  END IF;
END
$$ LANGUAGE plpgsql
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION neve_admit")
    for table in ("rag_sequence", "rag_chunks", "rag_documents", "relay_batches", "rate_spend"):
        op.drop_table(table)
