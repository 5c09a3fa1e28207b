"""The audit trail: one row per decision or change. Subjects appear only pseudonymised
(a keyed hash), never with a phone number, code or secret (T3, T4)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from service.storage.tables import audit_log


def append(
    conn: Connection,
    *,
    event: str,
    outcome: str,
    now: datetime,
    client_id: str | None = None,
    subject_ref: str | None = None,
    operator: str | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry in the caller's transaction (it commits or rolls back with the change)."""
    conn.execute(
        audit_log.insert().values(
            at=now,
            client_id=client_id,
            operator=operator,
            event=event,
            subject_ref=subject_ref,
            outcome=outcome,
            detail=json.dumps(detail or {}, sort_keys=True, separators=(",", ":")),
            ip=ip,
        )
    )


def entries(conn: Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Audit entries in order, optionally from ``since``."""
    query = select(audit_log).order_by(audit_log.c.id)
    if since is not None:
        query = query.where(audit_log.c.at >= since)
    return [dict(r._mapping) for r in conn.execute(query)]
