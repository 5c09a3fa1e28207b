"""A tenant's SMS calling regions (issue 20 item 4: SMS pumping)

Revision ID: 0009_tenant_sms
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ISO 3166 region codes, comma-separated (``CN,HK``); NULL: any region, throttled per
    # calling code.
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("sms_regions", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.drop_column("sms_regions")
