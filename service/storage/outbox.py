"""Webhook endpoints and the durable outbox of events for tenants."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from service.domain.clock import as_utc
from service.storage.tables import webhook_outbox, webhooks


@dataclass(frozen=True)
class Pending:
    """An event waiting for delivery."""

    id: str
    client_id: str
    type: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime


def set_endpoint(conn: Connection, client_id: str, url: str, secret_ct: str, now: datetime) -> None:
    """Register (or replace) a tenant's webhook endpoint."""
    conn.execute(delete(webhooks).where(webhooks.c.client_id == client_id))
    conn.execute(
        insert(webhooks).values(client_id=client_id, url=url, secret_ct=secret_ct, created_at=now)
    )


def endpoint(conn: Connection, client_id: str) -> tuple[str, str] | None:
    """(url, secret ciphertext) of a tenant's endpoint, if any."""
    row = conn.execute(
        select(webhooks.c.url, webhooks.c.secret_ct).where(webhooks.c.client_id == client_id)
    ).first()
    return (row.url, row.secret_ct) if row else None


def enqueue(
    conn: Connection, client_id: str, event_type: str, payload: dict[str, Any], now: datetime
) -> str | None:
    """Queue an event for a tenant that has an endpoint, in the caller's transaction."""
    if (
        conn.execute(select(webhooks.c.client_id).where(webhooks.c.client_id == client_id)).first()
        is None
    ):
        return None
    event_id = "ev_" + secrets.token_urlsafe(16)
    body = {"event_id": event_id, "type": event_type, **payload}
    conn.execute(
        insert(webhook_outbox).values(
            id=event_id,
            client_id=client_id,
            type=event_type,
            payload=json.dumps(body),
            created_at=now,
            next_attempt_at=now,
            attempts=0,
        )
    )
    return event_id


def due(conn: Connection, now: datetime, limit: int = 50) -> list[Pending]:
    """Undelivered events whose next attempt is due, oldest first."""
    rows = conn.execute(
        select(webhook_outbox)
        .where(webhook_outbox.c.delivered_at.is_(None), webhook_outbox.c.next_attempt_at <= now)
        .order_by(webhook_outbox.c.created_at)
        .limit(limit)
    )
    return [
        Pending(r.id, r.client_id, r.type, json.loads(r.payload), r.attempts, as_utc(r.created_at))
        for r in rows
    ]


def claim(conn: Connection, event_id: str, now: datetime, lease: timedelta) -> bool:
    """Take an event for delivery (another instance then skips it until the lease ends)."""
    res = conn.execute(
        update(webhook_outbox)
        .where(
            webhook_outbox.c.id == event_id,
            webhook_outbox.c.delivered_at.is_(None),
            webhook_outbox.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + lease)
    )
    return res.rowcount == 1


def delivered(conn: Connection, event_id: str, now: datetime) -> None:
    """Mark an event delivered."""
    conn.execute(
        update(webhook_outbox)
        .where(webhook_outbox.c.id == event_id)
        .values(delivered_at=now, attempts=webhook_outbox.c.attempts + 1, last_error=None)
    )


def failed(conn: Connection, event_id: str, retry_at: datetime, error: str) -> None:
    """Record a failed attempt and when to try again."""
    conn.execute(
        update(webhook_outbox)
        .where(webhook_outbox.c.id == event_id)
        .values(
            next_attempt_at=retry_at, attempts=webhook_outbox.c.attempts + 1, last_error=error[:200]
        )
    )


def postpone(conn: Connection, client_id: str, until: datetime) -> int:
    """Hold every undelivered event of ``client_id`` due before ``until`` back to then (its
    endpoint just failed); returns how many. Their attempt counts stay as they are."""
    res = conn.execute(
        update(webhook_outbox)
        .where(
            webhook_outbox.c.client_id == client_id,
            webhook_outbox.c.delivered_at.is_(None),
            webhook_outbox.c.next_attempt_at < until,
        )
        .values(next_attempt_at=until)
    )
    return int(res.rowcount)


def forget_subject(conn: Connection, client_id: str, subject_id: str) -> int:
    """Delete every queued or delivered event of ``client_id`` whose payload names
    ``subject_id`` (erasure, PIPL art. 47); returns how many.

    ``LIKE`` narrows by the JSON-encoded id (its wildcards escaped; on SQLite it ignores ASCII
    case), and the exact ``subject_id`` of each payload decides."""
    needle = json.dumps(subject_id)
    escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    rows = conn.execute(
        select(webhook_outbox.c.id, webhook_outbox.c.payload).where(
            webhook_outbox.c.client_id == client_id,
            webhook_outbox.c.payload.like(f"%{escaped}%", escape="\\"),
        )
    )
    doomed = [r.id for r in rows if json.loads(r.payload).get("subject_id") == subject_id]
    if doomed:
        conn.execute(delete(webhook_outbox).where(webhook_outbox.c.id.in_(doomed)))
    return len(doomed)


def remove(conn: Connection, event_id: str) -> None:
    """Delete one event (an erasure's alert, once delivered: it names an erased subject)."""
    conn.execute(delete(webhook_outbox).where(webhook_outbox.c.id == event_id))
