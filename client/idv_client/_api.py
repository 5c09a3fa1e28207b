"""The contract's routes as ``Call`` descriptions (API.md): what both clients send and how each
answer is read. Neither sending nor retrying happens here (see ``_core``)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from idv_client._core import Call
from idv_client.models import (
    CarrierEventResult,
    Challenge,
    ClientInfo,
    EnrolledFactor,
    Factor,
    FactorStatus,
    ProofResult,
    Subject,
    Verification,
    _Model,
)
from idv_client.types import CarrierEventType, DeviceAlg

M = TypeVar("M", bound=_Model)

SUBJECT = "/v1/subjects/{subject_id}"
FACTORS = SUBJECT + "/factors"
FACTOR = FACTORS + "/{factor_id}"
VERIFICATION = "/v1/verifications/{verification_id}"


def _as(model: type[M]) -> Callable[[Any, int], M]:
    return lambda data, _status: model.from_json(data)


def _none(_data: Any, _status: int) -> None:
    return None


def _json(data: Any, _status: int) -> dict[str, Any]:
    return data if isinstance(data, dict) else {}


def _subject(data: Any, status: int) -> Subject:
    return Subject.from_json({**data, "created": status == 201})


def _factors(data: Any, _status: int) -> list[Factor]:
    return [Factor.from_json(f) for f in data.get("factors", [])]


def _with(body: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """``body`` plus the optional fields that were given (None and "" are left out)."""
    return {**body, **{k: v for k, v in optional.items() if v not in (None, "")}}


def rfc3339(value: datetime | str) -> str:
    """An aware ``datetime`` as RFC 3339 UTC (a string is passed through)."""
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def whoami() -> Call[ClientInfo]:
    return Call("GET", "/v1/client", _as(ClientInfo))


def put_subject(subject_id: str, phone: str, assertion: str | None) -> Call[Subject]:
    body = _with({"phone": phone}, assertion=assertion)
    return Call("PUT", SUBJECT, _subject, {"subject_id": subject_id}, body=body)


def delete_subject(subject_id: str, assertion: str | None) -> Call[None]:
    body = _with({}, assertion=assertion) or None
    return Call("DELETE", SUBJECT, _none, {"subject_id": subject_id}, body=body)


def export_subject(subject_id: str) -> Call[dict[str, Any]]:
    return Call("GET", SUBJECT + "/export", _json, {"subject_id": subject_id})


def admin_erase_subject(subject_id: str, operator: str, tenant: str | None) -> Call[None]:
    if not operator:
        raise ValueError("operator is required: the support desk's erasures are audited")
    return Call(
        "DELETE",
        "/v1/admin/subjects/{subject_id}",
        _none,
        {"subject_id": subject_id},
        query=_with({}, tenant=tenant),
        headers={"Idv-Operator": operator},
    )


def enroll(subject_id: str, body: dict[str, Any]) -> Call[EnrolledFactor]:
    return Call("POST", FACTORS, _as(EnrolledFactor), {"subject_id": subject_id}, body=body)


def enroll_totp(subject_id: str, label: str | None, assertion: str | None) -> Call[EnrolledFactor]:
    return enroll(subject_id, _with({"type": "totp"}, label=label, assertion=assertion))


def enroll_knowledge(subject_id: str, secret: str, assertion: str | None) -> Call[EnrolledFactor]:
    body = _with({"type": "knowledge", "secret": secret}, assertion=assertion)
    return enroll(subject_id, body)


def enroll_device(
    subject_id: str, public_key_pem: str, alg: DeviceAlg, label: str | None, assertion: str | None
) -> Call[EnrolledFactor]:
    body = {"type": "device", "public_key": public_key_pem, "alg": alg}
    return enroll(subject_id, _with(body, label=label, assertion=assertion))


def enroll_recovery_codes(subject_id: str, assertion: str | None) -> Call[EnrolledFactor]:
    return enroll(subject_id, _with({"type": "recovery_code"}, assertion=assertion))


def enroll_passkey(
    subject_id: str, label: str | None, assertion: str | None
) -> Call[EnrolledFactor]:
    return enroll(subject_id, _with({"type": "passkey"}, label=label, assertion=assertion))


def activate_factor(subject_id: str, factor_id: str, body: dict[str, Any]) -> Call[FactorStatus]:
    params = {"subject_id": subject_id, "factor_id": factor_id}
    return Call("POST", FACTOR + "/activate", _as(FactorStatus), params, body=body)


def list_factors(subject_id: str) -> Call[list[Factor]]:
    return Call("GET", FACTORS, _factors, {"subject_id": subject_id})


def remove_factor(subject_id: str, factor_id: str, assertion: str | None) -> Call[None]:
    params = {"subject_id": subject_id, "factor_id": factor_id}
    return Call("DELETE", FACTOR, _none, params, body=_with({}, assertion=assertion) or None)


def start_verification(
    subject_id: str, action: str, context: dict[str, Any] | None
) -> Call[Verification]:
    body = _with({"subject_id": subject_id, "action": action}, context=context)
    return Call("POST", "/v1/verifications", _as(Verification), body=body)


def get_verification(verification_id: str) -> Call[Verification]:
    return Call("GET", VERIFICATION, _as(Verification), {"verification_id": verification_id})


def send_challenge(verification_id: str, factor: str) -> Call[Challenge]:
    params = {"verification_id": verification_id}
    body = {"factor": factor}
    return Call("POST", VERIFICATION + "/challenges", _as(Challenge), params, body=body)


def prove(verification_id: str, factor: str, fields: dict[str, Any]) -> Call[ProofResult]:
    params = {"verification_id": verification_id}
    body = {"factor": factor, **fields}
    return Call("POST", VERIFICATION + "/proofs", _as(ProofResult), params, body=body)


def cancel_recovery(verification_id: str, assertion: str) -> Call[Verification]:
    def parse(data: Any, _status: int) -> Verification:
        # The answer may carry only the new status: the id is the one we asked about.
        return Verification.from_json({"verification_id": verification_id, **(data or {})})

    params = {"verification_id": verification_id}
    body = {"assertion": assertion}
    return Call("POST", VERIFICATION + "/cancel", parse, params, body=body)


def report_carrier_event(
    phone: str, type: CarrierEventType, occurred_at: datetime | str
) -> Call[CarrierEventResult]:
    body = {"phone": phone, "type": type, "occurred_at": rfc3339(occurred_at)}
    return Call("POST", "/v1/carrier-events", _as(CarrierEventResult), body=body)


def jwks() -> Call[dict[str, Any]]:
    return Call("GET", "/.well-known/jwks.json", _json)
