"""Verification records and their atomic state transitions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, func, select, update

from service.domain.clock import as_utc
from service.storage import clients as client_store
from service.storage.clients import ClientRecord
from service.storage.lean import Lean
from service.storage.subjects import LABELLED, SubjectRecord, record_of
from service.storage.tables import clients, subject_events, subjects, verifications


@dataclass(frozen=True)
class VerificationRecord:
    """A step-up verification as stored."""

    id: str
    client_id: str
    subject_pk: int
    action: str
    status: str
    options: list[list[str]]
    reasons: list[str]
    satisfied: list[str]
    failures: int
    created_at: datetime
    expires_at: datetime
    held_until: datetime | None = None
    attested_method: str | None = None  # the method of the attestation it accepted
    ready_at: datetime | None = None  # a delayed recovery: when its wait ends
    amr: tuple[str, ...] = ()  # RFC 8176 values its accepted proofs reported (a passkey's)


# A delayed recovery waits, then takes proofs like a pending verification (API.md, Recovery).
OPEN = (verifications.c.status == "pending") | (verifications.c.status == "waiting")


def _record(row) -> VerificationRecord:  # type: ignore[no-untyped-def]
    return VerificationRecord(
        id=row.id,
        client_id=row.client_id,
        subject_pk=row.subject_pk,
        action=row.action,
        status=row.status,
        options=json.loads(row.options),
        reasons=json.loads(row.reasons),
        satisfied=json.loads(row.satisfied),
        failures=row.failures,
        created_at=as_utc(row.created_at),
        expires_at=as_utc(row.expires_at),
        held_until=as_utc(row.held_until) if row.held_until else None,
        ready_at=as_utc(row.ready_at) if row.ready_at else None,
        attested_method=row.attested_method,
        amr=tuple((row.amr or "").split()),
    )


_INSERT = Lean(
    verifications.insert().values(
        {c.name: bindparam(c.name) for c in verifications.c}  # every column, named as itself
    )
)


def insert(
    conn: Connection,
    *,
    verification_id: str,
    client_id: str,
    subject_pk: int,
    action: str,
    status: str,
    options: list[list[str]],
    reasons: list[str],
    now: datetime,
    expires_at: datetime,
    held_until: datetime | None = None,
) -> VerificationRecord:
    """Store a new verification; returns it as stored (no read back)."""
    record = VerificationRecord(
        id=verification_id,
        client_id=client_id,
        subject_pk=subject_pk,
        action=action,
        status=status,
        options=options,
        reasons=reasons,
        satisfied=[],
        failures=0,
        created_at=now,
        expires_at=expires_at,
        held_until=held_until,
    )
    _INSERT.rowcount(
        conn,
        {
            "id": verification_id,
            "client_id": client_id,
            "subject_pk": subject_pk,
            "action": action,
            "status": status,
            "options": json.dumps(options),
            "reasons": json.dumps(reasons),
            "satisfied": "[]",
            "failures": 0,
            "created_at": now,
            "expires_at": expires_at,
            "completed_at": now if status != "pending" else None,
            "held_until": held_until,
            "ready_at": None,
            "attested_method": None,
            "amr": None,
        },
    )
    return record


_SELECT = select(verifications).where(
    verifications.c.id == bindparam("id"), verifications.c.client_id == bindparam("client_id")
)
# Lean: a knowledge proof reads the verification again, row-locked, after argon2 (every checked
# PIN of a flood runs this; see usecases/proofs.py).
_GET = Lean(_SELECT)
_GET_FOR_UPDATE = Lean(_SELECT.with_for_update())


def get(
    conn: Connection, client_id: str, verification_id: str, *, for_update: bool = False
) -> VerificationRecord | None:
    """A verification of this client (another client's is not found); optionally row-locked
    (PostgreSQL ``FOR UPDATE``; SQLite transactions are already serialised)."""
    query = _GET_FOR_UPDATE if for_update else _GET
    row = query.first(conn, {"id": verification_id, "client_id": client_id})
    return _record(row) if row else None


_WITH_SUBJECT = (
    select(verifications, *LABELLED)
    .join(subjects, subjects.c.pk == verifications.c.subject_pk)
    .where(
        verifications.c.id == bindparam("id"), verifications.c.client_id == bindparam("client_id")
    )
)
# PostgreSQL: lock the verification row only; the subject row is read, not locked.
_WITH_SUBJECT_FOR_UPDATE = Lean(_WITH_SUBJECT.with_for_update(of=verifications))
_WITH_SUBJECT_READ = Lean(_WITH_SUBJECT)


# The same with the caller's client row (and its stored key hash), for a proof whose API key
# this process knew: its revocation and expiry are read here, not in a statement of their own.
_WITH_CLIENT = _WITH_SUBJECT.add_columns(*[c.label(f"c_{c.name}") for c in clients.c]).join(
    clients, clients.c.id == verifications.c.client_id
)
_WITH_CLIENT_FOR_UPDATE = Lean(_WITH_CLIENT.with_for_update(of=verifications))
_WITH_CLIENT_READ = Lean(_WITH_CLIENT)


def get_with_subject_and_client(
    conn: Connection, client_id: str, verification_id: str, *, for_update: bool = False
) -> tuple[VerificationRecord, SubjectRecord, ClientRecord, str] | None:
    """``get_with_subject`` and the verification's client as stored now, with its key hash."""
    query = _WITH_CLIENT_FOR_UPDATE if for_update else _WITH_CLIENT_READ
    row = query.first(conn, {"id": verification_id, "client_id": client_id})
    if row is None:
        return None
    client = client_store.record_of(row, prefix="c_")
    return _record(row), record_of(row, prefix="s_"), client, row.c_key_hash


def get_with_subject(
    conn: Connection, client_id: str, verification_id: str, *, for_update: bool = False
) -> tuple[VerificationRecord, SubjectRecord] | None:
    """A verification of this client and its subject, in one statement (see ``get``)."""
    query = _WITH_SUBJECT_FOR_UPDATE if for_update else _WITH_SUBJECT_READ
    row = query.first(conn, {"id": verification_id, "client_id": client_id})
    if row is None:
        return None
    return _record(row), record_of(row, prefix="s_")


def set_status(
    conn: Connection, verification_id: str, status: str, now: datetime, *, was: str = "pending"
) -> bool:
    """Move a verification from ``was`` (pending) to a final status; False if it had moved on."""
    res = conn.execute(
        update(verifications)
        .where(verifications.c.id == verification_id, verifications.c.status == was)
        .values(status=status, completed_at=now)
    )
    return res.rowcount == 1


def start_wait(
    conn: Connection,
    record: VerificationRecord,
    ready_at: datetime,
    expires_at: datetime,
    now: datetime,
) -> None:
    """A delayed recovery's first proof: ``waiting`` until ``ready_at``, then open for proofs
    until ``expires_at``; nothing proven yet for the second stage. A subject's other waiting
    verification makes the partial unique index refuse it (``IntegrityError``): expired ones
    are closed first, in the same transaction."""
    conn.execute(
        update(verifications)
        .where(
            verifications.c.subject_pk == record.subject_pk,
            verifications.c.status == "waiting",
            verifications.c.expires_at <= now,
        )
        .values(status="expired", completed_at=now)
    )
    conn.execute(
        update(verifications)
        .where(verifications.c.id == record.id, verifications.c.status == "pending")
        .values(status="waiting", satisfied="[]", ready_at=ready_at, expires_at=expires_at)
    )


def waiting_for(conn: Connection, subject_pk: int) -> list[VerificationRecord]:
    """The subject's waiting delayed recoveries (at most one; stale ones not yet closed)."""
    rows = conn.execute(
        select(verifications).where(
            verifications.c.subject_pk == subject_pk, verifications.c.status == "waiting"
        )
    )
    return [_record(r) for r in rows]


def close_waits(conn: Connection, subject_pk: int, now: datetime) -> None:
    """A completed recovery supersedes any other waiting one of the subject (its suspension
    would otherwise hold the factors the person enrols next)."""
    conn.execute(
        update(verifications)
        .where(verifications.c.subject_pk == subject_pk, verifications.c.status == "waiting")
        .values(status="cancelled", completed_at=now)
    )


def extend_waits(conn: Connection, subject_pk: int, by: timedelta) -> None:
    """A subject lockout extends a waiting recovery's completion window by its length."""
    for record in waiting_for(conn, subject_pk):
        conn.execute(
            update(verifications)
            .where(verifications.c.id == record.id, verifications.c.status == "waiting")
            .values(expires_at=record.expires_at + by)
        )


def deny(
    conn: Connection,
    verification_id: str,
    reasons: list[str],
    held_until: datetime | None,
    now: datetime,
) -> None:
    """Deny a pending verification the policy no longer allows (a signal arrived meanwhile)."""
    conn.execute(
        update(verifications)
        .where(verifications.c.id == verification_id, verifications.c.status == "pending")
        .values(
            status="denied", reasons=json.dumps(reasons), held_until=held_until, completed_at=now
        )
    )


_ADD_SATISFIED = Lean(
    update(verifications)
    .where(verifications.c.id == bindparam("b_id"), OPEN)
    .values(
        satisfied=bindparam("b_satisfied"),
        status=bindparam("b_status"),
        completed_at=bindparam("b_completed_at"),
        attested_method=bindparam("b_attested_method"),
        amr=bindparam("b_amr"),
    )
)


def add_satisfied(
    conn: Connection,
    verification_id: str,
    satisfied: list[str],
    status: str,
    now: datetime,
    attested_method: str | None = None,
    amr: tuple[str, ...] = (),
) -> bool:
    """Record the factors accepted so far (and ``satisfied`` when an option is complete), and
    the method of the attestation and the ``amr`` values accepted so far (pass the stored ones
    on to keep them)."""
    changed = _ADD_SATISFIED.rowcount(
        conn,
        {
            "b_id": verification_id,
            "b_satisfied": json.dumps(satisfied),
            "b_status": status,
            "b_completed_at": now if status != "pending" else None,
            "b_attested_method": attested_method,
            "b_amr": " ".join(sorted(set(amr))) or None,
        },
    )
    return changed == 1


# Every wrong code, PIN or signature runs this: compiled once (a PIN flood is made of them).
_COUNT_FAILURE = Lean(
    update(verifications)
    .where(verifications.c.id == bindparam("b_id"), OPEN)
    .values(failures=verifications.c.failures + 1)
    .returning(verifications.c.failures)
)


def count_failure(
    conn: Connection, verification_id: str, limit: int, now: datetime
) -> tuple[int, str]:
    """Count one failed proof atomically; lock the verification when it reaches ``limit``.

    Returns (failures, status). Two racing failures each count once (the increment is one
    UPDATE), and exactly one of them crosses the limit.
    """
    row = _COUNT_FAILURE.first(conn, {"b_id": verification_id})
    if row is None:
        current = conn.execute(
            select(verifications.c.failures, verifications.c.status).where(
                verifications.c.id == verification_id
            )
        ).one()
        return int(current.failures), str(current.status)
    failures = int(row.failures)
    if failures >= limit:
        conn.execute(
            update(verifications)
            .where(verifications.c.id == verification_id, OPEN)
            .values(status="locked", completed_at=now)
        )
        return failures, "locked"
    return failures, "pending"


def failures_since(conn: Connection, subject_pk: int, since: datetime) -> int:
    """Failed proofs of a subject in its verifications open at some time after ``since`` (and
    created after its last ``idv subjects unlock``): the count the subject lockout goes by.

    From the database, not a rate-limit counter, so a Redis restarted without persistence
    cannot wipe it. A verification lives minutes, so counting whole verifications that were
    open within the window errs by at most its lifetime, towards locking. The subject row is
    taken first (PostgreSQL ``FOR NO KEY UPDATE``, which the foreign keys of other writers'
    inserts do not wait for): two failures of one subject racing in separate verifications
    then count one after the other, and neither can miss the lockout mark between them.
    """
    conn.execute(
        select(subjects.c.pk).where(subjects.c.pk == subject_pk).with_for_update(key_share=True)
    )
    unlocked = (
        select(func.max(subject_events.c.occurred_at))
        .where(subject_events.c.subject_pk == subject_pk, subject_events.c.type == "unlocked")
        .scalar_subquery()
    )
    total = conn.execute(
        select(func.coalesce(func.sum(verifications.c.failures), 0)).where(
            verifications.c.subject_pk == subject_pk,
            verifications.c.expires_at > since,
            (unlocked.is_(None)) | (verifications.c.created_at >= unlocked),
        )
    ).scalar_one()
    return int(total)
