"""Carrier signals pushed by a carrier (scope ``carrier``): global across tenants, stored by
the phone's keyed hash only, idempotent (T1, T2)."""

from __future__ import annotations

from datetime import timedelta

from service.context import ServiceContext
from service.domain.clock import parse_rfc3339
from service.domain.errors import InvalidRequest
from service.domain.phone import normalize_e164
from service.storage import audit, replay
from service.storage.clients import ClientRecord
from service.storage.tables import CARRIER_EVENT_TYPES, carrier_events
from service.usecases import notify

EVENT_TYPES = CARRIER_EVENT_TYPES
FUTURE_SKEW = timedelta(minutes=5)  # API.md: more than a few minutes in the future → 400


def record_event(
    ctx: ServiceContext, client: ClientRecord, phone: object, kind: str, occurred_at: str
) -> bool:
    """Record a carrier event; False when the same event was already recorded."""
    e164 = normalize_e164(phone, ctx.settings.default_region)
    if kind not in EVENT_TYPES:
        raise InvalidRequest(f"type must be one of {', '.join(EVENT_TYPES)}")
    try:
        at = parse_rfc3339(occurred_at)
    except (TypeError, ValueError):
        raise InvalidRequest("occurred_at must be an RFC 3339 date-time with an offset") from None
    now = ctx.clock()
    if at > now + FUTURE_SKEW:
        raise InvalidRequest("occurred_at is in the future")
    # One row per keyed hash the phone may be stored under: subjects written under another
    # crypto profile, not yet rewritten by `idv keys rotate`, still see the SIM swap (T1).
    phone_hash, *older = ctx.keys.lookup_hashes("phone", e164)
    with ctx.engine.begin() as conn:
        inserted = False
        for each_hash in (phone_hash, *older):
            if replay.insert_once(
                conn,
                carrier_events,
                phone_hash=each_hash,
                type=kind,
                occurred_at=at,
                received_at=now,
                client_id=client.id,
            ):
                inserted = True
                notify.carrier_event(conn, each_hash, kind, at, now)
        if inserted:
            audit.append(
                conn,
                event="carrier.event",
                outcome="recorded",
                now=now,
                client_id=client.id,
                subject_ref=phone_hash[:32],
                detail={"type": kind, "occurred_at": at.isoformat()},
            )
    return inserted
