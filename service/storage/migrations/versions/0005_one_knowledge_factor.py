"""At most one knowledge factor per subject (a partial unique index)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Keep the newest knowledge factor of any subject that has several (older code allowed a race).
    op.execute(
        "DELETE FROM factors WHERE type = 'knowledge' AND id NOT IN ("
        " SELECT id FROM (SELECT f.id FROM factors f WHERE f.type = 'knowledge' AND f.created_at ="
        " (SELECT MAX(g.created_at) FROM factors g WHERE g.subject_pk = f.subject_pk"
        " AND g.type = 'knowledge')) AS newest)"
    )
    op.create_index(
        "uq_factors_one_knowledge",
        "factors",
        ["subject_pk"],
        unique=True,
        sqlite_where=sa.text("type = 'knowledge'"),
        postgresql_where=sa.text("type = 'knowledge'"),
    )


def downgrade() -> None:
    op.drop_index("uq_factors_one_knowledge", table_name="factors")
