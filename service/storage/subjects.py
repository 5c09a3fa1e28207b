"""Subject records: one per (client, subject id); the phone encrypted, a keyed hash beside."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, bindparam, delete, func, insert, select, update

from service.domain.clock import as_utc
from service.storage.tables import subject_events, subjects


@dataclass(frozen=True)
class SubjectRecord:
    """A subject as stored; ``phone_ct`` is ciphertext."""

    pk: int
    client_id: str
    subject_id: str
    phone_ct: str | None
    phone_hash: str | None
    phone_set_at: datetime | None
    locked_until: datetime | None
    created_at: datetime


def _record(row) -> SubjectRecord:  # type: ignore[no-untyped-def]
    return SubjectRecord(
        pk=row.pk,
        client_id=row.client_id,
        subject_id=row.subject_id,
        phone_ct=row.phone_ct,
        phone_hash=row.phone_hash,
        phone_set_at=as_utc(row.phone_set_at) if row.phone_set_at else None,
        locked_until=as_utc(row.locked_until) if row.locked_until else None,
        created_at=as_utc(row.created_at),
    )


def get(conn: Connection, client_id: str, subject_id: str) -> SubjectRecord | None:
    """The subject of this tenant, or None (another tenant's subject is simply not found)."""
    row = conn.execute(
        select(subjects).where(
            subjects.c.client_id == client_id, subjects.c.subject_id == subject_id
        )
    ).first()
    return _record(row) if row else None


_BY_PK = select(subjects).where(subjects.c.pk == bindparam("pk"))
_LAST_EVENTS = (
    select(subject_events.c.type, func.max(subject_events.c.occurred_at))
    .where(subject_events.c.subject_pk == bindparam("pk"))
    .group_by(subject_events.c.type)
)


def by_pk(conn: Connection, pk: int) -> SubjectRecord | None:
    """The subject with this primary key."""
    row = conn.execute(_BY_PK, {"pk": pk}).first()
    return _record(row) if row else None


def create(
    conn: Connection,
    *,
    client_id: str,
    subject_id: str,
    phone_ct: str,
    phone_hash: str,
    now: datetime,
) -> int:
    """Insert a subject and return its primary key."""
    res = conn.execute(
        insert(subjects).values(
            client_id=client_id,
            subject_id=subject_id,
            phone_ct=phone_ct,
            phone_hash=phone_hash,
            phone_set_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    assert res.inserted_primary_key is not None
    return int(res.inserted_primary_key[0])


def set_phone(conn: Connection, pk: int, *, phone_ct: str, phone_hash: str, now: datetime) -> None:
    """Replace the subject's phone; ``phone_set_at`` restarts (T2: recycled-number checks)."""
    conn.execute(
        update(subjects)
        .where(subjects.c.pk == pk)
        .values(phone_ct=phone_ct, phone_hash=phone_hash, phone_set_at=now, updated_at=now)
    )


def lock(conn: Connection, pk: int, until: datetime) -> None:
    """Lock the subject out of new verifications until ``until`` (never shortens a lock)."""
    conn.execute(
        update(subjects)
        .where(subjects.c.pk == pk)
        .where((subjects.c.locked_until.is_(None)) | (subjects.c.locked_until < until))
        .values(locked_until=until)
    )


def unlock(conn: Connection, pk: int) -> None:
    """End a lockout (``idv subjects unlock``)."""
    conn.execute(update(subjects).where(subjects.c.pk == pk).values(locked_until=None))


def remove(conn: Connection, pk: int) -> None:
    """Erase the subject; factors, verifications and events go with it (ON DELETE CASCADE)."""
    conn.execute(delete(subjects).where(subjects.c.pk == pk))


def record_event(conn: Connection, pk: int, event_type: str, now: datetime) -> None:
    """Record a sensitive event (password reset, factor added/removed, phone changed)."""
    conn.execute(insert(subject_events).values(subject_pk=pk, type=event_type, occurred_at=now))


def last_events(conn: Connection, pk: int) -> dict[str, datetime]:
    """The latest time of each sensitive event type for this subject."""
    rows = conn.execute(_LAST_EVENTS, {"pk": pk})
    return {t: as_utc(at) for t, at in rows if at is not None}
