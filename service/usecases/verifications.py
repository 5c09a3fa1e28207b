"""The step-up verification use case: the one place that decides the order of security checks.

For a proof: policy (is this factor still useful here?) → rate limit → verifier → atomic replay
record → state transition → audit → assertion. Plain code, top to bottom (STYLE.md).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain import assertions
from service.domain.clock import rfc3339
from service.domain.errors import (
    FactorNotAllowed,
    InvalidRequest,
    NotFound,
    NotPending,
    RateLimited,
    ServiceUnavailable,
)
from service.domain.phone import mask_phone
from service.domain.policy import ActionPolicy, Decision, decide
from service.factors import device, sms, totp
from service.ratelimit import lockout_for
from service.storage import audit, replay
from service.storage import factors as factor_store
from service.storage import subjects as subject_store
from service.storage import verifications as store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases import notify
from service.usecases.signals import PulledSignals, pull, subject_state
from service.usecases.subjects import find, phone_of, subject_ref

CHALLENGE_FACTORS = ("sms", "device")
PROOF_FIELDS = {
    "totp": ("code",),
    "sms": ("code",),
    "knowledge": ("secret",),
    "device": ("factor_id", "signature"),
}
DEVICE_CHALLENGE_TTL = timedelta(minutes=2)


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
        )


@dataclass(frozen=True)
class ProofOutcome:
    """The answer to a proof (API.md: accepted, satisfied, assertion)."""

    verification_id: str
    status: str
    accepted: bool
    satisfied: list[str]
    assertion: str | None = None


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
) -> VerificationView:
    """Decide which factor combinations this subject may use for ``action`` right now."""
    rules = ctx.policy.action(action)  # unknown action → 400 before anything else
    ip = _ip(context)
    ctx.limits.hit("verifications", client.id, action_limits=rules.limits)
    if ip:
        ctx.limits.hit("ip", ip, action_limits=rules.limits)
    pulled = _pull_carrier(ctx, client, subject_id, rules) if ctx.carrier else None
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        active = [f for f in factor_store.for_subject(conn, subject.pk) if f.status == "active"]
        state = subject_state(conn, subject, active, now, pulled)
        decision = decide(ctx.policy, action, state, now)
        verification_id = "vf_" + secrets.token_urlsafe(18)
        expires_at = now + rules.lifetime
        store.insert(
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
        record = store.get(conn, client.id, verification_id)
    assert record is not None
    return VerificationView.of(record)


def _pull_carrier(
    ctx: ServiceContext, client: ClientRecord, subject_id: str, rules: ActionPolicy
) -> PulledSignals | None:
    """Ask the configured carrier about the subject's phone, outside any transaction."""
    assert ctx.carrier is not None
    with ctx.engine.connect() as conn:
        subject = find(ctx, conn, client, subject_id)
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


