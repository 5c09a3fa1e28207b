"""Request and response models of the HTTP contract (docs/API.md); the OpenAPI
document is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

SUBJECT_ID_PATTERN = r"^[A-Za-z0-9._:@\-]{1,128}$"
FactorType = Literal["sms", "totp", "device", "knowledge", "recovery_code", "attested"]


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


class EnrollFactor(Request):
    type: Literal["totp", "knowledge", "device", "recovery_code"]
    secret: str | None = Field(default=None, max_length=1024)
    public_key: str | None = Field(default=None, max_length=4096)
    alg: Literal["ES256", "EdDSA", "SM2"] | None = None
    label: str | None = Field(
        default=None,
        max_length=200,
        description="TOTP: the account authenticator apps show (no ':'), e.g. 138****8000; "
        "without one, the masked phone",
    )
    assertion: str | None = Field(default=None, max_length=8192)


class EnrolledFactor(BaseModel):
    factor_id: str
    type: str
    status: str
    label: str | None = None
    secret: str | None = Field(default=None, description="TOTP only, shown once")
    otpauth_uri: str | None = None
    qr_svg: str | None = None
    codes: list[str] | None = Field(
        default=None,
        description="recovery_code only: the 10 codes of the new set, shown once (keep them "
        "off the phone: print them or write them down)",
    )


class ActivateFactor(Request):
    code: str = Field(max_length=16)


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


class Challenge(BaseModel):
    factor: str
    expires_at: str
    sent_to: str | None = None
    challenge: str | None = None


class Proof(Request):
    factor: str = Field(max_length=32)
    # A TOTP or SMS code, or a recovery code typed with spaces and hyphens.
    code: str | None = Field(default=None, max_length=64)
    secret: str | None = Field(default=None, max_length=1024)
    factor_id: str | None = Field(default=None, max_length=64)
    signature: str | None = Field(default=None, max_length=1024)
    attestation: str | None = Field(
        default=None,
        max_length=8192,
        description="attested: the tenant's JWS (typ idv-attestation+jwt)",
    )


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
