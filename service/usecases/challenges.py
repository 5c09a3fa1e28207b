"""Challenges of a pending verification: an SMS code sent, or a device nonce to sign."""

from __future__ import annotations

from typing import Any

from service.context import ServiceContext
from service.domain.errors import FactorNotAllowed, InvalidRequest
from service.factors import registry
from service.storage import subjects as subject_store
from service.storage.clients import ClientRecord
from service.usecases.factor_ports import Port
from service.usecases.verifications import (
    check_lock,
    deny,
    pending_with_subject,
    remaining,
    still_open,
)

CHALLENGE_FACTORS = registry.CHALLENGE_FACTORS


def challenge(
    ctx: ServiceContext, client: ClientRecord, verification_id: str, factor: str
) -> dict[str, Any]:
    """Issue the factor's challenge for a pending verification (its ``issue_challenge`` hook:
    an SMS code, a device nonce, passkey request options), once the policy still offers it."""
    spec = registry.spec(factor)
    if spec is None or spec.issue_challenge is None:
        raise InvalidRequest(f"only {', '.join(CHALLENGE_FACTORS)} have challenges")
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        record, subject = pending_with_subject(conn, client, verification_id, now)
        check_lock(subject, now)
        snap = subject_store.snapshot(conn, subject)
        options, decision = still_open(ctx, record, subject, snap, now)
        if options:
            if factor not in remaining(options, record.satisfied):
                raise FactorNotAllowed(f"{factor} is in no remaining option of this verification")
            issued = spec.issue_challenge(Port(ctx, client, now, conn), record, subject)
    if not options:
        raise deny(ctx, record, decision, now)
    if issued.after_commit is not None:  # e.g. the SMS: no network call while locks are held
        issued.after_commit()
    return issued.answer
