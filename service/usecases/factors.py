"""Factor enrolment, activation, listing and removal.

Once a subject has an active non-SMS factor, adding or removing one needs an ``enroll_factor``
assertion (API.md; ASVS 6.4.4: replacing a factor needs proof at the level of enrolment).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import InvalidCode, InvalidRequest, NotFound
from service.domain.phone import mask_phone
from service.factors import device, knowledge, recovery_code, registry, totp
from service.storage import audit, replay
from service.storage import factors as store
from service.storage import recovery_codes as code_store
from service.storage import subjects as subject_store
from service.storage import verifications as verification_store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.usecases import notify, passkeys
from service.usecases.prepared import Prepared
from service.usecases.signals import PHONE_FACTOR_TYPES, in_onboarding
from service.usecases.subjects import find, phone_of, require_step_up, subject_ref

# Factors that do not travel with the phone: outside onboarding a subject's first one needs an
# enroll_factor step-up even when SMS is its only factor (API.md, Subjects and factors).
OFF_PHONE = registry.OFF_PHONE


@dataclass(frozen=True)
class Enrolled:
    """The answer to an enrolment; ``shown`` holds what the factor's SPEC says its answer adds
    (a TOTP secret and URI, a recovery-code set, passkey creation options), shown once."""

    factor_id: str
    type: str
    status: str
    label: str | None = None
    shown: dict[str, Any] = field(default_factory=dict)


def _prepare_totp(
    ctx: ServiceContext, client: ClientRecord, factor_id: str, body: dict
) -> Prepared:
    label = body.get("label")
    totp.check_account_label(label)
    secret = totp.new_secret()

    def shown(subject: SubjectRecord) -> dict[str, Any]:
        # What the authenticator app shows: the tenant (``idv clients issuer``) and the person
        # (the label given, else the masked phone), never the subject id (issue 21).
        phone = phone_of(ctx, subject)
        account = label or (mask_phone(phone) if phone else factor_id)
        uri = totp.provisioning_uri(secret, account, client.issuer or ctx.settings.issuer)
        return {"secret": secret, "otpauth_uri": uri, "qr_svg": totp.qr_svg(uri)}

    return Prepared(secret, "pending", shown=shown)


def _prepare_knowledge(
    ctx: ServiceContext, client: ClientRecord, factor_id: str, body: dict
) -> Prepared:
    raw = body.get("secret")
    if not isinstance(raw, str):
        raise InvalidRequest("a knowledge factor needs 'secret'")
    knowledge.check_strength(raw, ctx.policy.knowledge_min_length)
    return Prepared(ctx.argon2_slots.run(ctx.hasher.hash, raw))


def _prepare_device(
    ctx: ServiceContext, client: ClientRecord, factor_id: str, body: dict
) -> Prepared:
    pem, alg = body.get("public_key"), body.get("alg")
    if not isinstance(pem, str) or alg not in device.ALGORITHMS:
        raise InvalidRequest("a device factor needs 'public_key' (PEM) and 'alg' ES256|EdDSA|SM2")
    return Prepared(device.normalize_pem(pem, alg), alg=alg)


def _prepare_recovery_code(
    ctx: ServiceContext, client: ClientRecord, factor_id: str, body: dict
) -> Prepared:
    # The codes live only as keyed hashes in recovery_codes; the factor row holds no secret.
    codes = recovery_code.new_codes()

    def store_digests(conn: Connection, subject: SubjectRecord) -> None:
        key = ctx.keys.derived_key("recovery-code")
        code_store.add_set(
            conn, factor_id, [recovery_code.digest(key, factor_id, c) for c in codes]
        )

    return Prepared(
        "recovery_code:v1", after_insert=store_digests, shown=lambda _: {"codes": codes}
    )


# How each enrollable factor of the registry is prepared (issue 22).
_PREPARE: dict[str, Callable[[ServiceContext, ClientRecord, str, dict], Prepared]] = {
    "totp": _prepare_totp,
    "knowledge": _prepare_knowledge,
    "device": _prepare_device,
    "recovery_code": _prepare_recovery_code,
    "passkey": passkeys.prepare,
}
if set(_PREPARE) != set(registry.ENROLLABLE):
    raise RuntimeError("every enrollable factor needs a preparer in service.usecases.factors")


def enroll(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, body: dict[str, Any]
) -> Enrolled:
    """Enrol a factor of the registry: a TOTP (pending until activated), a knowledge secret, a
    device key, a set of recovery codes (replacing the old set), ..."""
    kind = body.get("type")
    if kind not in _PREPARE:
        raise InvalidRequest(f"type must be one of {', '.join(registry.ENROLLABLE)}")
    spec = registry.FACTORS[kind]
    factor_id = "fa_" + secrets.token_urlsafe(12)
    label = body.get("label")
    prepared = _PREPARE[kind](ctx, client, factor_id, body)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        events = subject_store.last_events(conn, subject.pk)
        onboarding = in_onboarding(subject, events, now)
        # Issue 19, hole 1: the phone alone never sets the first PIN of an established account.
        # A reset_knowledge assertion replaces a forgotten PIN (API.md, Recovery).
        redeemed = require_step_up(
            ctx,
            conn,
            client,
            subject,
            "enroll_factor",
            body.get("assertion"),
            now,
            always=kind in OFF_PHONE and not onboarding,
            instead=("reset_knowledge",) if kind == "knowledge" else (),
        )
        stepped_up = redeemed is not None
        # One chosen secret per subject: a new PIN replaces the old. A new TOTP set-up voids
        # any that was never activated: its secret was shown once and never proven, and
        # set-ups repeated without end (no step-up is needed before a first strong factor)
        # made every decision about the subject read them all (3,000 pending factors made a
        # verification 40 times slower). A device is active at once: nothing to replace.
        # A new set of recovery codes voids the old one (API.md): its codes are gone with it.
        first_pin = kind == "knowledge"
        if spec.replaces is not None:
            for old in store.for_subject(conn, subject.pk):
                if old.type == kind and (spec.replaces == "any" or old.status == "pending"):
                    first_pin = first_pin and kind != "knowledge"
                    store.remove(conn, old.id)
        if redeemed == "reset_knowledge":  # money actions wait out their cooling-off
            subject_store.record_event(conn, subject.pk, "knowledge_reset", now)
        elif first_pin and not onboarding:  # a first PIN on an established account, likewise
            subject_store.record_event(conn, subject.pk, "first_knowledge", now)
        store.insert(
            conn,
            factor_id=factor_id,
            subject_pk=subject.pk,
            type=kind,
            status=prepared.status,
            secret_ct=ctx.keys.encrypt(prepared.secret, f"factor:{factor_id}"),
            alg=prepared.alg,
            label=label,
            now=now,
        )
        if prepared.after_insert is not None:
            prepared.after_insert(conn, subject)
        subject_store.record_event(conn, subject.pk, "factor_added", now)
        notify.event(conn, client.id, subject_id, "factor.added", now, type=kind)
        audit.append(
            conn,
            event="factor.enrolled",
            outcome=prepared.status,
            now=now,
            client_id=client.id,
            subject_ref=subject_ref(ctx, client.id, subject_id),
            detail={"factor_id": factor_id, "type": kind, "stepped_up": stepped_up},
        )
    shown = prepared.shown(subject) if prepared.shown is not None else {}
    return Enrolled(factor_id, kind, prepared.status, label, shown)


def _activate_totp(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    factor: store.FactorRecord,
    body: dict[str, Any],
    now: datetime,
) -> None:
    """A current code activates a pending TOTP and counts as that code's one use."""
    code = body.get("code")
    if not isinstance(code, str):
        raise InvalidRequest("a totp factor is activated with 'code'")
    secret = ctx.keys.decrypt(factor.secret_ct, f"factor:{factor.id}")
    step = totp.matching_step(secret, code, now.timestamp())
    if step is None or not replay.use_totp_step(conn, factor.id, step, now):
        raise InvalidCode("the code does not match")
    store.activate(conn, factor.id, now)


