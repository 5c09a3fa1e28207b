"""The verifier of each factor, as the proof use case runs it (issue 22: over the interface).

Each glues a factor's pure check (``service.factors``) to its stored material and says how its
single use is recorded atomically in the proof's transaction (``Check.record_use``). The order
of the security checks around them is decided in ``service.usecases.proofs`` alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.policy import Decision, attestation_counts
from service.factors import attested, device, recovery_code, registry, sms, totp
from service.storage import attestations as attestation_store
from service.storage import factors as factor_store
from service.storage import recovery_codes as code_store
from service.storage import replay
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases import passkeys


@dataclass
class Attempt:
    """What a proof needs to know, read in one go."""

    record: VerificationRecord
    subject: SubjectRecord
    options: list[list[str]]
    decision: Decision
    candidates: list[factor_store.FactorRecord]
    live: list[tuple[int, str]]
    ref: str  # the subject's pseudonym: rate-limit key and audit subject
    tenant_keys: list[attested.TenantKey]  # an attested proof's: this tenant's keys only
    client: ClientRecord | None = None  # a passkey proof's relying party


@dataclass
class Check:
    """A verifier's verdict and how to record its single use atomically."""

    accepted: bool
    record_use: Callable[[Connection], Any] | None = None
    rehash: tuple[str, str] | None = None
    method: str | None = None  # an accepted attestation's method
    amr: tuple[str, ...] = ()  # RFC 8176 values this proof adds (a passkey's hwk/swk, user)
    alarm: str | None = None  # an audit event a refused proof raises besides proof.failed
    detail: dict[str, Any] = field(default_factory=dict)  # the alarm's audit detail

    def consume(self, conn: Connection) -> bool:
        return True if self.record_use is None else bool(self.record_use(conn))


def extra_amr(method: str | None) -> list[str]:
    """The ``amr`` values an accepted attestation's method adds (RFC 8176 §2 ``face``)."""
    return [attested.METHOD_AMR[method]] if method in attested.METHOD_AMR else []


def verify(
    ctx: ServiceContext, factor: str, proof: dict[str, Any], attempt: Attempt, now: datetime
) -> Check:
    """Run the factor's verifier; never raises for a wrong proof."""
    return _VERIFIERS[factor](ctx, proof, attempt, now)


def _totp(ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime) -> Check:
    """A current code of one of the subject's TOTP factors."""
    for f in attempt.candidates:
        secret = ctx.keys.decrypt(f.secret_ct, f"factor:{f.id}")
        step = totp.matching_step(secret, proof["code"], now.timestamp())
        if step is not None:
            # RFC 6238 §5.2: the unique (factor, step) row is the one-use guard.
            return Check(True, lambda c, fid=f.id, s=step: replay.use_totp_step(c, fid, s, now))
    return Check(False)


def _sms(ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime) -> Check:
    """The code of one of this verification's live SMS challenges."""
    key = ctx.keys.derived_key("sms-code")
    for challenge_id, digest in attempt.live:
        if sms.code_matches(key, attempt.record.id, proof["code"], digest, ctx.keys.profile):
            return Check(True, lambda c, cid=challenge_id: replay.use_challenge(c, cid, now))
    return Check(False)


def _knowledge(
    ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime
) -> Check:
    """The subject's PIN; argon2 runs even when it has none (ASVS 6.3.8: no timing tell)."""
    stored = attempt.candidates[0] if attempt.candidates else None
    stored_hash = ctx.keys.decrypt(stored.secret_ct, f"factor:{stored.id}") if stored else None
    # Bounded: PIN floods cannot starve other proofs.
    ok, new_hash = ctx.argon2_slots.run(ctx.hasher.verify, stored_hash, proof["secret"])
    if not ok or stored is None:
        return Check(False)
    rehash = (stored.id, ctx.keys.encrypt(new_hash, f"factor:{stored.id}")) if new_hash else None
    return Check(True, None, rehash)


def _device(ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime) -> Check:
    """A signature by the named device key over one of this verification's live challenges."""
    bound = next((f for f in attempt.candidates if f.id == proof["factor_id"]), None)
    if bound is None:
        return Check(False)
    pem = ctx.keys.decrypt(bound.secret_ct, f"factor:{bound.id}")
    for challenge_id, text in attempt.live:
        if device.verify_signature(pem, bound.alg or "", text, proof["signature"]):
            return Check(True, lambda c, cid=challenge_id: replay.use_challenge(c, cid, now))
    return Check(False)


def _passkey(ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime) -> Check:
    """An assertion by one of the subject's passkeys over a live challenge of this
    verification; single use of the challenge and the counter's compare-and-set together."""
    if attempt.client is None:
        return Check(False)
    verdict = passkeys.judge(
        ctx, attempt.client, attempt.record, proof["credential"], attempt.candidates, attempt.live
    )
    if verdict.cloned:  # WebAuthn §6.1.1: refused, and audited as a possible clone
        detail = {"factor_id": verdict.factor_id, "sign_count": verdict.new_count}
        return Check(False, alarm="passkey.clone_suspected", detail=detail)
    if not verdict.accepted or verdict.factor_id is None or verdict.challenge_id is None:
        return Check(False)
    fid, cid, seen, new = (
        verdict.factor_id,
        verdict.challenge_id,
        verdict.seen_count,
        verdict.new_count,
    )
    return Check(
        True,
        lambda c: (
            replay.use_challenge(c, cid, now) and factor_store.advance_sign_count(c, fid, seen, new)
        ),
        amr=verdict.amr,
    )


def _recovery_code(
    ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime
) -> Check:
    """A recovery code of the subject's set: whether it is one (unused) is decided by the
    single-use UPDATE itself, in the proof's transaction (ASVS 6.5.1); a code that matches no
    unused row is a failed proof like any wrong code."""
    code, candidates = proof["code"], attempt.candidates
    if not candidates or recovery_code.normalize(code) is None:
        return Check(False)
    key, newest = ctx.keys.derived_key("recovery-code"), candidates[-1]
    digest = recovery_code.digest(key, newest.id, code)
    return Check(True, lambda c: code_store.use(c, newest.id, digest, now))


def _attestation(
    ctx: ServiceContext, proof: dict[str, Any], attempt: Attempt, now: datetime
) -> Check:
    """A tenant's attestation, signed by one of its own keys and bound to this subject and
    verification; it counts only when its method completes some option (API.md, Recovery)."""
    record = attempt.record
    found = attested.verify(
        proof["attestation"],
        attempt.tenant_keys,
        client_id=record.client_id,
        audience=ctx.settings.issuer,
        subject=attempt.subject.subject_id,
        verification_id=record.id,
        now=now,
    )
    rules = ctx.policy.action(record.action)
    if found is None or not attestation_counts(rules, attempt.options, found.method):
        return Check(False)
    return Check(
        True,
        lambda c: attestation_store.use_jti(c, record.client_id, found.jti, now),
        method=found.method,
    )


# One verifier per factor of the registry (issue 22): the glue between a factor's pure check and
# its stored material and single-use record. A factor without one fails at import, not at a proof.
_VERIFIERS = {
    "totp": _totp,
    "sms": _sms,
    "knowledge": _knowledge,
    "device": _device,
    "recovery_code": _recovery_code,
    "attested": _attestation,
    "passkey": _passkey,
}
if set(_VERIFIERS) != set(registry.NAMES):
    raise RuntimeError("every registered factor needs a verifier in service.usecases.proofs")