def _pending(
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
    if record.status == "pending" and record.expires_at <= now:
        store.set_status(conn, record.id, "expired", now)
        raise NotPending("the verification has expired")
    if record.status != "pending":
        raise NotPending(f"the verification is {record.status}")
    return record


def get(ctx: ServiceContext, client: ClientRecord, verification_id: str) -> VerificationView:
    """The verification's current state (without assertion)."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        record = store.get(conn, client.id, verification_id)
        if record is None:
            raise NotFound("no such verification")
        if record.status == "pending" and record.expires_at <= now:
            store.set_status(conn, record.id, "expired", now)
            return VerificationView.of(record, "expired")
        if record.status != "pending":
            return VerificationView.of(record)
        # Pending: show what the policy offers now (a signal may have arrived since the start).
        subject = subject_store.by_pk(conn, record.subject_pk)
        assert subject is not None
        active = [f for f in factor_store.for_subject(conn, subject.pk) if f.status == "active"]
        options, decision = _still_open(ctx, conn, record, subject, active, now)
        if not options:
            _record_denial(conn, record, decision, now)
            record = replace(
                record, status="denied", reasons=decision.reasons, held_until=decision.held_until
            )
        else:
            record = replace(record, options=options)
    return VerificationView.of(record)


def _remaining(options: list[list[str]], satisfied: list[str]) -> set[str]:
    """Factors that still help complete some option."""
    done = set(satisfied)
    return {f for option in options for f in option if f not in done}


def _still_open(
    ctx: ServiceContext,
    conn: Connection,
    record: VerificationRecord,
    subject: SubjectRecord,
    active: list[factor_store.FactorRecord],
    now: datetime,
) -> tuple[list[list[str]], Decision]:
    """The options chosen at start that the policy still offers now.

    Carrier signals and lockouts can arrive while a verification is pending; an SMS code sent
    after a SIM swap must be worthless at once (T1), so every challenge and proof decides again.
    """
    decision = decide(ctx.policy, record.action, subject_state(conn, subject, active, now), now)
    return [o for o in record.options if o in decision.options], decision


def _deny(
    ctx: ServiceContext, record: VerificationRecord, decision: Decision, now: datetime
) -> NotPending:
    """Deny a pending verification the policy no longer allows; the error to raise."""
    with ctx.engine.begin() as conn:
        _record_denial(conn, record, decision, now)
    return NotPending(f"the verification was denied: {', '.join(decision.reasons)}")


def _record_denial(
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


def _check_lock(subject: SubjectRecord, now: datetime) -> None:
    """A lockout also stops verifications opened before it (no pre-opened guessing slots)."""
    if subject.locked_until is not None and subject.locked_until > now:
        wait = int((subject.locked_until - now).total_seconds()) + 1
        raise RateLimited("the subject is locked out after repeated failures", retry_after=wait)


# -- challenges --------------------------------------------------------------------------------
def challenge(
    ctx: ServiceContext, client: ClientRecord, verification_id: str, factor: str
) -> dict[str, str]:
    """Send an SMS code or issue a device challenge for a pending verification."""
    if factor not in CHALLENGE_FACTORS:
        raise InvalidRequest("only sms and device have challenges")
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        record = _pending(conn, client, verification_id, now)
        subject = subject_store.by_pk(conn, record.subject_pk)
        assert subject is not None
        _check_lock(subject, now)
        active = [f for f in factor_store.for_subject(conn, subject.pk) if f.status == "active"]
        options, decision = _still_open(ctx, conn, record, subject, active, now)
        if options:
            if factor not in _remaining(options, record.satisfied):
                raise FactorNotAllowed(f"{factor} is in no remaining option of this verification")
            if factor == "device":
                return _device_challenge(conn, record, now)
            phone, code, expires = _sms_challenge(ctx, conn, client, record, subject, now)
    if not options:
        raise _deny(ctx, record, decision, now)
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
    # ASVS 6.6.3: SMS sends are limited per phone number (keyed hash, never the number).
    rules = ctx.policy.action(record.action).limits
    ctx.limits.hit("sms_sends", subject.phone_hash, action_limits=rules)
    ctx.limits.hit("sms_sends_daily", subject.phone_hash, action_limits=rules)
    code = sms.new_code()
    expires = now + timedelta(seconds=sms.CODE_TTL_SECONDS)
    digest = sms.code_digest(ctx.keys.derived_key("sms-code"), record.id, code)
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
@dataclass
class _Attempt:
    """What a proof needs to know, read in one go."""

    record: VerificationRecord
    subject: SubjectRecord
    options: list[list[str]]
    decision: Decision
    candidates: list[factor_store.FactorRecord]
    live: list[tuple[int, str]]


def _load(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    verification_id: str,
    factor: str,
    now: datetime,
    *,
    for_update: bool,
) -> _Attempt:
    """Read the verification, its subject, the policy's current options and the candidates."""
    record = _pending(conn, client, verification_id, now, for_update=for_update)
    subject = subject_store.by_pk(conn, record.subject_pk)
    assert subject is not None
    _check_lock(subject, now)
    active = [f for f in factor_store.for_subject(conn, subject.pk) if f.status == "active"]
    options, decision = _still_open(ctx, conn, record, subject, active, now)
    if options and factor not in _remaining(options, record.satisfied):
        raise FactorNotAllowed(f"{factor} is in no remaining option of this verification")
    live = (
        replay.live_challenges(conn, record.id, factor, now) if factor in ("sms", "device") else []
    )
    return _Attempt(
        record, subject, options, decision, [f for f in active if f.type == factor], live
    )


def prove(
    ctx: ServiceContext, client: ClientRecord, verification_id: str, proof: dict[str, Any]
) -> ProofOutcome:
    """Check one proof and move the verification on, atomically.

    TOTP, SMS and device proofs run in ONE transaction (the hot path: a handful of statements,
    one commit). A knowledge proof reads first, runs argon2 outside any transaction, then
    records the outcome, so slow hashing never holds a lock.
    """
    factor = proof.get("factor")
    if factor not in PROOF_FIELDS:
        raise InvalidRequest("factor must be one of totp, sms, knowledge, device")
    for name in PROOF_FIELDS[factor]:
        if not isinstance(proof.get(name), str) or not proof[name]:
            raise InvalidRequest(f"a {factor} proof needs {name!r}")
    now = ctx.clock()
    outcome: ProofOutcome | None = None
    if factor == "knowledge":
        with ctx.engine.connect() as conn:
            attempt = _load(ctx, conn, client, verification_id, factor, now, for_update=False)
            conn.commit()
        if attempt.options:
            rules = _throttle(ctx, client, attempt, factor)
            check = _verify(ctx, factor, proof, attempt, now)
            with ctx.engine.begin() as conn:
                attempt.record = _pending(conn, client, verification_id, now, for_update=True)
                outcome = _settle(ctx, conn, client, attempt, factor, check, rules, now)
    else:
        with ctx.engine.begin() as conn:
            attempt = _load(ctx, conn, client, verification_id, factor, now, for_update=True)
            if attempt.options:
                rules = _throttle(ctx, client, attempt, factor)
                check = _verify(ctx, factor, proof, attempt, now)
                outcome = _settle(ctx, conn, client, attempt, factor, check, rules, now)
    if outcome is None:  # a signal arrived since the start: the policy no longer allows it
        raise _deny(ctx, attempt.record, attempt.decision, now)
    if not outcome.accepted:
        # Counted after the commit so that a rolled-back attempt is never charged twice.
        ref = subject_ref(ctx, client.id, attempt.subject.subject_id)
        ctx.limits.record("failed_proofs", ref, factor, action_limits=rules.limits)
        ctx.limits.record("subject_failures", ref, action_limits=rules.limits)
    return outcome


def _throttle(
    ctx: ServiceContext, client: ClientRecord, attempt: _Attempt, factor: str
) -> ActionPolicy:
    """Rate limits, before any verifier work (RFC 4226 §7.3, NIST SP 800-63B throttling)."""
    ref = subject_ref(ctx, client.id, attempt.subject.subject_id)
    rules = ctx.policy.action(attempt.record.action)
    ctx.limits.check("failed_proofs", ref, factor, action_limits=rules.limits)
    ctx.limits.check("subject_failures", ref, action_limits=rules.limits)
    return rules


def _settle(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    attempt: _Attempt,
    factor: str,
    check: _Check,
    rules: ActionPolicy,
    now: datetime,
) -> ProofOutcome:
    """Record the single use and the state transition, audit, and sign when complete."""
    record, subject = attempt.record, attempt.subject
    ref = subject_ref(ctx, client.id, subject.subject_id)
    if check.accepted and check.consume(conn):
        token, status, satisfied = _accept(
            ctx,
            conn,
            client,
            record,
            attempt.options,
            subject,
            factor,
            check,
            rules.acr,
            ref,
            now,
        )
        return ProofOutcome(record.id, status, True, satisfied, token)
    failures, status = store.count_failure(conn, record.id, rules.failure_limit, now)
    if status == "locked":
        lock_subject_if_repeated(ctx, conn, subject, now)
    if record.satisfied or status == "locked":
        # ASVS 6.3.4: one factor passed and another failed, or the attempt was locked.
        notify.event(
            conn,
            client.id,
            subject.subject_id,
            "verification.suspicious",
            now,
            action=record.action,
            outcome=status,
        )
    audit.append(
        conn,
        event="proof.failed",
        outcome=status,
        now=now,
        client_id=client.id,
        subject_ref=ref,
        detail={"verification_id": record.id, "factor": factor, "failures": failures},
    )
    return ProofOutcome(record.id, status, False, record.satisfied)


def _accept(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    record: VerificationRecord,
    options: list[list[str]],
    subject: SubjectRecord,
    factor: str,
    check: _Check,
    acr: str,
    ref: str,
    now: datetime,
) -> tuple[str | None, str, list[str]]:
    """Record an accepted proof; sign the assertion when an option is complete."""
    if check.rehash is not None:
        factor_store.replace_secret(conn, check.rehash[0], check.rehash[1])
    satisfied = sorted(set(record.satisfied) | {factor})
    done = [option for option in options if set(option) <= set(satisfied)]
    complete = bool(done)
    if complete and all(len(option) == 1 for option in done) and acr != "aal1":
        acr = "aal1"  # NIST SP 800-63B-4: AAL2 needs two factors; a one-factor option is AAL1
    status = "satisfied" if complete else "pending"
    store.add_satisfied(conn, record.id, satisfied, status, now)
    token = None
    if complete:
        token = assertions.issue(
            ctx.keys,
            issuer=ctx.settings.issuer,
            audience=client.id,
            subject=subject.subject_id,
            action=record.action,
            acr=acr,
            factors=satisfied,
            auth_time=now,
            now=now,
            ttl=ctx.settings.assertion_ttl,
            jti=record.id,
        )
        if record.action == "password_reset":  # T1: starts the cooling-off of the chain
            subject_store.record_event(conn, subject.pk, "password_reset", now)
        if ctx.policy.action(record.action).sensitive:  # tell the user on another channel
            notify.event(
                conn,
                client.id,
                subject.subject_id,
                "verification.satisfied",
                now,
                action=record.action,
                factors=satisfied,
            )
    audit.append(
        conn,
        event="proof.accepted",
        outcome=status,
        now=now,
        client_id=client.id,
        subject_ref=ref,
        detail={"verification_id": record.id, "factor": factor},
    )
    return token, status, satisfied


def lock_subject_if_repeated(
    ctx: ServiceContext, conn: Connection, subject: SubjectRecord, now: datetime
) -> None:
    """Lock the subject out with growing back-off after repeated locked verifications."""
    locked = store.recent_outcomes(conn, subject.pk, now - timedelta(hours=24)).count("locked")
    pause = lockout_for(locked)
    if pause is not None:
        subject_store.lock(conn, subject.pk, now + pause)


@dataclass
class _Check:
    """A verifier's verdict and how to record its single use atomically."""

    accepted: bool
    record_use: Any = None  # callable(conn) -> bool
    rehash: tuple[str, str] | None = None

    def consume(self, conn: Connection) -> bool:
        return True if self.record_use is None else bool(self.record_use(conn))


def _verify(
    ctx: ServiceContext, factor: str, proof: dict[str, Any], attempt: _Attempt, now: datetime
) -> _Check:
    """Run the factor's verifier; never raises for a wrong proof."""
    record, candidates, live = attempt.record, attempt.candidates, attempt.live
    if factor == "totp":
        for f in candidates:
            secret = ctx.keys.decrypt(f.secret_ct, f"factor:{f.id}")
            step = totp.matching_step(secret, proof["code"], now.timestamp())
            if step is not None:
                # RFC 6238 §5.2: the unique (factor, step) row is the one-use guard.
                return _Check(
                    True, lambda c, fid=f.id, s=step: replay.use_totp_step(c, fid, s, now)
                )
        return _Check(False)
    if factor == "sms":
        key = ctx.keys.derived_key("sms-code")
        for challenge_id, digest in live:
            if sms.code_matches(key, record.id, proof["code"], digest):
                return _Check(True, lambda c, cid=challenge_id: replay.use_challenge(c, cid, now))
        return _Check(False)
    if factor == "knowledge":
        stored = candidates[0] if candidates else None
        stored_hash = ctx.keys.decrypt(stored.secret_ct, f"factor:{stored.id}") if stored else None
        # Bounded: PIN floods cannot starve other proofs.
        ok, new_hash = ctx.argon2_slots.run(ctx.hasher.verify, stored_hash, proof["secret"])
        if not ok or stored is None:
            return _Check(False)
        rehash = (
            (stored.id, ctx.keys.encrypt(new_hash, f"factor:{stored.id}")) if new_hash else None
        )
        return _Check(True, None, rehash)
    # device
    bound = next((f for f in candidates if f.id == proof["factor_id"]), None)
    if bound is None:
        return _Check(False)
    pem = ctx.keys.decrypt(bound.secret_ct, f"factor:{bound.id}")
    for challenge_id, text in live:
        if device.verify_signature(pem, bound.alg or "", text, proof["signature"]):
            return _Check(True, lambda c, cid=challenge_id: replay.use_challenge(c, cid, now))
    return _Check(False)
