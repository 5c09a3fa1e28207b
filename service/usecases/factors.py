"""Factor enrolment, activation, listing and removal.

Once a subject has an active non-SMS factor, adding or removing one needs an ``enroll_factor``
assertion (API.md; ASVS 6.4.4: replacing a factor needs proof at the level of enrolment).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import InvalidCode, InvalidRequest, NotFound
from service.factors import device, knowledge, totp
from service.storage import audit, replay
from service.storage import factors as store
from service.storage import subjects as subject_store
from service.storage.clients import ClientRecord
from service.usecases import notify
from service.usecases.subjects import find, require_step_up, subject_ref


@dataclass(frozen=True)
class Enrolled:
    """The answer to an enrolment; ``secret``/``otpauth_uri`` only for TOTP, shown once."""

    factor_id: str
    type: str
    status: str
    label: str | None = None
    secret: str | None = None
    otpauth_uri: str | None = None
    qr_svg: str | None = None


def enroll(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, body: dict[str, Any]
) -> Enrolled:
    """Enrol a TOTP (pending until activated), a knowledge secret or a device key."""
    kind = body.get("type")
    factor_id = "fa_" + secrets.token_urlsafe(12)
    label = body.get("label")
    secret_plain: str
    alg = None
    status = "active"
    if kind == "totp":
        secret_plain, status = totp.new_secret(), "pending"
    elif kind == "knowledge":
        raw = body.get("secret")
        if not isinstance(raw, str):
            raise InvalidRequest("a knowledge factor needs 'secret'")
        knowledge.check_strength(raw, ctx.policy.knowledge_min_length)
        secret_plain = ctx.argon2_slots.run(ctx.hasher.hash, raw)
    elif kind == "device":
        pem, alg = body.get("public_key"), body.get("alg")
        if not isinstance(pem, str) or alg not in device.ALGORITHMS:
            raise InvalidRequest(
                "a device factor needs 'public_key' (PEM) and 'alg' ES256|EdDSA|SM2"
            )
        secret_plain = device.normalize_pem(pem, alg)
    else:
        raise InvalidRequest("type must be totp, knowledge or device")
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        stepped_up = require_step_up(
            ctx, conn, client, subject, "enroll_factor", body.get("assertion"), now
        )
        # One chosen secret per subject: a new PIN replaces the old. A new TOTP set-up voids
        # any that was never activated: its secret was shown once and never proven, and
        # set-ups repeated without end (no step-up is needed before a first strong factor)
        # made every decision about the subject read them all (3,000 pending factors made a
        # verification 40 times slower). A device is active at once: nothing to replace.
        if kind in ("knowledge", "totp"):
            for old in store.for_subject(conn, subject.pk):
                if old.type == kind and (kind == "knowledge" or old.status == "pending"):
                    store.remove(conn, old.id)
        store.insert(
            conn,
            factor_id=factor_id,
            subject_pk=subject.pk,
            type=kind,
            status=status,
            secret_ct=ctx.keys.encrypt(secret_plain, f"factor:{factor_id}"),
            alg=alg,
            label=label,
            now=now,
        )
        subject_store.record_event(conn, subject.pk, "factor_added", now)
        notify.event(conn, client.id, subject_id, "factor.added", now, type=kind)
        audit.append(
            conn,
            event="factor.enrolled",
            outcome=status,
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            detail={"factor_id": factor_id, "type": kind, "stepped_up": stepped_up},
        )
    if kind == "totp":
        uri = totp.provisioning_uri(secret_plain, subject_id, ctx.settings.issuer)
        return Enrolled(factor_id, kind, status, label, secret_plain, uri, totp.qr_svg(uri))
    return Enrolled(factor_id, kind, status, label)


def activate(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, factor_id: str, code: str
) -> str:
    """Activate a pending TOTP with a current code; the code counts as its one use."""
    now = ctx.clock()
    ref = subject_ref(ctx, client.id, subject_id)
    ctx.limits.check("failed_proofs", ref, "totp")  # RFC 4226 §7.3: throttle activation guesses
    try:
        with ctx.engine.begin() as conn:
            subject = find(ctx, conn, client, subject_id)
            factor = store.get(conn, subject.pk, factor_id)
            if factor is None:
                raise NotFound("no such factor")
            if factor.type != "totp" or factor.status != "pending":
                raise InvalidRequest("only a pending totp factor can be activated")
            secret = ctx.keys.decrypt(factor.secret_ct, f"factor:{factor.id}")
            step = totp.matching_step(secret, code, now.timestamp())
            if step is None or not replay.use_totp_step(conn, factor.id, step, now):
                raise InvalidCode("the code does not match")
            store.activate(conn, factor.id, now)
            audit.append(
                conn,
                event="factor.activated",
                outcome="ok",
                now=now,
                client_id=client.id,
                subject_ref=ref,
                detail={"factor_id": factor.id},
            )
    except InvalidCode:
        ctx.limits.record("failed_proofs", ref, "totp")
        raise
    return "active"


def summary(factor: store.FactorRecord) -> dict[str, Any]:
    """What callers and operators may see of a factor: never its secret."""
    return {
        "factor_id": factor.id,
        "type": factor.type,
        "status": factor.status,
        "created_at": rfc3339(factor.created_at),
        "label": factor.label,
    }


def listing(ctx: ServiceContext, client: ClientRecord, subject_id: str) -> list[dict[str, Any]]:
    """The subject's factors, never a secret."""
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        rows = store.for_subject(conn, subject.pk)
    return [summary(f) for f in rows]


def remove(
    ctx: ServiceContext,
    client: ClientRecord,
    subject_id: str,
    factor_id: str,
    assertion: str | None,
) -> None:
    """Remove a factor (behind an ``enroll_factor`` step-up when the subject has a strong one)."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        factor = store.get(conn, subject.pk, factor_id)
        if factor is None:
            raise NotFound("no such factor")
        stepped_up = require_step_up(ctx, conn, client, subject, "enroll_factor", assertion, now)
        store.remove(conn, factor.id)
        subject_store.record_event(conn, subject.pk, "factor_removed", now)
        notify.event(conn, client.id, subject_id, "factor.removed", now, type=factor.type)
        audit.append(
            conn,
            event="factor.removed",
            outcome="ok",
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            detail={"factor_id": factor.id, "type": factor.type, "stepped_up": stepped_up},
        )
