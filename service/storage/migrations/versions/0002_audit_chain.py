"""audit chain: a hash chain per writer with MACs, and the chain heads

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 14:00:00.000000

Entries written before this revision are chained under the writer ``w-pre0002`` with their
hashes computed here, but without a MAC (the migration has no key): ``idv audit verify``
reports them as not sealed, because they never were.
"""

import hashlib
import json
from datetime import UTC

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

LEGACY_WRITER = "w-pre0002"
GENESIS = "0" * 64


def _hash(row: dict) -> str:
    # A frozen copy of service.storage.audit.entry_hash (v1), so this revision never changes.
    at = row["at"]
    at = at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)
    fields = [
        "idv-audit-v1",
        row["writer"],
        int(row["seq"]),
        row["prev_hash"],
        at.isoformat(timespec="microseconds"),
        row["client_id"],
        row["operator"],
        row["event"],
        row["subject_ref"],
        row["outcome"],
        row["detail"],
        row["ip"],
    ]
    data = json.dumps(fields, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(data.encode()).hexdigest()


def upgrade() -> None:
    op.create_table(
        "audit_heads",
        sa.Column("writer", sa.String(length=40), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("mac", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("writer", name=op.f("pk_audit_heads")),
    )
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("writer", sa.String(length=40), nullable=True))
        batch_op.add_column(sa.Column("seq", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("prev_hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("hash", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("mac", sa.String(length=64), nullable=True))

    names = ["id", "client_id", "operator", "event", "subject_ref", "outcome", "detail", "ip"]
    names += ["writer", "seq", "prev_hash", "hash", "mac"]
    log = sa.table(
        "audit_log",
        *(sa.column(name) for name in names),
        sa.column("at", sa.DateTime(timezone=True)),
    )
    bind = op.get_bind()
    prev = GENESIS
    rows = bind.execute(sa.select(log).order_by(log.c.id)).mappings().all()
    for seq, old in enumerate(rows, start=1):
        row = {**old, "writer": LEGACY_WRITER, "seq": seq, "prev_hash": prev}
        prev = _hash(row)
        bind.execute(
            log.update()
            .where(log.c.id == old["id"])
            .values(writer=LEGACY_WRITER, seq=seq, prev_hash=row["prev_hash"], hash=prev, mac="")
        )

    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        for name, type_ in (
            ("writer", sa.String(length=40)),
            ("seq", sa.BigInteger()),
            ("prev_hash", sa.String(length=64)),
            ("hash", sa.String(length=64)),
            ("mac", sa.String(length=64)),
        ):
            batch_op.alter_column(name, existing_type=type_, nullable=False)
        batch_op.create_unique_constraint("uq_audit_log_writer_seq", ["writer", "seq"])
        batch_op.create_index("ix_audit_log_at", ["at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_log_at")
        batch_op.drop_constraint("uq_audit_log_writer_seq", type_="unique")
        batch_op.drop_column("mac")
        batch_op.drop_column("hash")
        batch_op.drop_column("prev_hash")
        batch_op.drop_column("seq")
        batch_op.drop_column("writer")
    op.drop_table("audit_heads")
