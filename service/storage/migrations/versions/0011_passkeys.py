"""Passkeys: the tenant's WebAuthn relying party, a per-subject user handle, signature counters

Revision ID: 0011_passkeys
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("webauthn_rp_id", sa.String(253)))
        batch.add_column(sa.Column("webauthn_origins", sa.Text))
    with op.batch_alter_table("subjects") as batch:
        batch.add_column(sa.Column("webauthn_handle", sa.String(64)))
    with op.batch_alter_table("factors") as batch:
        batch.add_column(sa.Column("sign_count", sa.BigInteger))
    with op.batch_alter_table("verifications") as batch:
        batch.add_column(sa.Column("amr", sa.String(64)))


def downgrade() -> None:
    with op.batch_alter_table("verifications") as batch:
        batch.drop_column("amr")
    with op.batch_alter_table("factors") as batch:
        batch.drop_column("sign_count")
    with op.batch_alter_table("subjects") as batch:
        batch.drop_column("webauthn_handle")
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("webauthn_origins")
        batch.drop_column("webauthn_rp_id")
