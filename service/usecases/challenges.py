"""Challenges of a pending verification: an SMS code sent, or a device nonce to sign."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import (
    FactorNotAllowed,
    InvalidRequest,
    ServiceUnavailable,
)
from service.domain.phone import mask_phone
from service.factors import device, registry, sms
from service.storage import audit, replay
from service.storage import subjects as subject_store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases import passkeys, sms_budget
from service.usecases.subjects import phone_of, subject_ref
from service.usecases.verifications import (
    check_lock,
    deny,
    pending_with_subject,
    remaining,
    still_open,
)

CHALLENGE_FACTORS = registry.CHALLENGE_FACTORS
DEVICE_CHALLENGE_TTL = timedelta(minutes=2)


def challenge(
    ctx: ServiceContext, client: ClientRecord, verification_id: str, factor: str
) -> dict[str, Any]:
    """Send an SMS code, or issue a device challenge or passkey request options, for a
    pending verification."""
    if factor not in CHALLENGE_FACTORS:
        raise InvalidRequest(f"only {', '.join(CHALLENGE_FACTORS)} have challenges")
    kind = registry.FACTORS[factor].challenge
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        record, subject = pending_with_subject(conn, client, verification_id, now)
        check_lock(subject, now)
        snap = subject_store.snapshot(conn, subject)
        options, decision = still_open(ctx, record, subject, snap, now)
        if options:
            if factor not in remaining(options, record.satisfied):
                raise FactorNotAllowed(f"{factor} is in no remaining option of this verification")
            if kind == "nonce":
                return _device_challenge(conn, record, now)
            if kind == "webauthn":
                return passkeys.challenge(ctx, conn, client, record, subject, now)
            phone, code, expires = _sms_challenge(ctx, conn, client, record, subject, now)
    if not options:
        raise deny(ctx, record, decision, now)
    # Sent after the commit: no network call while the transaction holds locks.
    try:
        ctx.sms.send(phone, code, sms.message_text(code))
    except sms.SmsDeliveryError:
        raise ServiceUnavailable("the SMS gateway did not accept the message") from None
    return {"factor": "sms", "sent_to": mask_phone(phone), "expires_at": rfc3339(expires)}


def _device_challenge(conn: Connection, record: VerificationRecord, now: datetime) -> dict:
    """A single-use challenge binding a 256-bit nonce, the verification, action and expiry
    (RFC 9449-style; ASVS 6.7.2)."""
    expires = min(now + DEVICE_CHALLENGE_TTL, record.expires_at)
    text = device.make_challenge(
        record.id, record.action, int(expires.timestamp()), device.new_nonce()
    )
    replay.add_challenge(
        conn, verification_id=record.id, factor="device", digest=text, now=now, expires_at=expires
    )
    return {"factor": "device", "challenge": text, "expires_at": rfc3339(expires)}


def _sms_challenge(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    record: VerificationRecord,
    subject: SubjectRecord,
    now: datetime,
) -> tuple[str, str, datetime]:
    """Issue an SMS code (stored only as an HMAC bound to the verification): phone, code, expiry."""
    phone = phone_of(ctx, subject)
    assert phone is not None and subject.phone_hash is not None  # sms implies a phone
    # ASVS 6.6.3: SMS sends are limited per tenant and phone (keyed hash, never the number),
    # per phone across tenants, per tenant, and to the tenant's regions (``sms_budget``).
    rules = ctx.policy.action(record.action).limits
    sms_budget.charge(ctx, conn, client, phone, subject.phone_hash, rules, now)
    code = sms.new_code()
    expires = now + timedelta(seconds=sms.CODE_TTL_SECONDS)
    digest = sms.code_digest(ctx.keys.derived_key("sms-code"), record.id, code, ctx.keys.profile)
    replay.add_challenge(
        conn, verification_id=record.id, factor="sms", digest=digest, now=now, expires_at=expires
    )
    audit.append(
        conn,
        event="sms.sent",
        outcome="ok",
        now=now,
        client_id=client.id,
        subject_ref=subject_ref(ctx, client.id, subject.subject_id),
        detail={"verification_id": record.id},
    )
    return phone, code, expires


# -- proofs ------------------------------------------------------------------------------------
