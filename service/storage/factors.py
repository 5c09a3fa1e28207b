"""Factor records; secrets are ciphertext (TOTP secret, argon2 hash, device public key)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, select, update

from service.domain.clock import as_utc
from service.storage.tables import factors


@dataclass(frozen=True)
class FactorRecord:
    """One enrolled factor of a subject."""

    id: str
    subject_pk: int
    type: str
    status: str
    secret_ct: str
    alg: str | None
    label: str | None
    created_at: datetime
    # Unused codes of a recovery-code set (read by the decision snapshot); None for other types.
    remaining: int | None = None
    sign_count: int | None = None  # a passkey's signature counter

    @property
    def usable(self) -> bool:
        """Active, and not a recovery-code set with no code left (API.md: in no option)."""
        return self.status == "active" and self.remaining != 0


def _record(row) -> FactorRecord:  # type: ignore[no-untyped-def]
    return FactorRecord(
        id=row.id,
        subject_pk=row.subject_pk,
        type=row.type,
        status=row.status,
        secret_ct=row.secret_ct,
        alg=row.alg,
        label=row.label,
        created_at=as_utc(row.created_at),
        sign_count=row.sign_count,
    )


_FOR_SUBJECT = (
    select(factors).where(factors.c.subject_pk == bindparam("pk")).order_by(factors.c.created_at)
)


def for_subject(conn: Connection, subject_pk: int) -> list[FactorRecord]:
    """Every factor of a subject, oldest first."""
    rows = conn.execute(_FOR_SUBJECT, {"pk": subject_pk})
    return [_record(r) for r in rows]


def get(conn: Connection, subject_pk: int, factor_id: str) -> FactorRecord | None:
    """A factor of this subject (another subject's factor is not found)."""
    row = conn.execute(
        select(factors).where(factors.c.subject_pk == subject_pk, factors.c.id == factor_id)
    ).first()
    return _record(row) if row else None


def insert(
    conn: Connection,
    *,
    factor_id: str,
    subject_pk: int,
    type: str,
    status: str,
    secret_ct: str,
    alg: str | None,
    label: str | None,
    now: datetime,
) -> None:
    """Store a new factor."""
    conn.execute(
        factors.insert().values(
            id=factor_id,
            subject_pk=subject_pk,
            type=type,
            status=status,
            secret_ct=secret_ct,
            alg=alg,
            label=label,
            created_at=now,
            activated_at=now if status == "active" else None,
        )
    )


def activate(conn: Connection, factor_id: str, now: datetime) -> bool:
    """Move a pending factor to active; False if it was not pending."""
    res = conn.execute(
        update(factors)
        .where(factors.c.id == factor_id, factors.c.status == "pending")
        .values(status="active", activated_at=now)
    )
    return res.rowcount == 1


def activate_credential(
    conn: Connection, factor_id: str, secret_ct: str, sign_count: int, now: datetime
) -> bool:
    """Store a verified passkey credential and activate it, once: False when the factor was
    no longer pending (its registration challenge was already spent)."""
    res = conn.execute(
        update(factors)
        .where(factors.c.id == factor_id, factors.c.status == "pending")
        .values(status="active", activated_at=now, secret_ct=secret_ct, sign_count=sign_count)
    )
    return res.rowcount == 1


def advance_sign_count(conn: Connection, factor_id: str, seen: int, new: int) -> bool:
    """Compare-and-set of a passkey's signature counter: False when another proof moved it
    since ``seen`` was read (two racing proofs with one counter value: one wins)."""
    res = conn.execute(
        update(factors)
        .where(factors.c.id == factor_id, factors.c.sign_count == seen)
        .values(sign_count=new)
    )
    return res.rowcount == 1


def replace_secret(conn: Connection, factor_id: str, secret_ct: str) -> None:
    """Store a re-encrypted or rehashed secret."""
    conn.execute(update(factors).where(factors.c.id == factor_id).values(secret_ct=secret_ct))


def remove(conn: Connection, factor_id: str) -> None:
    """Delete a factor."""
    conn.execute(delete(factors).where(factors.c.id == factor_id))


def revoke(conn: Connection, subject_pk: int, types: frozenset[str]) -> list[str]:
    """Revoke the subject's factors of these types (a recovery); returns the revoked ids.

    Revoked factors stay listed as ``revoked`` and are in no option ever again (ASVS 6.5.6)."""
    rows = conn.execute(
        update(factors)
        .where(
            factors.c.subject_pk == subject_pk,
            factors.c.type.in_(sorted(types)),
            factors.c.status != "revoked",
        )
        .values(status="revoked")
        .returning(factors.c.id)
    )
    return sorted(r.id for r in rows)
