"""``/v1/subjects/{id}/factors``, ``/v1/verifications`` and ``/v1/carrier-events``: thin routes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from service.domain.clock import rfc3339
from service.http.auth import caller, ctx, known_caller
from service.http.body import parse
from service.http.models import (
    ActivateFactor,
    AssertionBody,
    CarrierEvent,
    ChallengeRequest,
    EnrollFactor,
    Proof,
    StartVerification,
)
from service.usecases import carrier, challenges, factors, proofs, recovery, verifications

bp = Blueprint("verify", __name__)


def _without_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


@bp.post("/v1/subjects/<subject_id>/factors")
def enroll(subject_id: str) -> tuple[Response, int]:
    """Enrol a factor."""
    client = caller("verify")
    body = parse(EnrollFactor)
    result = factors.enroll(ctx(), client, subject_id, body.model_dump())
    answer = {"factor_id": result.factor_id, "type": result.type, "status": result.status}
    answer |= {"label": result.label} | result.shown
    return jsonify(_without_none(answer)), 201


@bp.post("/v1/subjects/<subject_id>/factors/<factor_id>/activate")
def activate(subject_id: str, factor_id: str) -> Response:
    """Activate a pending factor (a TOTP with a code, a passkey with its credential)."""
    client = caller("verify")
    body = parse(ActivateFactor)
    status = factors.activate(ctx(), client, subject_id, factor_id, body.model_dump())
    return jsonify({"factor_id": factor_id, "status": status})


@bp.get("/v1/subjects/<subject_id>/factors")
def list_factors(subject_id: str) -> Response:
    """List a subject's factors (never a secret)."""
    client = caller("verify")
    return jsonify({"factors": factors.listing(ctx(), client, subject_id)})


@bp.delete("/v1/subjects/<subject_id>/factors/<factor_id>")
def remove_factor(subject_id: str, factor_id: str) -> tuple[str, int]:
    """Remove a factor; the assertion comes in the JSON body."""
    client = caller("verify")
    body = parse(AssertionBody, optional=True)
    factors.remove(ctx(), client, subject_id, factor_id, body.assertion)
    return "", 204


@bp.post("/v1/verifications")
def start() -> tuple[Response, int]:
    """Start a step-up verification for an action (the route's ordinary requests are answered
    by ``service.http.fast``, which runs the same key check, body rules and use case)."""
    client, known = known_caller("verify")
    body = parse(StartVerification)
    view = verifications.start(ctx(), client, body.subject_id, body.action, body.context, known)
    return jsonify(view.answer()), 201


@bp.get("/v1/verifications/<verification_id>")
def get(verification_id: str) -> Response:
    """A verification's state."""
    client = caller("verify")
    return jsonify(verifications.get(ctx(), client, verification_id).answer())


@bp.post("/v1/verifications/<verification_id>/challenges")
def challenge(verification_id: str) -> Response:
    """Send an SMS code, or issue a device challenge or passkey request options."""
    client = caller("verify")
    body = parse(ChallengeRequest)
    return jsonify(challenges.challenge(ctx(), client, verification_id, body.factor))


@bp.post("/v1/verifications/<verification_id>/proofs")
def prove(verification_id: str) -> Response:
    """Submit a proof."""
    client, known = known_caller("verify")
    body = parse(Proof)
    outcome = proofs.prove(ctx(), client, verification_id, body.model_dump(), known)
    return jsonify(proof_answer(outcome))


def proof_answer(outcome: proofs.ProofOutcome) -> dict:
    """The proof route's JSON answer (also the WSGI fast path's, ``service.http.fast``)."""
    return {
        "verification_id": outcome.verification_id,
        "status": outcome.status,
        "accepted": outcome.accepted,
        "satisfied": outcome.satisfied,
        "assertion": outcome.assertion,
        **({"ready_at": rfc3339(outcome.ready_at)} if outcome.ready_at else {}),
        "attempts_left": outcome.attempts_left,
    }


@bp.post("/v1/verifications/<verification_id>/cancel")
def cancel(verification_id: str) -> Response:
    """Cancel a waiting delayed recovery with a ``cancel_recovery`` assertion."""
    client = caller("verify")
    body = parse(AssertionBody, optional=True)
    record = recovery.cancel(ctx(), client, verification_id, body.assertion)
    return jsonify(verifications.VerificationView.of(record).answer())


@bp.post("/v1/carrier-events")
def carrier_event() -> tuple[Response, int]:
    """Record a carrier signal (scope ``carrier``)."""
    client = caller("carrier")
    body = parse(CarrierEvent)
    recorded = carrier.record_event(ctx(), client, body.phone, body.type, body.occurred_at)
    return jsonify({"status": "accepted", "recorded": recorded}), 202
