"""Subjects: create, change phone (behind step-up), erase (PIPL art. 47)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from dataclasses import replace as _replace
from datetime import UTC, datetime

import jwt
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from service.context import ServiceContext
from service.domain import assertions
from service.domain.errors import InvalidRequest, NotFound, StepUpRequired
from service.domain.phone import mask_phone, normalize_e164
from service.domain.policy import decide
from service.factors import registry
from service.storage import audit, erasures, factors, outbox, replay
from service.storage import subjects as store
from service.storage import verifications as verification_store
from service.storage.clients import ClientRecord
from service.storage.db import scrub_wal
from service.storage.subjects import SubjectRecord
from service.usecases import notify
from service.usecases.signals import ONBOARDING_WAIVED, sms_suspended_by_recovery, subject_state

SUBJECT_ID = re.compile(r"^[A-Za-z0-9._:@\-]{1,128}$")


@dataclass(frozen=True)
class SubjectView:
    """What a caller sees of a subject: the phone only masked."""

    subject_id: str
    phone: str | None
    created: bool = False


def check_subject_id(subject_id: str) -> str:
    """Subject ids are the caller's: 1-128 of letters, digits and ``._:@-``."""
    if not SUBJECT_ID.match(subject_id):
        raise InvalidRequest("subject_id must be 1-128 characters of A-Z a-z 0-9 . _ : @ -")
    return subject_id


def phone_context(client_id: str, subject_id: str) -> str:
    """AES-GCM associated data binding a phone ciphertext to its subject."""
    return f"phone:{client_id}:{subject_id}"


def subject_ref(ctx: ServiceContext, client_id: str, subject_id: str) -> str:
    """The pseudonym under which audit entries name a subject."""
    return ctx.keys.lookup_hash("subject", f"{client_id}:{subject_id}")[:32]


def find(ctx: ServiceContext, conn, client: ClientRecord, subject_id: str) -> SubjectRecord:  # type: ignore[no-untyped-def]
    """The caller's subject, or 404 (another tenant's subjects do not exist for it)."""
    check_subject_id(subject_id)
    subject = store.get(conn, client.id, subject_id)
    if subject is None:
        raise NotFound("no such subject")
    return subject


def phone_of(ctx: ServiceContext, subject: SubjectRecord) -> str | None:
    """The subject's phone in clear (for sending an SMS only)."""
    if subject.phone_ct is None:
        return None
    return ctx.keys.decrypt(subject.phone_ct, phone_context(subject.client_id, subject.subject_id))


def require_step_up(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    subject: SubjectRecord,
    action: str,
    assertion: str | None,
    now: datetime,
    *,
    always: bool = False,
    instead: tuple[str, ...] = (),
) -> str | None:
    """If the subject has an active non-SMS factor (or ``always``), check and consume an
    assertion for ``action`` or one of ``instead`` (else 403 ``step_up_required``); returns the
    action redeemed, or None when no step-up was needed.

    ASVS 6.4.4 / 7.5.1: changing the phone or a factor needs proof at the level of enrolment.
    The ``jti`` is recorded once, so an assertion is redeemed at most once (API.md), and the
    factors its verification proved must still complete an option of the action for the subject
    as it is now (issue 19, hole 3: an assertion minted before a PIN existed cannot replace it).
    """
    if not always and not any(f.status == "active" for f in factors.for_subject(conn, subject.pk)):
        return None
    if not assertion:
        raise StepUpRequired(f"this change needs a {action} assertion")
    wanted = action
    if instead:
        try:
            named = jwt.decode(assertion, options={"verify_signature": False}).get("action")
        except jwt.PyJWTError:
            named = None
        wanted = named if named in instead else action
    claims = assertions.verify(
        ctx.keys,
        assertion,
        issuer=ctx.settings.issuer,
        audience=client.id,
        subject=subject.subject_id,
        action=wanted,
        now=now,
    )
    _still_satisfied(ctx, conn, client, subject, wanted, str(claims["jti"]), now)
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if not replay.consume_assertion(conn, claims["jti"], expires, now):
        raise StepUpRequired("this assertion has already been used")
    return wanted


def _still_satisfied(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    subject: SubjectRecord,
    action: str,
    verification_id: str,
    now: datetime,
) -> None:
    """The assertion's verification must still satisfy a current option of ``action``, counting
    what that verification consumed (its last recovery code) as still held."""
    record = verification_store.get(conn, client.id, verification_id)
    if record is None or record.status != "satisfied" or record.subject_pk != subject.pk:
        raise StepUpRequired(f"a valid {action} assertion is required")
    state = subject_state(subject, store.snapshot(conn, subject), now)
    consumed = frozenset(record.satisfied) & registry.SINGLE_USE_SETS
    state = _replace(state, factors=state.factors | consumed)
    proven = set(record.satisfied)
    if not any(set(option) <= proven for option in decide(ctx.policy, action, state, now).options):
        raise StepUpRequired(
            f"the subject's factors changed since this {action} assertion was issued; step up again"
        )


