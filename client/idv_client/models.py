"""Typed results: attributes carry the contract's field names (API.md)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Self


class _Model:
    """Build from a JSON object, ignoring fields this version does not know (the contract may grow;
    ``raw`` keeps the whole answer)."""

    raw: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        known = {f.name for f in fields(cls)} - {"raw"}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in data.items() if k in known}, raw=data)  # type: ignore[call-arg]


@dataclass(frozen=True)
class ClientInfo(_Model):
    """``GET /v1/client``: ``client_id`` is the ``aud`` of this client's assertions."""

    client_id: str
    name: str
    scopes: list[str]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Subject(_Model):
    """``PUT /v1/subjects/{id}``: ``phone`` is masked; ``created`` is True for 201."""

    subject_id: str
    phone: str | None
    created: bool = False
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class EnrolledFactor(_Model):
    """A new factor; ``secret``, ``otpauth_uri`` and ``qr_svg`` only for TOTP, shown once."""

    factor_id: str
    type: str
    status: str
    label: str | None = None
    secret: str | None = None
    otpauth_uri: str | None = None
    qr_svg: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class FactorStatus(_Model):
    """``POST .../activate``."""

    status: str
    factor_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Factor(_Model):
    """One entry of ``GET /v1/subjects/{id}/factors`` (never a secret)."""

    factor_id: str
    type: str
    status: str
    created_at: str
    label: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class Verification(_Model):
    """A step-up verification. ``options`` lists factor combinations that would satisfy it;
    ``reasons`` the machine-readable codes for whatever was ruled out or denied; ``held_until``
    (RFC 3339, or None) when a hold (``recent_sim_change``, ``cooling_off``,
    ``subject_locked``) ends."""

    verification_id: str
    status: str
    action: str
    options: list[list[str]]
    reasons: list[str]
    expires_at: str
    satisfied: list[str] = field(default_factory=list)
    held_until: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    @property
    def factors(self) -> list[str]:
        """Every factor type that appears in some remaining option, in first-seen order."""
        seen: list[str] = []
        for option in self.options:
            seen += [f for f in option if f not in seen]
        return seen


@dataclass(frozen=True)
class Challenge(_Model):
    """``sent_to`` (masked phone) for SMS; ``challenge`` (a string to sign) for a device."""

    factor: str
    expires_at: str
    sent_to: str | None = None
    challenge: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ProofResult(_Model):
    """``accepted``: whether this proof counted; ``assertion`` once ``status`` is satisfied."""

    verification_id: str
    status: str
    accepted: bool
    satisfied: list[str]
    assertion: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class CarrierEventResult(_Model):
    """``POST /v1/carrier-events`` (202): ``recorded`` is False for a duplicate event."""

    status: str = "accepted"
    recorded: bool = True
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
