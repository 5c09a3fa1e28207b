"""Single-use records: TOTP time steps, consumed assertions, challenge nonces.

Each is one ``INSERT ... ON CONFLICT DO NOTHING`` (or a guarded UPDATE): the unique constraint
decides atomically, so two concurrent requests with one code get exactly one success
(RFC 6238 §5.2, ASVS 6.5.1). No read-then-write.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Table, bindparam, select, update
from sqlalchemy.dialects import postgresql, sqlite

from service.storage.lean import Lean
from service.storage.tables import TS, challenges, totp_used_steps, used_assertions


@functools.cache
def _insert_once(dialect_name: str, table: Table, columns: tuple[str, ...]) -> Lean:
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    first = next(iter(table.columns))
    # RETURNING, not rowcount: psycopg reports rowcount -1 for INSERT ... ON CONFLICT here.
    return Lean(
        dialect.insert(table)
        .values({name: bindparam(name) for name in columns})
        .on_conflict_do_nothing()
        .returning(first)
    )


def insert_once(conn: Connection, table: Table, **values: Any) -> bool:
    """Insert a row unless its unique key exists; True when this call inserted it."""
    statement = _insert_once(conn.dialect.name, table, tuple(sorted(values)))
    return statement.first(conn, values) is not None


def use_totp_step(conn: Connection, factor_id: str, step: int, now: datetime) -> bool:
    """Record that the TOTP code of ``step`` was used; False if it was used before."""
    return insert_once(conn, totp_used_steps, factor_id=factor_id, step=step, used_at=now)


def consume_assertion(conn: Connection, jti: str, expires_at: datetime, now: datetime) -> bool:
    """Mark an assertion as used where idv consumes it; False on a second use."""
    return insert_once(conn, used_assertions, jti=jti, used_at=now, expires_at=expires_at)


def add_challenge(
    conn: Connection,
    *,
    verification_id: str,
    factor: str,
    digest: str,
    now: datetime,
    expires_at: datetime,
) -> None:
    """Store an issued challenge (SMS code digest or device nonce digest)."""
    conn.execute(
        challenges.insert().values(
            verification_id=verification_id,
            factor=factor,
            digest=digest,
            created_at=now,
            expires_at=expires_at,
        )
    )


# A proof is checked against the newest few live challenges of its factor, never all of them.
# A device proof names no challenge, so each live one costs a signature verification: 2,000
# challenges requested for one verification made each wrong proof 152 ms of CPU, spent while
# holding the verification row (on SQLite, the process's one writer). A device signs the
# challenge it was just given and an SMS code is typed from the latest messages, so five is
# plenty; SMS sends are limited per phone anyway.
LIVE_CHALLENGES = 5

_LIVE = Lean(
    select(challenges.c.id, challenges.c.digest)
    .where(
        challenges.c.verification_id == bindparam("verification_id"),
        challenges.c.factor == bindparam("factor"),
        challenges.c.used_at.is_(None),
        challenges.c.expires_at > bindparam("now", type_=TS),
    )
    .order_by(challenges.c.id.desc())
    .limit(LIVE_CHALLENGES)
)
_USE = Lean(
    update(challenges)
    .where(challenges.c.id == bindparam("b_id"), challenges.c.used_at.is_(None))
    .values(used_at=bindparam("b_now"))
)


def live_challenges(
    conn: Connection, verification_id: str, factor: str, now: datetime
) -> list[tuple[int, str]]:
    """The newest ``LIVE_CHALLENGES`` unused, unexpired challenges of a verification for a
    factor: (id, digest), newest first."""
    rows = _LIVE.all(conn, {"verification_id": verification_id, "factor": factor, "now": now})
    return [(r.id, r.digest) for r in rows]


def use_challenge(conn: Connection, challenge_id: int, now: datetime) -> bool:
    """Spend a challenge; False if another request spent it first."""
    return _USE.rowcount(conn, {"b_id": challenge_id, "b_now": now}) == 1


def count_recent_challenges(conn: Connection, verification_id: str, factor: str) -> int:
    """How many challenges of this factor a verification has been sent."""
    from sqlalchemy import func

    return int(
        conn.execute(
            select(func.count())
            .select_from(challenges)
            .where(challenges.c.verification_id == verification_id, challenges.c.factor == factor)
        ).scalar_one()
    )