def put_subject(
    ctx: ServiceContext,
    client: ClientRecord,
    subject_id: str,
    phone: object,
    assertion: str | None,
    ip: str | None = None,
) -> SubjectView:
    """Create a subject or change its phone (see ``_put_subject``); a create that loses a race
    with a concurrent create of the same id is retried once as an update."""
    try:
        return _put_subject(ctx, client, subject_id, phone, assertion, ip)
    except IntegrityError:
        return _put_subject(ctx, client, subject_id, phone, assertion, ip)


def _put_subject(
    ctx: ServiceContext,
    client: ClientRecord,
    subject_id: str,
    phone: object,
    assertion: str | None,
    ip: str | None = None,
) -> SubjectView:
    """Create a subject or change its phone.

    Changing the phone of a subject with an active non-SMS factor needs a ``change_phone``
    assertion (ASVS 7.5.1: reauthenticate before changing the phone number); the same phone
    again changes nothing and needs none.
    """
    check_subject_id(subject_id)
    e164 = normalize_e164(phone, ctx.settings.default_region)
    phone_hash = ctx.keys.lookup_hash("phone", e164)
    now = ctx.clock()
    ref = subject_ref(ctx, client.id, subject_id)
    with ctx.engine.begin() as conn:
        existing = store.get(conn, client.id, subject_id)
        if existing is None:
            ct = ctx.keys.encrypt(e164, phone_context(client.id, subject_id))
            pk = store.create(
                conn,
                client_id=client.id,
                subject_id=subject_id,
                phone_ct=ct,
                phone_hash=phone_hash,
                now=now,
            )
            if erasures.recently_erased(
                conn, client.id, ctx.keys.lookup_hashes("phone", e164), now
            ):
                # Issue 19, hole 2: erase-and-re-create must not buy the onboarding exemption.
                store.record_event(conn, pk, ONBOARDING_WAIVED, now)
            audit.append(
                conn,
                event="subject.created",
                outcome="ok",
                now=now,
                client_id=client.id,
                subject_ref=ref,
                ip=ip,
            )
            return SubjectView(subject_id, mask_phone(e164), created=True)
        # The same phone under any profile's keyed hash (GB/T 39786 profile switch) is no change,
        # unless a recovery suspended SMS: setting it again is how it comes back (API.md).
        same = existing.phone_hash in ctx.keys.lookup_hashes("phone", e164)
        if same and not _sms_suspended(conn, existing):
            return SubjectView(subject_id, mask_phone(e164))
        strong = require_step_up(ctx, conn, client, existing, "change_phone", assertion, now)
        ct = ctx.keys.encrypt(e164, phone_context(client.id, subject_id))
        store.set_phone(conn, existing.pk, phone_ct=ct, phone_hash=phone_hash, now=now)
        store.record_event(conn, existing.pk, "phone_changed", now)
        notify.event(conn, client.id, subject_id, "subject.phone_changed", now)
        audit.append(
            conn,
            event="subject.phone_changed",
            outcome="ok",
            now=now,
            client_id=client.id,
            subject_ref=ref,
            ip=ip,
            detail={"stepped_up": bool(strong)},
        )
    return SubjectView(subject_id, mask_phone(e164))


def _sms_suspended(conn: Connection, subject: SubjectRecord) -> bool:
    """After a recovery the same phone set again re-sets it (API.md, Recovery)."""
    snap = store.snapshot(conn, subject)
    return sms_suspended_by_recovery(subject, snap.carrier, snap.events)


def delete_subject(
    ctx: ServiceContext,
    client: ClientRecord,
    subject_id: str,
    assertion: str | None = None,
    ip: str | None = None,
) -> None:
    """Erase the subject's personal data and factors; the audit trail stays, pseudonymised.

    A subject with an active non-SMS factor needs a ``delete_account`` assertion (issue 19,
    hole 2: erasing and re-creating a subject wiped its protections)."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        stepped_up = require_step_up(ctx, conn, client, subject, "delete_account", assertion, now)
        erase(conn, subject, now)
        audit.append(
            conn,
            event="subject.erased",
            outcome="ok",
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            ip=ip,
            detail={"stepped_up": bool(stepped_up)},
        )
    scrub_wal(ctx.engine)


def erase(conn: Connection, subject: SubjectRecord, now: datetime) -> None:
    """Remove the subject, keeping its phone's keyed hash 30 days (``storage.erasures``)."""
    erasures.remember(conn, subject.client_id, subject.phone_hash, now)
    store.remove(conn, subject.pk)
    # Webhook payloads name the subject id: queued or delivered, they go too (issue 23).
    outbox.forget_subject(conn, subject.client_id, subject.subject_id)
