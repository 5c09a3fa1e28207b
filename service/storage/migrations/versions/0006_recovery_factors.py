"""Recovery codes and attested proofing: code digests, tenant attestation keys, used jtis

Revision ID: 0006_recovery_factors
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "recovery_codes",
        sa.Column(
            "factor_id",
            sa.String(40),
            sa.ForeignKey(
                "factors.id", ondelete="CASCADE", name="fk_recovery_codes_factor_id_factors"
            ),
            nullable=False,
        ),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("used_at", TS),
        sa.UniqueConstraint("factor_id", "digest", name="uq_recovery_codes_factor_digest"),
    )
    op.create_table(
        "attestation_keys",
        sa.Column(
            "client_id",
            sa.String(40),
            sa.ForeignKey("clients.id", name="fk_attestation_keys_client_id_clients"),
            nullable=False,
        ),
        sa.Column("kid", sa.String(64), nullable=False),
        sa.Column("alg", sa.String(16), nullable=False),
        sa.Column("public_key", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "kid", name="pk_attestation_keys"),
    )
    op.create_table(
        "attestation_jtis",
        sa.Column("client_id", sa.String(40), nullable=False),
        sa.Column("jti", sa.String(128), nullable=False),
        sa.Column("used_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("client_id", "jti", name="pk_attestation_jtis"),
    )
    with op.batch_alter_table("verifications") as batch_op:
        batch_op.add_column(sa.Column("attested_method", sa.String(16), nullable=True))
    op.create_index(
        "uq_factors_one_recovery_code",
        "factors",
        ["subject_pk"],
        unique=True,
        sqlite_where=sa.text("type = 'recovery_code'"),
        postgresql_where=sa.text("type = 'recovery_code'"),
    )


def downgrade() -> None:
    op.drop_index("uq_factors_one_recovery_code", table_name="factors")
    with op.batch_alter_table("verifications") as batch_op:
        batch_op.drop_column("attested_method")
    op.drop_table("attestation_jtis")
    op.drop_table("attestation_keys")
    op.drop_table("recovery_codes")
