"""Conveniences for callers: tenant issuer names and Idempotency-Key records

Revision ID: 0008
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("issuer", sa.String(64)))
    op.create_table(
        "idempotency_keys",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("client_id", sa.String(40), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("response_ct", sa.Text),
        sa.Column("subject_pk", BigId),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_idempotency_keys")),
        sa.ForeignKeyConstraint(
            ["client_id"], ["clients.id"], name=op.f("fk_idempotency_keys_client_id_clients")
        ),
        sa.ForeignKeyConstraint(
            ["subject_pk"],
            ["subjects.pk"],
            name=op.f("fk_idempotency_keys_subject_pk_subjects"),
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint("client_id", "key_hash", name="uq_idempotency_keys_client_key"),
    )
    op.create_index("ix_idempotency_keys_created", "idempotency_keys", ["created_at"])
    op.create_index("ix_idempotency_keys_subject", "idempotency_keys", ["subject_pk"])


def downgrade() -> None:
    op.drop_table("idempotency_keys")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("issuer")
