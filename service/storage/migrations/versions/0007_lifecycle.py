"""The account lifecycle: delayed recoveries (ready_at, one waiting per subject) and erased phones

Revision ID: 0007_lifecycle
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("verifications") as batch_op:
        batch_op.add_column(sa.Column("ready_at", sa.DateTime(timezone=True), nullable=True))
    # API.md, Recovery: a subject has at most one waiting delayed recovery; the index is the
    # atomic guard on SQLite and PostgreSQL alike.
    op.create_index(
        "uq_verifications_one_waiting",
        "verifications",
        ["subject_pk"],
        unique=True,
        sqlite_where=sa.text("status = 'waiting'"),
        postgresql_where=sa.text("status = 'waiting'"),
    )
    # A phone erased from a tenant's subject: its keyed hash, the tenant and the time, nothing
    # else, kept 30 days so a re-created subject gets no onboarding exemption (issue 19, hole 2).
    op.create_table(
        "erased_phones",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("client_id", sa.String(40), nullable=False),
        sa.Column("phone_hash", sa.String(64), nullable=False),
        sa.Column("erased_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_erased_phones"),
    )
    op.create_index("ix_erased_phones_phone", "erased_phones", ["client_id", "phone_hash"])
    op.create_index("ix_erased_phones_erased_at", "erased_phones", ["erased_at"])


def downgrade() -> None:
    op.drop_index("ix_erased_phones_erased_at", table_name="erased_phones")
    op.drop_index("ix_erased_phones_phone", table_name="erased_phones")
    op.drop_table("erased_phones")
    op.drop_index("uq_verifications_one_waiting", table_name="verifications")
    with op.batch_alter_table("verifications") as batch_op:
        batch_op.drop_column("ready_at")
