"""What idv knows about a subject right now, as the policy engine's ``SubjectState``.

Carrier events are global (API.md): they are looked up by the phone's keyed hash, whichever
tenant's subject holds that number.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from service.domain.clock import as_utc
from service.domain.policy import SubjectState
from service.storage import subjects as subject_store
from service.storage.factors import FactorRecord
from service.storage.subjects import SubjectRecord
from service.storage.tables import carrier_events

# Factors added or removed while a subject is being set up are onboarding, not a change to an
# established account: they start no cooling-off (T1 targets established accounts).
ONBOARDING = timedelta(hours=24)


def carrier_facts(conn: Connection, phone_hash: str) -> dict[str, list[datetime]]:
    """Every recorded carrier event time for a phone, by type."""
    rows = conn.execute(
        select(carrier_events.c.type, carrier_events.c.occurred_at).where(
            carrier_events.c.phone_hash == phone_hash
        )
    )
    facts: dict[str, list[datetime]] = {}
    for kind, at in rows:
        facts.setdefault(kind, []).append(as_utc(at))
    return facts


def subject_state(
    conn: Connection, subject: SubjectRecord, active: list[FactorRecord], now: datetime
) -> SubjectState:
    """Assemble factors, carrier signals, sensitive events and lockout for ``decide()``."""
    types = {f.type for f in active if f.status == "active"}
    last_sim_change = sim_lost_since = None
    recycled = False
    if subject.phone_hash:
        types.add("sms")
        facts = carrier_facts(conn, subject.phone_hash)
        changes = facts.get("sim_swap", []) + facts.get("sim_unblocked", [])
        last_sim_change = max(changes) if changes else None
        lost = max(facts.get("sim_lost", []), default=None)
        unblocked = max(facts.get("sim_unblocked", []), default=None)
        if lost is not None and (unblocked is None or unblocked < lost):
            sim_lost_since = lost
        # T2: a number_recycled dated after the phone was set voids the phone for this subject.
        set_at = subject.phone_set_at
        recycled = any(set_at is None or at > set_at for at in facts.get("number_recycled", []))
    events = {
        kind: at
        for kind, at in subject_store.last_events(conn, subject.pk).items()
        if kind not in {"factor_added", "factor_removed"} or at - subject.created_at > ONBOARDING
    }
    return SubjectState(
        factors=frozenset(types),
        last_sim_change=last_sim_change,
        sim_lost_since=sim_lost_since,
        number_recycled=recycled,
        last_events=events,
        locked_until=subject.locked_until
        if subject.locked_until and subject.locked_until > now
        else None,
    )
