"""Proofs: the one place that decides the order of security checks.

For a proof: policy (is this factor still useful here?) → rate limit → verifier → atomic replay
record → state transition → audit → assertion. Plain code, top to bottom (STYLE.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain import assertions
from service.domain.errors import (
    FactorNotAllowed,
    InvalidRequest,
)
from service.domain.policy import (
    ActionPolicy,
    Decision,
    attestation_counts,
    completed_options,
)
from service.factors import attested, device, recovery_code, sms, totp
from service.ratelimit import Taken
from service.storage import attestations as attestation_store
from service.storage import audit, replay
from service.storage import factors as factor_store
from service.storage import recovery_codes as code_store
from service.storage import subjects as subject_store
from service.storage import verifications as store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases import notify, recovery
from service.usecases.attested import watch_accepted
from service.usecases.subjects import subject_ref
from service.usecases.verifications import (
    check_lock,
    deny,
    lock_subject_if_repeated,
    pending,
    pending_with_subject,
    remaining,
    still_open,
)

PROOF_FIELDS = {
    "totp": ("code",),
    "sms": ("code",),
    "knowledge": ("secret",),
    "device": ("factor_id", "signature"),
    "recovery_code": ("code",),
    "attested": ("attestation",),
}


@dataclass(frozen=True)
class ProofOutcome:
    """The answer to a proof (API.md: accepted, satisfied, assertion)."""

    verification_id: str
    status: str
    accepted: bool
    satisfied: list[str]
    assertion: str | None = None
    ready_at: datetime | None = None  # a delayed recovery is waiting until then
    # API.md: failed proofs that remain before the verification locks (0 once locked).
    attempts_left: int = 0


@dataclass
class _Attempt:
    """What a proof needs to know, read in one go."""

    record: VerificationRecord
    subject: SubjectRecord
    options: list[list[str]]
    decision: Decision
    candidates: list[factor_store.FactorRecord]
    live: list[tuple[int, str]]
    ref: str  # the subject's pseudonym: rate-limit key and audit subject
    tenant_keys: list[attested.TenantKey]  # an attested proof's: this tenant's keys only


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
    record, subject = pending_with_subject(
        conn, client, verification_id, now, for_update=for_update
    )
    check_lock(subject, now)
    snap = subject_store.snapshot(conn, subject)
    active = [f for f in snap.factors if f.status == "active"]
    options, decision = still_open(ctx, record, subject, snap, now)
    if options and factor not in remaining(options, record.satisfied):
        raise FactorNotAllowed(f"{factor} is in no remaining option of this verification")
    live = (
        replay.live_challenges(conn, record.id, factor, now) if factor in ("sms", "device") else []
    )
    return _Attempt(
        record,
        subject,
        options,
        decision,
        [f for f in active if f.type == factor],
        live,
        subject_ref(ctx, client.id, subject.subject_id),
        attestation_store.keys_of(conn, client.id) if factor == "attested" else [],
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
        raise InvalidRequest(f"factor must be one of {', '.join(PROOF_FIELDS)}")
    for name in PROOF_FIELDS[factor]:
        if not isinstance(proof.get(name), str) or not proof[name]:
            raise InvalidRequest(f"a {factor} proof needs {name!r}")
    now = ctx.clock()
    outcome: ProofOutcome | None = None
    if factor == "knowledge":
        # A place in the argon2 gate first: when a PIN flood fills it, 429 before any work.
        with ctx.argon2_slots.admission():
            with ctx.engine.connect() as conn:
                attempt = _load(ctx, conn, client, verification_id, factor, now, for_update=False)
                conn.commit()
            if attempt.options:
                rules, taken = _throttle(ctx, client, attempt, factor)
                check = _verify_counted(ctx, taken, factor, proof, attempt, now)
                with ctx.engine.begin() as conn:
                    attempt.record = pending(conn, client, verification_id, now, for_update=True)
                    outcome = _settle(ctx, conn, client, attempt, factor, check, rules, now)
    else:
        with ctx.engine.begin() as conn:
            attempt = _load(ctx, conn, client, verification_id, factor, now, for_update=True)
            if attempt.options:
                rules, taken = _throttle(ctx, client, attempt, factor)
                check = _verify_counted(ctx, taken, factor, proof, attempt, now)
                outcome = _settle(ctx, conn, client, attempt, factor, check, rules, now)
    if outcome is None:  # a signal arrived since the start: the policy no longer allows it
        raise deny(ctx, attempt.record, attempt.decision, now)
    if outcome.accepted:
        ctx.limits.give_back(taken)  # only failures use up the budget
        if factor == "attested":
            watch_accepted(ctx, client)  # an operator.alert when the tenant's attestations spike
    return outcome


def _throttle(
    ctx: ServiceContext, client: ClientRecord, attempt: _Attempt, factor: str
) -> tuple[ActionPolicy, list[Taken]]:
    """Rate limits, before any verifier work (RFC 4226 §7.3, NIST SP 800-63B-4 throttling).

    The attempt is counted as a failure here, in the same atomic step as the check, and given
    back once it passed: checking before and counting after let parallel guesses through
    together (10 allowed wrong PINs became 15-17 on PostgreSQL + Redis).
    """
    rules = ctx.policy.action(attempt.record.action)
    if factor == "attested":  # per tenant: one tenant's flood of tokens stays its own problem
        ctx.limits.hit("attestations", client.id)
    wanted = [("failed_proofs", (attempt.ref, factor)), ("subject_failures", (attempt.ref,))]
    return rules, ctx.limits.take_all(wanted, action_limits=rules.limits)


def _verify_counted(
    ctx: ServiceContext,
    taken: list[Taken],
    factor: str,
    proof: dict[str, Any],
    attempt: _Attempt,
    now: datetime,
) -> _Check:
    """``_verify``; an attempt that never got a verdict (a full argon2 gate, a fault) is given
    back. Once the verifier answered, a failure stays counted whatever happens next."""
    try:
        return _verify(ctx, factor, proof, attempt, now)
    except BaseException:
        ctx.limits.give_back(taken)
        raise


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
    record, subject, ref = attempt.record, attempt.subject, attempt.ref
    if check.accepted and check.consume(conn):
        proven = sorted(set(record.satisfied) | {factor})
        method = check.method or record.attested_method
        if recovery.delays(ctx, record) and completed_options(
            rules, attempt.options, proven, method
        ):
            # recover_delayed: the PIN starts the wait; the assertion comes after it (API.md).
            ready_at = recovery.start_wait(ctx, conn, client, record, subject, now)
            left = max(0, rules.failure_limit - record.failures)
            return ProofOutcome(
                record.id, "waiting", True, [], None, ready_at=ready_at, attempts_left=left
            )
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
        left = max(0, rules.failure_limit - record.failures)
        return ProofOutcome(record.id, status, True, satisfied, token, attempts_left=left)
    failures, status = store.count_failure(conn, record.id, rules.failure_limit, now)
    lock_subject_if_repeated(ctx, conn, subject, now)  # every failure counts, not only locks
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
    left = 0 if status == "locked" else max(0, rules.failure_limit - failures)
    return ProofOutcome(record.id, status, False, record.satisfied, attempts_left=left)


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
    method = check.method or record.attested_method
    rules = ctx.policy.action(record.action)
    done = completed_options(rules, options, satisfied, method)  # the method rule: pure domain
    complete = bool(done)
    if complete and all(len(option) == 1 for option in done) and acr != "aal1":
        acr = "aal1"  # NIST SP 800-63B-4: AAL2 needs two factors; a one-factor option is AAL1
    status = "satisfied" if complete else "pending"
    store.add_satisfied(conn, record.id, satisfied, status, now, method)
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
            attested_method=method,
        )
        if record.action == "password_reset":  # T1: starts the cooling-off of the chain
            subject_store.record_event(conn, subject.pk, "password_reset", now)
        if rules.recovers:  # API.md, Recovery: in this transaction
            recovery.apply(ctx, conn, client, record, subject, satisfied, now)
        if rules.sensitive:  # tell the user on another channel
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
        # The attestation's method, never the token (T4).
        detail={"verification_id": record.id, "factor": factor}
        | ({"method": check.method} if check.method else {}),
    )
    return token, status, satisfied


@dataclass
class _Check:
    """A verifier's verdict and how to record its single use atomically."""

    accepted: bool
    record_use: Any = None  # callable(conn) -> bool
    rehash: tuple[str, str] | None = None
    method: str | None = None  # an accepted attestation's method

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
            if sms.code_matches(key, record.id, proof["code"], digest, ctx.keys.profile):
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
    if factor == "recovery_code":
        return _recovery_code(ctx, proof["code"], candidates, now)
    if factor == "attested":
        return _attestation(ctx, proof["attestation"], attempt, now)
    # device
    bound = next((f for f in candidates if f.id == proof["factor_id"]), None)
    if bound is None:
        return _Check(False)
    pem = ctx.keys.decrypt(bound.secret_ct, f"factor:{bound.id}")
    for challenge_id, text in live:
        if device.verify_signature(pem, bound.alg or "", text, proof["signature"]):
            return _Check(True, lambda c, cid=challenge_id: replay.use_challenge(c, cid, now))
    return _Check(False)


