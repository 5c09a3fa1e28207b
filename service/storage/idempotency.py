"""Idempotency-Key records: a claim per (client, key), then the first answer, encrypted.

The claim is one INSERT under a unique constraint, never a read-then-write: of two requests
racing with one key exactly one inserts, the other sees the row (STYLE.md, the hot path's rule
for replay protection).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from service.domain.clock import as_utc
from service.storage.tables import idempotency_keys, subjects, verifications

T = idempotency_keys


def answer_context(client_id: str, key_hash: str) -> str:
    """AES-GCM associated data of a kept answer: it decrypts only for its own row."""
    return f"idempotency:{client_id}:{key_hash}"


@dataclass(frozen=True)
class KeyRecord:
    """A stored claim: ``response_ct`` is set once the first request has answered."""

    id: int
    request_hash: str
    token: str
    status: str
    response_ct: str | None
    created_at: datetime


def claim(
    engine: Engine, client_id: str, key_hash: str, request_hash: str, token: str, now: datetime
) -> KeyRecord | None:
    """Claim the key for this request: None when claimed, else the row that holds it (or, when
    that row vanished meanwhile, erased with its subject or purged, a record with ``id`` 0)."""
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(T).values(
                    client_id=client_id,
                    key_hash=key_hash,
                    request_hash=request_hash,
                    token=token,
                    status="running",
                    created_at=now,
                )
            )
        return None
    except IntegrityError:
        pass
    with engine.begin() as conn:
        row = conn.execute(
            select(T).where(T.c.client_id == client_id, T.c.key_hash == key_hash)
        ).first()
    if row is None:
        return KeyRecord(0, "", "", "running", None, now)
    return KeyRecord(
        row.id, row.request_hash, row.token, row.status, row.response_ct, as_utc(row.created_at)
    )


def take_over(
    engine: Engine,
    client_id: str,
    key_hash: str,
    stale: KeyRecord,
    request_hash: str,
    token: str,
    now: datetime,
) -> bool:
    """Take a stale row (expired, or a claim whose request died) over for this request.

    The UPDATE matches the row's current token: of two requests taking over the same stale
    row, one changes it and the other matches nothing.
    """
    with engine.begin() as conn:
        changed = conn.execute(
            update(T)
            .where(T.c.client_id == client_id, T.c.key_hash == key_hash, T.c.token == stale.token)
            .values(
                request_hash=request_hash,
                token=token,
                status="running",
                response_ct=None,
                subject_pk=None,
                created_at=now,
            )
        ).rowcount
    return changed == 1


def subject_pk(
    conn: Connection, client_id: str, subject_id: str | None, verification_id: str | None
) -> int | None:
    """The pk of the subject a request named (by id, or through its verification), if any."""
    if subject_id is not None:
        query = select(subjects.c.pk).where(
            subjects.c.client_id == client_id, subjects.c.subject_id == subject_id
        )
    elif verification_id is not None:
        query = select(verifications.c.subject_pk).where(
            verifications.c.id == verification_id, verifications.c.client_id == client_id
        )
    else:
        return None
    return conn.execute(query).scalar()


def complete(
    conn: Connection,
    client_id: str,
    key_hash: str,
    token: str,
    response_ct: str,
    subject: int | None,
) -> None:
    """Keep the first answer (only while this request still holds the claim)."""
    conn.execute(
        update(T)
        .where(T.c.client_id == client_id, T.c.key_hash == key_hash, T.c.token == token)
        .values(status="done", response_ct=response_ct, subject_pk=subject)
    )


def release(conn: Connection, client_id: str, key_hash: str, token: str) -> None:
    """Drop a claim whose answer is not kept (5xx, 409, 429): the key may be used again."""
    conn.execute(
        delete(T).where(T.c.client_id == client_id, T.c.key_hash == key_hash, T.c.token == token)
    )
