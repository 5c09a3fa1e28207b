"""audit anchors: entries vouch for the other chains' heads; heads record when they moved

Revision ID: 0010
Revises: 0005

``audit_log.anchors`` (NULL on every existing entry, which keeps its v1 hash) and
``audit_heads.at``. Existing heads get the time of the upgrade, so the first writers after it
anchor them.
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("anchors", sa.Text(), nullable=True))
    with op.batch_alter_table("audit_heads", schema=None) as batch_op:
        batch_op.add_column(sa.Column("at", sa.DateTime(timezone=True), nullable=True))
    heads = sa.table("audit_heads", sa.column("at", sa.DateTime(timezone=True)))
    op.execute(heads.update().values(at=datetime.now(UTC)))


def downgrade() -> None:
    with op.batch_alter_table("audit_heads", schema=None) as batch_op:
        batch_op.drop_column("at")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_column("anchors")
