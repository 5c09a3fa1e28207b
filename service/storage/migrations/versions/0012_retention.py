"""retention: the indexes the purge walks, and audit-chain checkpoints for pruned prefixes

Revision ID: 0012_retention
Revises: 0010

Issue 23. Each purge finds its next batch by an index on the time the record stopped
mattering, so a batch is a short range scan, never a table scan holding the writer (webhooks
use ``ix_webhook_outbox_due``, idempotency records ``ix_idempotency_keys_created``, audit
entries ``ix_audit_log_at`` and ``uq_audit_log_writer_seq``, all there already).
``audit_checkpoints`` records, sealed, where the kept part of each pruned audit chain starts
(``service.storage.audit``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_INDEXES = (
    ("ix_verifications_expires_at", "verifications", ["expires_at"]),
    ("ix_challenges_expires_at", "challenges", ["expires_at"]),
    ("ix_totp_used_steps_used_at", "totp_used_steps", ["used_at"]),
    ("ix_used_assertions_expires_at", "used_assertions", ["expires_at"]),
    ("ix_attestation_jtis_used_at", "attestation_jtis", ["used_at"]),
    # received_at, not occurred_at: an index that leads with occurred_at tempts PostgreSQL to
    # answer a decision's max(occurred_at) per phone and type by scanning it backwards.
    ("ix_carrier_events_received", "carrier_events", ["received_at"]),
)


def upgrade() -> None:
    for name, table, columns in _INDEXES:
        op.create_index(name, table, columns)
    op.create_table(
        "audit_checkpoints",
        sa.Column("writer", sa.String(40), primary_key=True),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("mac", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("writer", name="pk_audit_checkpoints"),
    )


def downgrade() -> None:
    op.drop_table("audit_checkpoints")
    for name, table, _columns in reversed(_INDEXES):
        op.drop_index(name, table_name=table)
