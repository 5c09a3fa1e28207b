"""Step-up verifications: starting one (the policy's decision), reading it, and the checks that
every later step repeats (still pending, still allowed by the policy, subject not locked).

Challenges live in ``challenges``, proofs in ``proofs``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import (
    NotFound,
    NotPending,
    RateLimited,
)
from service.domain.policy import ActionPolicy, Decision, decide, open_options
from service.guessing import LOCKOUT_WINDOW, lockout_for
from service.storage import audit, lean
from service.storage import subjects as subject_store
from service.storage import verifications as store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases.clients import KnownKey, confirm
from service.usecases.recovery import shown_status
from service.usecases.signals import PulledSignals, pull, subject_state
from service.usecases.subjects import check_subject_id, find, phone_of, subject_ref


@dataclass(frozen=True)
class VerificationView:
    """What a caller sees of a verification."""

    verification_id: str
    status: str
    action: str
    options: list[list[str]]
    reasons: list[str]
    expires_at: str
    satisfied: list[str] = field(default_factory=list)
    held_until: str | None = None
    ready_at: str | None = None  # a delayed recovery: when its wait ends (API.md, Recovery)

    def answer(self) -> dict[str, Any]:
        """The contract's JSON object: ``dataclasses.asdict`` without its recursive deep copy
        (a view is built per request and never changed; tests/unit/test_verification_view.py)."""
        return {name: getattr(self, name) for name in _VIEW_FIELDS}

    @classmethod
    def of(cls, record: VerificationRecord, status: str | None = None) -> VerificationView:
        """The view of a stored verification (``status`` overrides, e.g. ``expired``)."""
        status = status or record.status
        return cls(
            verification_id=record.id,
            status=status,
            action=record.action,
            options=record.options if status == "pending" else [],
            reasons=record.reasons,
            expires_at=rfc3339(record.expires_at),
            satisfied=record.satisfied,
            held_until=rfc3339(record.held_until) if record.held_until else None,
            ready_at=rfc3339(record.ready_at) if record.ready_at else None,
        )


_VIEW_FIELDS = tuple(f.name for f in fields(VerificationView))


def _ip(context: dict[str, Any] | None) -> str | None:
    ip = (context or {}).get("ip")
    return ip[:64] if isinstance(ip, str) else None


# -- create ------------------------------------------------------------------------------------
def start(
    ctx: ServiceContext,
    client: ClientRecord,
    subject_id: str,
    action: str,
    context: dict[str, Any] | None = None,
    known: KnownKey | None = None,
) -> VerificationView:
    """Decide which factor combinations this subject may use for ``action`` right now.

    ``known``: the caller's API key came from memory (``usecases.clients.recognise``); it is
    confirmed live in the transaction's first statement, which reads the client row with the
    subject, before anything is written or answered (a revoked key: 401 before 404), and
    before a carrier is asked anything.
    """
    rules = ctx.policy.action(action)  # unknown action → 400 before anything else
    ip = _ip(context)
    ctx.limits.hit("verifications", client.id, action_limits=rules.limits)
    if ip:
        ctx.limits.hit("ip", ip, action_limits=rules.limits)
    pulled = _pull_carrier(ctx, client, subject_id, rules, known) if ctx.carrier else None
    now = ctx.clock()
    with lean.transaction(ctx.engine) as conn:  # half of a whole login: see proofs.prove
        client, subject = _find(ctx, conn, client, known, subject_id, now)
        state = subject_state(subject, subject_store.snapshot(conn, subject), now, pulled)
        decision = decide(ctx.policy, action, state, now)
        verification_id = "vf_" + secrets.token_urlsafe(18)
        expires_at = now + rules.lifetime
        record = store.insert(
            conn,
            verification_id=verification_id,
            client_id=client.id,
            subject_pk=subject.pk,
            action=action,
            status=decision.status,
            options=decision.options,
            reasons=decision.reasons,
            now=now,
            expires_at=expires_at,
            held_until=decision.held_until,
        )
        audit.append(
            conn,
            event="verification.created",
            outcome=decision.status,
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            ip=ip,
            detail={"action": action, "reasons": decision.reasons, "rules": decision.explanation},
        )
    return VerificationView.of(record)


def _find(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    known: KnownKey | None,
    subject_id: str,
    now: datetime,
) -> tuple[ClientRecord, SubjectRecord]:
    """The caller's client and subject (``find``). For a key from memory one statement reads
    the client row and the subject, and the key is confirmed live (``confirm``) before the
    subject's absence is told."""
    if known is None:
        return client, find(ctx, conn, client, subject_id)
    check_subject_id(subject_id)
    found = subject_store.get_with_client(conn, client.id, subject_id)
    fresh = confirm(ctx, conn, known, found[1:] if found else None, now)
    if found is None or found[0] is None:
        raise NotFound("no such subject")
    return fresh, found[0]