def _recovery_code(
    ctx: ServiceContext, code: str, candidates: list[factor_store.FactorRecord], now: datetime
) -> _Check:
    """A recovery code of the subject's set: whether it is one (unused) is decided by the
    single-use UPDATE itself, in the proof's transaction (ASVS 6.5.1); a code that matches no
    unused row is a failed proof like any wrong code."""
    if not candidates or recovery_code.normalize(code) is None:
        return _Check(False)
    key, newest = ctx.keys.derived_key("recovery-code"), candidates[-1]
    digest = recovery_code.digest(key, newest.id, code)
    return _Check(True, lambda c: code_store.use(c, newest.id, digest, now))


def _attestation(ctx: ServiceContext, token: str, attempt: _Attempt, now: datetime) -> _Check:
    """A tenant's attestation, signed by one of its own keys and bound to this subject and
    verification; it counts only when its method completes some option (API.md, Recovery)."""
    record = attempt.record
    found = attested.verify(
        token,
        attempt.tenant_keys,
        client_id=record.client_id,
        audience=ctx.settings.issuer,
        subject=attempt.subject.subject_id,
        verification_id=record.id,
        now=now,
    )
    rules = ctx.policy.action(record.action)
    if found is None or not attestation_counts(rules, attempt.options, found.method):
        return _Check(False)
    return _Check(
        True,
        lambda c: attestation_store.use_jti(c, record.client_id, found.jti, now),
        method=found.method,
    )
