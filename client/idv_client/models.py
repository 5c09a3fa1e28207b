"""Typed results: attributes carry the contract's field names (API.md).

Every field idv may not send yet (``attempts_left``, ``ready_at``, ``remaining``, ...) has a
default, so an older idv never makes the client crash; ``raw`` keeps the whole answer. Times are
timezone-aware ``datetime`` objects (idv sends RFC 3339 UTC). Secrets (a TOTP ``secret``, recovery
``codes``, an ``assertion``) never appear in a ``repr``, so logging a result is safe.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

from idv_client.types import FactorState, FactorType, Reason, VerificationStatus


def parse_time(value: object) -> datetime | None:
    """An RFC 3339 time from idv as an aware ``datetime``; None if absent or unreadable."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class _Model:
    """Build from a JSON object, ignoring fields this version does not know (the contract may grow;
    ``raw`` keeps the whole answer). Names in ``_times`` are parsed as RFC 3339."""

    raw: dict[str, Any]
    _times: ClassVar[frozenset[str]] = frozenset()

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Self:
        """The model of one JSON answer (unknown fields stay in ``raw`` only)."""
        known = {f.name for f in fields(cls)} - {"raw"}  # type: ignore[arg-type]
        values = {k: parse_time(v) if k in cls._times else v for k, v in data.items() if k in known}
        return cls(**values, raw=data)  # type: ignore[call-arg]


def _raw() -> Any:
    return field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True)
class ClientInfo(_Model):
    """``GET /v1/client``: ``client_id`` is the ``aud`` of this client's assertions."""

    client_id: str
    name: str = ""
    scopes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class Subject(_Model):
    """``PUT /v1/subjects/{id}``: ``phone`` is masked; ``created`` is True for 201."""

    subject_id: str
    phone: str | None = None
    created: bool = False
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class EnrolledFactor(_Model):
    """A new factor. Shown once and never in a ``repr``: ``secret``/``otpauth_uri``/``qr_svg``
    (TOTP), ``codes`` (recovery codes); ``options`` are a passkey's creation options."""

    factor_id: str
    type: FactorType
    status: FactorState = "active"
    label: str | None = None
    secret: str | None = field(default=None, repr=False)
    otpauth_uri: str | None = field(default=None, repr=False)
    qr_svg: str | None = field(default=None, repr=False)
    codes: list[str] | None = field(default=None, repr=False)
    options: dict[str, Any] | None = field(default=None, repr=False)
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class FactorStatus(_Model):
    """``POST .../activate``."""

    status: FactorState
    factor_id: str | None = None
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class Factor(_Model):
    """One entry of ``GET /v1/subjects/{id}/factors`` (never a secret); ``remaining`` is the
    number of unused recovery codes of a ``recovery_code`` set. ``created_at`` stays the RFC 3339
    string idv sent (as in 0.1; ``parse_time`` reads it)."""

    factor_id: str
    type: FactorType
    status: FactorState = "active"
    created_at: str = ""
    label: str | None = None
    remaining: int | None = None
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class Verification(_Model):
    """A step-up verification. ``options``: factor combinations that would satisfy it;
    ``reasons``: machine-readable codes for whatever was ruled out or denied; ``held_until``:
    when a hold (``recent_sim_change``, ``cooling_off``, ``subject_locked``) ends; ``ready_at``:
    when a ``waiting`` delayed recovery may be completed."""

    _times: ClassVar[frozenset[str]] = frozenset({"expires_at", "held_until", "ready_at"})

    verification_id: str
    status: VerificationStatus
    action: str = ""
    options: list[list[FactorType]] = field(default_factory=list)
    reasons: list[Reason] = field(default_factory=list)
    expires_at: datetime | None = None
    satisfied: list[FactorType] = field(default_factory=list)
    held_until: datetime | None = None
    ready_at: datetime | None = None
    raw: dict[str, Any] = _raw()

    @property
    def pending(self) -> bool:
        """Whether proofs are accepted now."""
        return self.status == "pending"

    @property
    def factors(self) -> list[FactorType]:
        """Every factor type that appears in some remaining option, in first-seen order."""
        seen: list[FactorType] = []
        for option in self.options:
            seen += [f for f in option if f not in seen]
        return seen


@dataclass(frozen=True)
class Challenge(_Model):
    """``sent_to`` (masked phone) for SMS; ``challenge`` (a string to sign) for a device;
    ``options`` (PublicKeyCredentialRequestOptions JSON) for a passkey."""

    _times: ClassVar[frozenset[str]] = frozenset({"expires_at"})

    factor: FactorType
    expires_at: datetime | None = None
    sent_to: str | None = None
    challenge: str | None = None
    options: dict[str, Any] | None = None
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class ProofResult(_Model):
    """``accepted``: whether this proof counted; ``assertion`` once ``status`` is ``satisfied``
    (never in a ``repr``); ``attempts_left``: failed proofs that remain before the verification
    locks (None from an idv that does not say); ``ready_at`` once a delayed recovery waits."""

    _times: ClassVar[frozenset[str]] = frozenset({"ready_at"})

    verification_id: str
    status: VerificationStatus
    accepted: bool = False
    satisfied: list[FactorType] = field(default_factory=list)
    assertion: str | None = field(default=None, repr=False)
    attempts_left: int | None = None
    ready_at: datetime | None = None
    raw: dict[str, Any] = _raw()


@dataclass(frozen=True)
class CarrierEventResult(_Model):
    """``POST /v1/carrier-events`` (202): ``recorded`` is False for a duplicate event."""

    status: str = "accepted"
    recorded: bool = True
    raw: dict[str, Any] = _raw()
