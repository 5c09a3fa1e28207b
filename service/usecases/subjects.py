"""Subjects: create, change phone (behind step-up), erase (PIPL art. 47)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from service.context import ServiceContext
from service.domain import assertions
from service.domain.errors import InvalidRequest, NotFound, StepUpRequired
from service.domain.phone import mask_phone, normalize_e164
from service.storage import audit, factors, replay
from service.storage import subjects as store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.usecases import notify

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
) -> bool:
    """If the subject has an active non-SMS factor, check and consume an assertion for
    ``action`` (else 403 ``step_up_required``); returns whether a step-up was needed.

    ASVS 6.4.4 / 7.5.1: changing the phone or a factor needs proof at the level of enrolment.
    The ``jti`` is recorded once, so an assertion is redeemed at most once (API.md).
    """
    if not any(f.status == "active" for f in factors.for_subject(conn, subject.pk)):
        return False
    if not assertion:
        raise StepUpRequired(f"this change needs a {action} assertion")
    claims = assertions.verify(
        ctx.keys,
        assertion,
        issuer=ctx.settings.issuer,
        audience=client.id,
        subject=subject.subject_id,
        action=action,
        now=now,
    )
    expires = datetime.fromtimestamp(claims["exp"], UTC)
    if not replay.consume_assertion(conn, claims["jti"], expires, now):
        raise StepUpRequired("this assertion has already been used")
    return True


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
    e164 = normalize_e164(phone)
    phone_hash = ctx.keys.lookup_hash("phone", e164)
    now = ctx.clock()
    ref = subject_ref(ctx, client.id, subject_id)
    with ctx.engine.begin() as conn:
        existing = store.get(conn, client.id, subject_id)
        if existing is None:
            ct = ctx.keys.encrypt(e164, phone_context(client.id, subject_id))
            store.create(
                conn,
                client_id=client.id,
                subject_id=subject_id,
                phone_ct=ct,
                phone_hash=phone_hash,
                now=now,
            )
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
        # The same phone under any profile's keyed hash (GB/T 39786 profile switch) is no change.
        if existing.phone_hash in ctx.keys.lookup_hashes("phone", e164):
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


def delete_subject(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, ip: str | None = None
) -> None:
    """Erase the subject's personal data and factors; the audit trail stays, pseudonymised."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        store.remove(conn, subject.pk)
        audit.append(
            conn,
            event="subject.erased",
            outcome="ok",
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            ip=ip,
        )
