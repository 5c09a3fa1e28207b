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
    completed_options,
)
from service.factors import ports, registry
from service.factors.ports import Check as _Check
from service.factors.spec import FactorSpec
from service.ratelimit import Taken
from service.storage import audit, lean, replay
from service.storage import factors as factor_store
from service.storage import subjects as subject_store
from service.storage import verifications as store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases import notify, recovery
from service.usecases.attested import watch_accepted
from service.usecases.clients import KnownKey
from service.usecases.factor_ports import Port
from service.usecases.subjects import subject_ref
from service.usecases.verifications import (
    check_lock,
    deny,
    lock_subject_if_repeated,
    pending,
    pending_for_key,
    pending_with_subject,
    remaining,
    still_open,
)


@dataclass
class _Attempt(ports.Attempt):
    """The hooks' ``Attempt`` with the records this use case reads and writes."""

    record: VerificationRecord
    subject: SubjectRecord
    # The client as the first statement read it now, when its API key came from memory.
    client: ClientRecord | None = None


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


def _load(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    verification_id: str,
    factor: str,
    now: datetime,
    *,
    for_update: bool,
    known: KnownKey | None = None,
) -> _Attempt:
    """Read the verification, its subject, the policy's current options and the candidates.

    ``known``: the caller's API key came from this process's memory; the first statement reads
    the client row too and the key must still be live, else 401 (usecases.clients.confirm)."""
    if known is None:
        record, subject = pending_with_subject(
            conn, client, verification_id, now, for_update=for_update
        )
    else:
        record, subject, client = pending_for_key(
            ctx, conn, client, known, verification_id, now, for_update=for_update
        )
    check_lock(subject, now)
    snap = subject_store.snapshot(conn, subject)
    active = [f for f in snap.factors if f.status == "active"]
    options, decision = still_open(ctx, record, subject, snap, now)
    if options and factor not in remaining(options, record.satisfied):
        raise FactorNotAllowed(f"{factor} is in no remaining option of this verification")
    spec = registry.FACTORS[factor]
    live = (
        replay.live_challenges(conn, record.id, factor, now) if spec.challenge is not None else []
    )
    return _Attempt(
        record,
        subject,
        options,
        decision,
        [f for f in active if f.type == factor],
        live,
        subject_ref(ctx, client.id, subject.subject_id),
        client,
    )


def prove(
    ctx: ServiceContext,
    client: ClientRecord,
    verification_id: str,
    proof: dict[str, Any],
    known: KnownKey | None = None,
) -> ProofOutcome:
    """Check one proof and move the verification on, atomically.

    TOTP, SMS and device proofs run in ONE transaction (the hot path: a handful of statements,
    one commit). A factor with a ``slow_hash`` verifier (the PIN) reads first, runs argon2
    outside any transaction, then records the outcome, so slow hashing never holds a lock.
    The factor's own ``verify`` hook judges the proof; the order around it is decided here.
    ``known``: see ``_load``.
    """
    spec = registry.spec(proof.get("factor"))
    if spec is None:
        raise InvalidRequest(f"factor must be one of {', '.join(registry.NAMES)}")
    factor = spec.name
    for name, given in spec.proof_fields.items():
        if not isinstance(proof.get(name), given.kind) or not proof[name]:
            raise InvalidRequest(f"a {factor} proof needs {name!r}")
    now = ctx.clock()
    outcome: ProofOutcome | None = None
    if spec.slow_hash:
        # A place in the argon2 gate first: when a PIN flood fills it, 429 before any work.
        with ctx.argon2_slots.admission():
            with ctx.engine.connect() as conn:
                attempt = _load(
                    ctx, conn, client, verification_id, factor, now, for_update=False, known=known
                )
                conn.commit()
            client = attempt.client or client  # as read now, when the key came from memory
            if attempt.options:
                rules, taken = _throttle(ctx, client, attempt, spec)
                # No transaction is open: the verifier gets a port without storage.
                check = _verify_counted(ctx, taken, spec, Port(ctx, client, now), proof, attempt)
                with ctx.engine.begin() as conn:
                    attempt.record = pending(conn, client, verification_id, now, for_update=True)
                    outcome = _settle(ctx, conn, client, attempt, factor, check, rules, now)
    else:
        with lean.transaction(ctx.engine) as conn:  # SQLite: without a Connection's set-up
            attempt = _load(
                ctx, conn, client, verification_id, factor, now, for_update=True, known=known
            )
            client = attempt.client or client  # as read now, when the key came from memory
            if attempt.options:
                rules, taken = _throttle(ctx, client, attempt, spec)
                port = Port(ctx, client, now, conn)
                check = _verify_counted(ctx, taken, spec, port, proof, attempt)
                outcome = _settle(ctx, conn, client, attempt, factor, check, rules, now)
    if outcome is None:  # a signal arrived since the start: the policy no longer allows it
        raise deny(ctx, attempt.record, attempt.decision, now)
    if outcome.accepted:
        ctx.limits.give_back(taken)  # only failures use up the budget
        if spec.tenant_keyed:
            watch_accepted(ctx, client)  # an operator.alert when the tenant's attestations spike
    return outcome


def _throttle(
    ctx: ServiceContext, client: ClientRecord, attempt: _Attempt, spec: FactorSpec
) -> tuple[ActionPolicy, list[Taken]]:
    """Rate limits, before any verifier work (RFC 4226 §7.3, NIST SP 800-63B-4 throttling).

    The attempt is counted as a failure here, in the same atomic step as the check, and given
    back once it passed: checking before and counting after let parallel guesses through
    together (10 allowed wrong PINs became 15-17 on PostgreSQL + Redis).
    """
    rules = ctx.policy.action(attempt.record.action)
    if spec.tenant_keyed:  # per tenant: one tenant's flood of tokens stays its own problem
        ctx.limits.hit("attestations", client.id)
    wanted = [("failed_proofs", (attempt.ref, spec.name)), ("subject_failures", (attempt.ref,))]
    return rules, ctx.limits.take_all(wanted, action_limits=rules.limits)


def _verify_counted(
    ctx: ServiceContext,
    taken: list[Taken],
    spec: FactorSpec,
    port: Port,
    proof: dict[str, Any],
    attempt: _Attempt,
) -> _Check:
    """The factor's ``verify``; an attempt that never got a verdict (a full argon2 gate, a
    fault) is given back. Once the verifier answered, a failure stays counted whatever happens
    next."""
    assert spec.verify is not None  # FactorSpec refuses a factor without one
    try:
        return spec.verify(port, proof, attempt)
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
    if check.accepted and check.consume(Port(ctx, client, now, conn)):
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
    if check.alarm is not None:  # e.g. a cloned passkey: the signature held, the counter did not
        audit.append(
            conn,
            event=check.alarm,
            outcome="refused",
            now=now,
            client_id=client.id,
            subject_ref=ref,
            detail={"verification_id": record.id, "factor": factor} | check.detail,
        )
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
    amr = tuple(record.amr) + check.amr
    store.add_satisfied(conn, record.id, satisfied, status, now, method, amr)
    token = None
    if complete:
        token = assertions.issue(
            ctx.keys,
            issuer=ctx.settings.issuer,
            audience=client.id,
            subject=subject.subject_id,
            action=record.action,
            acr=acr,
            amr=registry.amr_values(satisfied, amr),
            auth_time=now,
            now=now,
            ttl=ctx.settings.assertion_ttl,
            jti=record.id,
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
