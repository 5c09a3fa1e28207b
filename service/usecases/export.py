"""A person's data on request (PIPL art. 45; API.md ``GET /v1/subjects/{id}/export``).

Everything idv holds about one subject of the calling tenant, never a secret: the masked phone
and when it was set, its factors (type, created, last used), the verifications still kept
(action, status, times, reasons), the carrier events idv holds for its phone, and the audit
entries about it (found by its pseudonym for this tenant under every crypto profile that has
written one, GB/T 39786 profile switch). The export itself is audited, like a support-desk read.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from service.context import ServiceContext
from service.domain.clock import as_utc, rfc3339
from service.domain.phone import mask_phone
from service.domain.retention import KINDS, format_duration
from service.storage import audit
from service.storage import factors as factor_store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.tables import audit_log, carrier_events, verifications
from service.usecases.subjects import find, phone_of, subject_ref

# Audit entries past this many are summarised by their count (a subject of three years).
AUDIT_ENTRIES_MAX = 5000


def _time(value: datetime | None) -> str | None:
    return rfc3339(as_utc(value)) if value is not None else None


def subject_refs(ctx: ServiceContext, client_id: str, subject_id: str) -> list[str]:
    """The subject's audit pseudonym under every profile that may have written entries."""
    return [h[:32] for h in ctx.keys.lookup_hashes("subject", f"{client_id}:{subject_id}")]


def export_subject(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, ip: str | None = None
) -> dict[str, Any]:
    """What idv holds about ``subject_id`` of ``client`` (404 for anyone else's)."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        refs = subject_refs(ctx, client.id, subject_id)
        trail = _audit_entries(conn, refs)
        factors = _factors(conn, subject, trail)
        kept = conn.execute(
            select(verifications)
            .where(verifications.c.subject_pk == subject.pk)
            .order_by(verifications.c.created_at)
        ).all()
        phone = phone_of(ctx, subject)
        carrier = _carrier(ctx, conn, phone)
        audit.append(
            conn,
            event="subject.exported",
            outcome="ok",
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            ip=ip,
            detail={"audit_entries": len(trail)},
        )
    return {
        "subject_id": subject_id,
        "exported_at": rfc3339(now),
        "created_at": _time(subject.created_at),
        "phone": {
            "masked": mask_phone(phone) if phone else None,
            "set_at": _time(subject.phone_set_at),
        },
        "factors": factors,
        "verifications": [
            {
                "verification_id": v.id,
                "action": v.action,
                "status": v.status,
                "created_at": _time(v.created_at),
                "completed_at": _time(v.completed_at),
                "reasons": json.loads(v.reasons),
            }
            for v in kept
        ],
        "carrier_events": carrier,
        "audit": [_entry(e) for e in trail[-AUDIT_ENTRIES_MAX:]],
        "audit_entries": len(trail),
        "retention": {k: format_duration(ctx.settings.retention[k]) for k in KINDS},
    }


def _audit_entries(conn: Connection, refs: list[str]) -> list[Any]:
    query = (
        select(audit_log.c.at, audit_log.c.event, audit_log.c.outcome, audit_log.c.detail)
        .add_columns(audit_log.c.ip, audit_log.c.operator)
        .where(audit_log.c.subject_ref.in_(refs))
        .order_by(audit_log.c.at, audit_log.c.id)
    )
    return list(conn.execute(query))


def _entry(row: Any) -> dict[str, Any]:
    # The operator's name is staff data: the person learns that the desk acted, not who.
    return {
        "at": _time(row.at),
        "event": row.event,
        "outcome": row.outcome,
        "detail": json.loads(row.detail or "{}"),
        "network": row.ip,  # already truncated to its /24 or /48 when written
        "by_operator": row.operator is not None,
    }


def _factors(conn: Connection, subject: SubjectRecord, trail: list[Any]) -> list[dict[str, Any]]:
    """Each factor with the time of the last accepted proof of its type (from the trail)."""
    last: dict[str, datetime] = {}
    for row in trail:
        if row.event == "proof.accepted":
            kind = json.loads(row.detail or "{}").get("factor")
            if isinstance(kind, str):
                last[kind] = as_utc(row.at)
    found = []
    for f in factor_store.for_subject(conn, subject.pk):
        used = last.get(f.type)
        if used is not None and used < as_utc(f.created_at):
            used = None  # a proof of an older factor of the same type
        found.append(
            {
                "factor_id": f.id,
                "type": f.type,
                "status": f.status,
                "label": f.label,
                "created_at": _time(f.created_at),
                "last_used_at": _time(used),
            }
        )
    return found


def _carrier(ctx: ServiceContext, conn: Connection, phone: str | None) -> list[dict[str, Any]]:
    """The carrier events idv holds for the subject's phone (who reported them is left out)."""
    if phone is None:
        return []
    rows = conn.execute(
        select(carrier_events.c.type, carrier_events.c.occurred_at, carrier_events.c.received_at)
        .where(carrier_events.c.phone_hash.in_(ctx.keys.lookup_hashes("phone", phone)))
        .order_by(carrier_events.c.occurred_at)
    )
    return [
        {"type": r.type, "occurred_at": _time(r.occurred_at), "received_at": _time(r.received_at)}
        for r in rows
    ]