def _pull_carrier(
    ctx: ServiceContext,
    client: ClientRecord,
    subject_id: str,
    rules: ActionPolicy,
    known: KnownKey | None,
) -> PulledSignals | None:
    """Ask the configured carrier about the subject's phone, outside any transaction (a key
    from memory is confirmed first: a revoked key never costs a carrier query)."""
    assert ctx.carrier is not None
    with ctx.engine.connect() as conn:
        client, subject = _find(ctx, conn, client, known, subject_id, ctx.clock())
        conn.rollback()
    phone = phone_of(ctx, subject)
    if phone is None:
        return None
    windows = [
        w
        for w in (
            rules.sms_blocked_after_sim_change,
            rules.hold_after_sim_change,
            rules.cooling_off,
        )
        if w is not None
    ]
    return pull(
        ctx.carrier,
        phone,
        subject.phone_set_at,
        sensitive=rules.sensitive,
        longest_window=max(windows, default=None),
    )


def pending(
    conn: Connection,
    client: ClientRecord,
    verification_id: str,
    now: datetime,
    *,
    for_update: bool = False,
) -> VerificationRecord:
    """The verification, which must still be pending (expired ones are marked so)."""
    record = store.get(conn, client.id, verification_id, for_update=for_update)
    if record is None:
        raise NotFound("no such verification")
    _must_be_pending(conn, record, now)
    return record


def pending_with_subject(
    conn: Connection,
    client: ClientRecord,
    verification_id: str,
    now: datetime,
    *,
    for_update: bool = False,
) -> tuple[VerificationRecord, SubjectRecord]:
    """``pending`` and the verification's subject, read in one statement."""
    found = store.get_with_subject(conn, client.id, verification_id, for_update=for_update)
    if found is None:
        raise NotFound("no such verification")
    _must_be_pending(conn, found[0], now)
    return found


def pending_for_key(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    known: KnownKey,
    verification_id: str,
    now: datetime,
    *,
    for_update: bool = False,
) -> tuple[VerificationRecord, SubjectRecord, ClientRecord]:
    """``pending_with_subject`` for a caller whose API key came from memory: the same statement
    reads the client row, and the key is confirmed live before anything else (401 before 404)."""
    found = store.get_with_subject_and_client(
        conn, client.id, verification_id, for_update=for_update
    )
    fresh = confirm(ctx, conn, known, (found[2], found[3]) if found else None, now)
    if found is None:
        raise NotFound("no such verification")
    _must_be_pending(conn, found[0], now)
    return found[0], found[1], fresh


def _must_be_pending(conn: Connection, record: VerificationRecord, now: datetime) -> None:
    shown = shown_status(record, now)
    if shown == "expired" and record.status in ("pending", "waiting"):
        store.set_status(conn, record.id, "expired", now, was=record.status)
        raise NotPending("the verification has expired")
    if shown != "pending":
        # A delayed recovery takes no proof before ready_at (API.md, Recovery).
        raise NotPending(f"the verification is {shown}")


