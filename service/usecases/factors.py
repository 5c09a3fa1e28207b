"""Factor enrolment, activation, listing and removal.

Once a subject has an active non-SMS factor, adding or removing one needs an ``enroll_factor``
assertion (API.md; ASVS 6.4.4: replacing a factor needs proof at the level of enrolment).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import InvalidCode, InvalidRequest, NotFound
from service.factors import registry
from service.storage import audit
from service.storage import factors as store
from service.storage import recovery_codes as code_store
from service.storage import subjects as subject_store
from service.storage import verifications as verification_store
from service.storage.clients import ClientRecord
from service.usecases import notify
from service.usecases.factor_ports import Port
from service.usecases.signals import PHONE_FACTOR_TYPES, in_onboarding
from service.usecases.subjects import find, require_step_up, subject_ref

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


# The enrollable factors of the registry, each prepared by its own ``prepare`` hook (issue 22).
ENROLLABLE = {name: spec for name, spec in registry.FACTORS.items() if spec.enrollable}


def enroll(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, body: dict[str, Any]
) -> Enrolled:
    """Enrol a factor of the registry: a TOTP (pending until activated), a knowledge secret, a
    device key, a set of recovery codes (replacing the old set), ..."""
    kind = body.get("type")
    spec = ENROLLABLE.get(kind) if isinstance(kind, str) else None
    if spec is None or spec.prepare is None:
        raise InvalidRequest(f"type must be one of {', '.join(registry.ENROLLABLE)}")
    kind = spec.name
    factor_id = "fa_" + secrets.token_urlsafe(12)
    label = body.get("label")
    now = ctx.clock()
    port = Port(ctx, client, now)
    prepared = spec.prepare(port, factor_id, body)
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
            always=spec.off_phone and not onboarding,
            instead=("reset_knowledge",) if spec.resettable else (),
        )
        stepped_up = redeemed is not None
        # One chosen secret per subject: a new PIN replaces the old. A new TOTP set-up voids
        # any that was never activated: its secret was shown once and never proven, and
        # set-ups repeated without end (no step-up is needed before a first strong factor)
        # made every decision about the subject read them all (3,000 pending factors made a
        # verification 40 times slower). A device is active at once: nothing to replace.
        # A new set of recovery codes voids the old one (API.md): its codes are gone with it.
        first_pin = spec.resettable
        if spec.replaces is not None:
            for old in store.for_subject(conn, subject.pk):
                if old.type == kind and (spec.replaces == "any" or old.status == "pending"):
                    first_pin = False
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
            prepared.after_insert(port.bound(conn), subject)
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
    shown = prepared.shown(port, subject) if prepared.shown is not None else {}
    return Enrolled(factor_id, kind, prepared.status, label, shown)


# The factors a pending set-up of which is activated by an answer (``activate`` hook).
ACTIVATABLE = tuple(name for name, spec in registry.FACTORS.items() if spec.activate is not None)


def activate(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, factor_id: str, body: dict
) -> str:
    """Activate a pending factor (a TOTP with a current code, a passkey with the browser's
    registration response). Failures are throttled like failed proofs (RFC 4226 §7.3)."""
    now = ctx.clock()
    ref = subject_ref(ctx, client.id, subject_id)
    kind = ACTIVATABLE[0]
    try:
        with ctx.engine.begin() as conn:
            subject = find(ctx, conn, client, subject_id)
            factor = store.get(conn, subject.pk, factor_id)
            if factor is None:
                raise NotFound("no such factor")
            kind = factor.type
            spec = registry.spec(kind)
            if spec is None or spec.activate is None or factor.status != "pending":
                raise InvalidRequest(
                    f"only a pending {' or '.join(ACTIVATABLE)} factor can be activated"
                )
            ctx.limits.check("failed_proofs", ref, kind)  # before any verifier work
            spec.activate(Port(ctx, client, now, conn), factor, body)
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
    left = code_store.remaining(conn, [f.id for f in rows if f.type in registry.SINGLE_USE_SETS])
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