# How a pending factor of each type is activated (issue 22); ``InvalidCode`` when it does not.
_ACTIVATE = {"totp": _activate_totp, "passkey": passkeys.activate}


def activate(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, factor_id: str, body: dict
) -> str:
    """Activate a pending factor (a TOTP with a current code, a passkey with the browser's
    registration response). Failures are throttled like failed proofs (RFC 4226 §7.3)."""
    now = ctx.clock()
    ref = subject_ref(ctx, client.id, subject_id)
    kind = "totp"
    try:
        with ctx.engine.begin() as conn:
            subject = find(ctx, conn, client, subject_id)
            factor = store.get(conn, subject.pk, factor_id)
            if factor is None:
                raise NotFound("no such factor")
            kind = factor.type
            if kind not in _ACTIVATE or factor.status != "pending":
                raise InvalidRequest("only a pending totp or passkey factor can be activated")
            ctx.limits.check("failed_proofs", ref, kind)  # before any verifier work
            _ACTIVATE[kind](ctx, conn, client, factor, body, now)
            audit.append(
                conn,
                event="factor.activated",
                outcome="ok",
                now=now,
                client_id=client.id,
                subject_ref=ref,
                detail={"factor_id": factor.id, "type": kind},
            )
    except InvalidCode:
        ctx.limits.record("failed_proofs", ref, kind)
        raise
    return "active"


def summary(
    factor: store.FactorRecord, remaining: int | None = None, suspended: bool = False
) -> dict[str, Any]:
    """What callers and operators may see of a factor: never its secret; for a recovery-code
    set, how many codes are ``remaining``. ``suspended``: a delayed recovery waits and this
    factor lives on the phone (API.md, Recovery)."""
    status = factor.status
    if suspended and status == "active" and factor.type in PHONE_FACTOR_TYPES:
        status = "suspended"
    shown = {
        "factor_id": factor.id,
        "type": factor.type,
        "status": status,
        "created_at": rfc3339(factor.created_at),
        "label": factor.label,
    }
    return shown if remaining is None else shown | {"remaining": remaining}


def summaries(
    conn: Connection, rows: list[store.FactorRecord], suspended: bool = False
) -> list[dict[str, Any]]:
    """``summary`` of each factor, with the unused codes of recovery-code sets counted."""
    left = code_store.remaining(conn, [f.id for f in rows if f.type == "recovery_code"])
    return [summary(f, left.get(f.id), suspended) for f in rows]


def listing(ctx: ServiceContext, client: ClientRecord, subject_id: str) -> list[dict[str, Any]]:
    """The subject's factors, never a secret."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        rows = store.for_subject(conn, subject.pk)
        return summaries(conn, rows, recovery_waits(conn, subject.pk, now))


def recovery_waits(conn: Connection, subject_pk: int, now: datetime) -> bool:
    """Whether a delayed recovery of the subject waits (its phone factors read suspended)."""
    return any(w.expires_at > now for w in verification_store.waiting_for(conn, subject_pk))


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
        stepped_up = bool(
            require_step_up(ctx, conn, client, subject, "enroll_factor", assertion, now)
        )
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
