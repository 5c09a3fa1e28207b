"""The account's recovery (API.md, Recovery): what satisfying ``recover`` does, the wait of
``recover_delayed``, and its cancellation.

The story: a phone is stolen unlocked (THREATS.md T1). The person holds what the thief lacks
(the PIN, a sheet of recovery codes, their own face before the tenant) and must be able to have
the phone's factors revoked promptly (NIST SP 800-63B-4, loss and theft). A person left with
nothing but the PIN waits out a delay (Apple-style delayed recovery) during which the phone's
factors are suspended and the tenant tells the person, who can cancel.

Suspension is derived, never written: a factor reads as suspended while a ``recover_delayed`` of
its subject is ``waiting`` and unexpired (``signals.subject_state``), so a cancel or an expiry
restores it without a clean-up job, atomically on both databases. Revocation is written, in
the transaction of the proof that completes the recovery.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import Conflict, NotFound, NotPending
from service.factors import registry
from service.storage import audit
from service.storage import factors as factor_store
from service.storage import subjects as subject_store
from service.storage import verifications as store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases import notify
from service.usecases.signals import PHONE_FACTOR_TYPES
from service.usecases.subjects import require_step_up, subject_ref

# API.md: from ready_at, the PIN completes a delayed recovery for 24 h.
COMPLETION_WINDOW = timedelta(hours=24)


def shown_status(record: VerificationRecord, now: datetime) -> str:
    """The status a caller sees: a stored ``waiting`` reads ``waiting`` until ``ready_at``,
    ``pending`` in the completion window, and ``expired`` after it."""
    if record.status == "pending" and record.expires_at <= now:
        return "expired"
    if record.status != "waiting":
        return record.status
    if record.expires_at <= now:
        return "expired"
    if record.ready_at is not None and now < record.ready_at:
        return "waiting"
    return "pending"


def delays(ctx: ServiceContext, record: VerificationRecord) -> bool:
    """Whether completing this verification starts a wait instead (first stage of a delayed
    action); the second stage, after ``ready_at``, satisfies it."""
    return record.ready_at is None and ctx.policy.action(record.action).delay is not None


def start_wait(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    record: VerificationRecord,
    subject: SubjectRecord,
    now: datetime,
) -> datetime:
    """Make the verification ``waiting`` until its delay has passed; returns ``ready_at``.

    From now on the subject's phone-bound factors and SMS are suspended (derived from this
    row). A subject has at most one waiting verification: the partial unique index refuses a
    second (409 ``conflict``, nothing written).
    """
    delay = ctx.policy.action(record.action).delay
    assert delay is not None
    ready_at = now + delay
    try:
        store.start_wait(conn, record, ready_at, ready_at + COMPLETION_WINDOW, now)
    except IntegrityError:  # the transaction rolls back: nothing of this proof is written
        raise Conflict("a delayed recovery of this subject is already waiting") from None
    # NIST SP 800-63B-4: tell the person on a channel other than the one just used.
    notify.event(
        conn,
        client.id,
        subject.subject_id,
        "recovery.started",
        now,
        verification_id=record.id,
        ready_at=rfc3339(ready_at),
    )
    _audit(
        ctx, conn, client, subject, "recovery.started", "waiting", now, verification_id=record.id
    )
    return ready_at


def apply(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    record: VerificationRecord,
    subject: SubjectRecord,
    satisfied: list[str],
    now: datetime,
) -> None:
    """A recovery completed, in the proof's transaction: every TOTP, device and passkey factor
    is revoked (never an option again), SMS is suspended until the phone is set again or a later
    SIM change (derived from the ``recovered`` event), the one-hour re-enrolment window opens
    and money actions start their cooling-off (the same event); the tenant is told."""
    revoked = factor_store.revoke(conn, subject.pk, PHONE_FACTOR_TYPES)
    store.close_waits(conn, subject.pk, now)
    subject_store.record_event(conn, subject.pk, "recovered", now)
    if registry.RESETTABLE & set(satisfied):  # proven with the PIN
        subject_store.record_event(conn, subject.pk, "recovered_by_pin", now)
    notify.event(
        conn,
        client.id,
        subject.subject_id,
        "subject.recovered",
        now,
        action=record.action,
        factors=satisfied,
        revoked=revoked,
    )
    _audit(
        ctx,
        conn,
        client,
        subject,
        "subject.recovered",
        "ok",
        now,
        verification_id=record.id,
        factors=satisfied,
        revoked=revoked,
    )


def cancel(
    ctx: ServiceContext, client: ClientRecord, verification_id: str, assertion: str | None
) -> VerificationRecord:
    """Cancel a waiting delayed recovery with a ``cancel_recovery`` assertion (else 403
    ``step_up_required``); anything not waiting is 409 ``not_pending``, including a delayed
    recovery past its ``ready_at``, which reads ``pending`` (API.md, Recovery: the person had the
    whole delay to cancel it). The suspended factors return to active at once (nothing to
    restore: suspension is derived from this row)."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        found = store.get_with_subject(conn, client.id, verification_id, for_update=True)
        if found is None:
            raise NotFound("no such verification")
        record, subject = found
        if shown_status(record, now) != "waiting":
            raise NotPending(f"the verification is {shown_status(record, now)}, not waiting")
        require_step_up(ctx, conn, client, subject, "cancel_recovery", assertion, now, always=True)
        store.set_status(conn, record.id, "cancelled", now, was="waiting")
        who = subject.subject_id
        notify.event(conn, client.id, who, "recovery.cancelled", now, verification_id=record.id)
        _audit(
            ctx,
            conn,
            client,
            subject,
            "recovery.cancelled",
            "cancelled",
            now,
            verification_id=record.id,
        )
    return replace(record, status="cancelled")


def _audit(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    subject: SubjectRecord,
    event: str,
    outcome: str,
    now: datetime,
    **detail: object,
) -> None:
    """One audit entry about the subject (pseudonymised: never its id in clear)."""
    audit.append(
        conn,
        event=event,
        outcome=outcome,
        now=now,
        client_id=client.id,
        subject_ref=subject_ref(ctx, client.id, subject.subject_id),
        detail=detail,
    )
