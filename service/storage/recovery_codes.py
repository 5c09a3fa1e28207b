"""Recovery-code digests of a set (a ``recovery_code`` factor) and their single use."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, func, insert, select, update

from service.storage.lean import Lean
from service.storage.tables import recovery_codes


def add_set(conn: Connection, factor_id: str, digests: list[str]) -> None:
    """Store the keyed hashes of a new set (never the codes)."""
    conn.execute(insert(recovery_codes), [{"factor_id": factor_id, "digest": d} for d in digests])


# ASVS 6.5.1, NIST SP 800-63B-4 look-up secrets: one conditional UPDATE decides atomically, so
# two concurrent proofs with one code get exactly one success (no read-then-write).
_USE = Lean(
    update(recovery_codes)
    .where(
        recovery_codes.c.factor_id == bindparam("b_factor_id"),
        recovery_codes.c.digest == bindparam("b_digest"),
        recovery_codes.c.used_at.is_(None),
    )
    .values(used_at=bindparam("b_now"))
)


def use(conn: Connection, factor_id: str, digest: str, now: datetime) -> bool:
    """Spend the code with this digest; False when the set has no such unused code."""
    return _USE.rowcount(conn, {"b_factor_id": factor_id, "b_digest": digest, "b_now": now}) == 1


def remaining(conn: Connection, factor_ids: list[str]) -> dict[str, int]:
    """Unused codes per set (sets with none left map to 0)."""
    if not factor_ids:
        return {}
    rows = conn.execute(
        select(recovery_codes.c.factor_id, func.count())
        .where(recovery_codes.c.factor_id.in_(factor_ids), recovery_codes.c.used_at.is_(None))
        .group_by(recovery_codes.c.factor_id)
    )
    counts = dict.fromkeys(factor_ids, 0)
    counts.update({fid: int(n) for fid, n in rows})
    return counts
