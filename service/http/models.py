"""Request and response models of the HTTP contract (docs/API.md); the OpenAPI
document is generated from these."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from service.factors import registry
from service.factors.spec import FactorSpec, Input

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9._:@\-]{1,128}$"
FactorType = Literal[registry.NAMES]  # type: ignore[valid-type]


class Request(BaseModel):
    """Base of request bodies: strict types, unknown fields ignored."""

    model_config = ConfigDict(strict=True, extra="ignore")


class Error(BaseModel):
    """Every error body."""

    error: str = Field(examples=["invalid_request"])
    message: str


class ClientInfo(BaseModel):
    client_id: str
    name: str
    scopes: list[str]


class PutSubject(Request):
    phone: str = Field(max_length=32, examples=["+8613800138000"])
    assertion: str | None = Field(default=None, max_length=8192)


class Subject(BaseModel):
    subject_id: str
    phone: str | None = Field(description="masked, e.g. +86 138****8000")


class EnrollFactorBase(Request):
    type: Literal[registry.ENROLLABLE]  # type: ignore[valid-type]
    label: str | None = Field(
        default=None,
        max_length=200,
        description="TOTP: the account authenticator apps show (no ':'), e.g. 138****8000; "
        "without one, the masked phone",
    )
    assertion: str | None = Field(default=None, max_length=8192)


class EnrolledFactorBase(BaseModel):
    factor_id: str
    type: str
    status: str
    label: str | None = None


class FactorStatus(BaseModel):
    factor_id: str
    status: str


class AssertionBody(Request):
    assertion: str | None = Field(default=None, max_length=8192)


class FactorSummary(BaseModel):
    factor_id: str
    type: str
    status: str
    created_at: str
    label: str | None = None
    remaining: int | None = Field(default=None, description="recovery_code: unused codes left")


class FactorList(BaseModel):
    factors: list[FactorSummary]


class Context(BaseModel):
    model_config = ConfigDict(extra="allow")
    ip: str | None = Field(default=None, max_length=64)
    user_agent: str | None = Field(default=None, max_length=512)


class StartVerification(Request):
    subject_id: str = Field(pattern=SUBJECT_ID_PATTERN)
    action: str = Field(max_length=64)
    context: dict[str, Any] | None = None


class Verification(BaseModel):
    verification_id: str
    status: Literal["pending", "satisfied", "denied", "locked", "expired", "waiting", "cancelled"]
    action: str
    options: list[list[str]]
    reasons: list[str]
    expires_at: str
    satisfied: list[str] = []
    held_until: str | None = Field(
        default=None,
        description="when a hold (recent_sim_change, cooling_off, subject_locked) ends",
    )
    ready_at: str | None = Field(
        default=None,
        description="recover_delayed: when the wait ends; it completes until expires_at",
    )


class ChallengeRequest(Request):
    factor: str = Field(max_length=32)


class ChallengeBase(BaseModel):
    factor: str
    expires_at: str


class ProofBase(Request):
    factor: str = Field(max_length=32)


class ProofResult(BaseModel):
    verification_id: str
    status: str
    accepted: bool
    satisfied: list[str]
    assertion: str | None = None
    ready_at: str | None = Field(
        default=None, description="status waiting (recover_delayed): when the wait ends"
    )
    attempts_left: int = Field(
        ge=0, description="failed proofs that remain before the verification locks (0: locked)"
    )


class CarrierEvent(Request):
    phone: str = Field(max_length=32)
    type: Literal["sim_swap", "sim_lost", "sim_unblocked", "number_recycled"]
    occurred_at: str = Field(max_length=64)


class Accepted(BaseModel):
    status: str = "accepted"
    recorded: bool


class Health(BaseModel):
    status: str


class Jwks(BaseModel):
    keys: list[dict[str, Any]]


class OperatorFactor(BaseModel):
    factor_id: str
    type: str
    status: str
    created_at: str
    label: str | None = None
    remaining: int | None = None


class Decision(BaseModel):
    verification_id: str
    action: str
    status: str
    reasons: list[str]
    created_at: str


class OperatorView(BaseModel):
    subject_id: str
    phone: str | None
    locked_until: str | None
    factors: list[OperatorFactor]
    recent_decisions: list[Decision]


# -- the factor-specific fields, read from each factor's SPEC (issue 22) ------------------------


def _field(spec: Input) -> tuple[Any, Any]:
    """One optional pydantic field for a factor's ``Input``."""
    kind: Any = {str: str, dict: dict[str, Any], list: list[str]}[spec.kind]
    if spec.choices is not None:
        kind = Literal[spec.choices]
    constraints = {"max_length": spec.max_length} if spec.max_length is not None else {}
    return kind | None, Field(default=None, description=spec.description, **constraints)


def _merged(pick: Callable[[FactorSpec], Mapping[str, Input]]) -> dict[str, Any]:
    """Every factor's fields of one kind. A name two factors share (a TOTP code and a recovery
    code are both ``code``) is one field, as long as the longer of the two."""
    merged: dict[str, Input] = {}
    for spec in registry.FACTORS.values():
        for name, given in pick(spec).items():
            seen = merged.setdefault(name, given)
            longest = max(seen.max_length or 0, given.max_length or 0) or None
            merged[name] = replace(
                seen, max_length=longest, description=seen.description or given.description
            )
    return {name: _field(spec) for name, spec in merged.items()}


EnrollFactor = create_model(
    "EnrollFactor", __base__=EnrollFactorBase, **_merged(lambda f: f.enrol_fields)
)
EnrolledFactor = create_model(
    "EnrolledFactor", __base__=EnrolledFactorBase, **_merged(lambda f: f.enrolled_fields)
)
Challenge = create_model(
    "Challenge", __base__=ChallengeBase, **_merged(lambda f: f.challenge_fields)
)
ActivateFactor = create_model(
    "ActivateFactor", __base__=Request, **_merged(lambda f: f.activate_fields)
)
Proof = create_model("Proof", __base__=ProofBase, **_merged(lambda f: f.proof_fields))