def get(ctx: ServiceContext, client: ClientRecord, verification_id: str) -> VerificationView:
    """The verification's current state (without assertion)."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        found = store.get_with_subject(conn, client.id, verification_id)
        if found is None:
            raise NotFound("no such verification")
        record, subject = found
        shown = shown_status(record, now)
        if shown == "expired" and record.status in ("pending", "waiting"):
            store.set_status(conn, record.id, "expired", now, was=record.status)
            return VerificationView.of(record, "expired")
        if shown != "pending":
            return VerificationView.of(record, shown)
        # Pending: show what the policy offers now (a signal may have arrived since the start).
        snap = subject_store.snapshot(conn, subject)
        options, decision = still_open(ctx, record, subject, snap, now)
        if not options:
            record_denial(conn, record, decision, now)
            record = replace(
                record, status="denied", reasons=decision.reasons, held_until=decision.held_until
            )
        else:
            record = replace(record, options=options)
    return VerificationView.of(record, "pending" if record.status == "waiting" else None)


def remaining(options: list[list[str]], satisfied: list[str]) -> set[str]:
    """Factors that still help complete some option."""
    done = set(satisfied)
    return {f for option in options for f in option if f not in done}


def still_open(
    ctx: ServiceContext,
    record: VerificationRecord,
    subject: SubjectRecord,
    snap: subject_store.Snapshot,
    now: datetime,
) -> tuple[list[list[str]], Decision]:
    """The options chosen at start that the policy still offers now.

    Carrier signals and lockouts can arrive while a verification is pending; an SMS code sent
    after a SIM swap must be worthless at once (T1), so every challenge and proof decides again.
    """
    state = subject_state(subject, snap, now)
    # A factor this verification already accepted counts while the subject still holds it: the
    # recovery code it spent may have been its set's last (a used-up set is in no new option).
    held = {f.type for f in snap.factors if f.status == "active"} & set(record.satisfied)
    if not held <= state.factors:
        state = replace(state, factors=state.factors | held)
    decision = decide(ctx.policy, record.action, state, now)
    # An accepted attestation whose method does not count in an option closes it (API.md,
    # Recovery): no recovery code is spent, nor a challenge sent, for what cannot complete.
    still = open_options(ctx.policy.action(record.action), record.options, record.attested_method)
    return [o for o in still if o in decision.options], decision


def deny(
    ctx: ServiceContext, record: VerificationRecord, decision: Decision, now: datetime
) -> NotPending:
    """Deny a pending verification the policy no longer allows; the error to raise."""
    with ctx.engine.begin() as conn:
        record_denial(conn, record, decision, now)
    return NotPending(f"the verification was denied: {', '.join(decision.reasons)}")


def record_denial(
    conn: Connection, record: VerificationRecord, decision: Decision, now: datetime
) -> None:
    """Store and audit the denial of a pending verification."""
    store.deny(conn, record.id, decision.reasons, decision.held_until, now)
    audit.append(
        conn,
        event="verification.denied",
        outcome="denied",
        now=now,
        client_id=record.client_id,
        detail={"verification_id": record.id, "reasons": decision.reasons},
    )


def check_lock(subject: SubjectRecord, now: datetime) -> None:
    """A lockout also stops verifications opened before it (no pre-opened guessing slots)."""
    if subject.locked_until is not None and subject.locked_until > now:
        wait = int((subject.locked_until - now).total_seconds()) + 1
        raise RateLimited("the subject is locked out after repeated failures", retry_after=wait)


def lock_subject_if_repeated(
    ctx: ServiceContext, conn: Connection, subject: SubjectRecord, now: datetime
) -> None:
    """After a failed proof: lock the subject when its failures of the last 24 h reach a mark
    (15, 20, 25, ... with the default failure limit of 5; ``service.guessing.lockout_for``),
    however they were spread over verifications (NIST SP 800-63B-4 throttling)."""
    failures = store.failures_since(conn, subject.pk, now - LOCKOUT_WINDOW)
    # 3 × the strictest action's failure limit: an attacker gains nothing by choosing an action.
    limit = min(rules.failure_limit for rules in ctx.policy.actions.values())
    pause = lockout_for(failures, limit)
    if pause is not None:
        subject_store.lock(conn, subject.pk, now + pause)
        # API.md, Recovery: a lockout extends a waiting recovery's completion window.
        store.extend_waits(conn, subject.pk, pause)
