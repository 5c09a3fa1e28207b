"""What idv knows about a subject right now, as the policy engine's ``SubjectState``.

Carrier events are global (API.md): they are looked up by the phone's keyed hash, whichever
tenant's subject holds that number.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.carrier.provider import CarrierProvider, Reason, RecycleStatus
from service.domain.policy import SubjectState
from service.factors import registry
from service.storage.subjects import Snapshot, SubjectRecord

# Factors added or removed while a subject is being set up are onboarding, not a change to an
# established account: they start no cooling-off (T1 targets established accounts).
ONBOARDING = timedelta(hours=24)
# Factors a waiting delayed recovery suspends and a completed recovery revokes (API.md,
# Recovery): everything that lives on the phone (each factor's SPEC says). SMS goes with them.
PHONE_FACTOR_TYPES = registry.PHONE_FACTOR_TYPES
# A subject re-created with a phone its tenant erased in the last 30 days: no onboarding.
ONBOARDING_WAIVED = "onboarding_waived"


def in_onboarding(subject: SubjectRecord, events: dict[str, datetime], at: datetime) -> bool:
    """Whether ``at`` falls in the subject's onboarding (its first 24 h, unless waived)."""
    return at - subject.created_at <= ONBOARDING and ONBOARDING_WAIVED not in events


def sms_suspended_by_recovery(
    subject: SubjectRecord, carrier: dict[str, datetime], events: dict[str, datetime]
) -> bool:
    """After a recovery, SMS stays out until the phone is set again or a SIM change dated after
    the recovery arrives (the thief's SIM is then gone)."""
    recovered = events.get("recovered")
    if recovered is None:
        return False
    if subject.phone_set_at is not None and subject.phone_set_at > recovered:
        return False
    return not any(
        at is not None and at > recovered
        for at in (carrier.get("sim_swap"), carrier.get("sim_unblocked"))
    )


@dataclass(frozen=True)
class PulledSignals:
    """What a carrier provider answered for one decision."""

    last_sim_change: datetime | None = None
    number_recycled: bool = False
    unavailable: bool = False


def pull(
    provider: CarrierProvider,
    phone: str,
    phone_set_at: datetime | None,
    *,
    sensitive: bool,
    longest_window: timedelta | None,
) -> PulledSignals:
    """Ask the carrier about SIM changes and reassignment, within one deadline.

    About 2 s for a login, 5 s for sensitive actions, whose answers also bypass the fact cache.
    Anything the carrier cannot tell us is ``unavailable``, never "all clear".
    """
    deadline = 5.0 if sensitive else 2.0
    started = time.monotonic()
    fact = provider.latest_sim_change(phone, deadline=deadline, use_cache=not sensitive)
    unavailable = fact.reason is not Reason.OK
    if not unavailable and fact.latest_change is None:
        # CAMARA: null with monitoredPeriod = "no change in that period"; without it, unknown.
        covered = fact.monitored_days is not None and (
            longest_window is None or longest_window <= timedelta(days=fact.monitored_days)
        )
        unavailable = not covered
    recycled = False
    if phone_set_at is not None:
        left = max(0.2, deadline - (time.monotonic() - started))
        answer = provider.number_recycled(phone, phone_set_at, deadline=left)
        recycled = answer.status is RecycleStatus.REASSIGNED
        unavailable = unavailable or answer.status is RecycleStatus.UNKNOWN
    return PulledSignals(fact.latest_change, recycled, unavailable)


def subject_state(
    subject: SubjectRecord,
    snap: Snapshot,
    now: datetime,
    pulled: PulledSignals | None = None,
) -> SubjectState:
    """Assemble factors, carrier signals, sensitive events and lockout for ``decide()``
    from the subject and its ``Snapshot`` (one statement: ``subjects.snapshot``)."""
    types = {f.type for f in snap.factors if f.usable}
    if snap.tenant_attests:  # attested proofing is the tenant's, open to each of its subjects
        types |= registry.TENANT_KEYED
    last_sim_change = sim_lost_since = None
    recycled = False
    if subject.phone_hash:  # the phone number itself is a factor (SMS)
        types |= registry.PHONE_NUMBER
        latest = snap.carrier  # the latest event of each type
        unblocked, lost = latest.get("sim_unblocked"), latest.get("sim_lost")
        last_sim_change = max(
            (at for at in (latest.get("sim_swap"), unblocked) if at is not None), default=None
        )
        if lost is not None and (unblocked is None or unblocked < lost):
            sim_lost_since = lost
        # T2: a number_recycled dated after the phone was set voids the phone for this subject.
        set_at, recycled_at = subject.phone_set_at, latest.get("number_recycled")
        recycled = recycled_at is not None and (set_at is None or recycled_at > set_at)
    if types & registry.PHONE_NUMBER and sms_suspended_by_recovery(
        subject, snap.carrier, snap.events
    ):
        types -= registry.PHONE_NUMBER
    suspended: frozenset[str] = frozenset()
    if snap.waiting_until is not None and snap.waiting_until > now:
        # A delayed recovery waits: the phone in a thief's hand no longer logs in.
        suspended = frozenset(types & registry.PHONE_BOUND)
        types -= suspended
    if pulled is not None:
        changes = [d for d in (last_sim_change, pulled.last_sim_change) if d is not None]
        last_sim_change = max(changes, default=None)
        recycled = recycled or pulled.number_recycled
    events = {
        kind: at
        for kind, at in snap.events.items()
        if kind not in {"factor_added", "factor_removed"}
        or not in_onboarding(subject, snap.events, at)
    }
    return SubjectState(
        factors=frozenset(types),
        last_sim_change=last_sim_change,
        sim_lost_since=sim_lost_since,
        number_recycled=recycled,
        signal_unavailable=pulled is not None and pulled.unavailable,
        last_events=events,
        locked_until=subject.locked_until
        if subject.locked_until and subject.locked_until > now
        else None,
        onboarding=in_onboarding(subject, snap.events, now),
        suspended=suspended,
    )
