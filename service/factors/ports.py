"""What a factor's behaviour hooks may ask of idv, and what they answer (issue 22: a factor is
one plug-in).

A factor's hooks (``FactorSpec.prepare``, ``activate``, ``issue_challenge``, ``verify``) get
their I/O through ``FactorPort``, which the use case passes in, bound to its transaction; they
never import Flask or SQL. The port is the one list of what factors may do to storage: a new
factor that needs none of it beyond its own encrypted row and the challenge rows touches no other
file. The verification use case (``service.usecases.proofs``) alone decides when a hook runs and
what happens around it (policy → limit → verifier → replay record → state → audit → assertion).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: the domain's policy, the tenant keys of attested proofs
    from service.domain.policy import Decision
    from service.domain.policy_file import Policy
    from service.factors.attested import TenantKey


class StoredFactor(Protocol):
    """A factor row as a hook sees it; ``secret_ct`` opens with ``FactorPort.open``."""

    @property
    def id(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def secret_ct(self) -> str: ...
    @property
    def alg(self) -> str | None: ...
    @property
    def sign_count(self) -> int | None: ...


class Subject(Protocol):
    @property
    def pk(self) -> int: ...
    @property
    def subject_id(self) -> str: ...
    @property
    def phone_hash(self) -> str | None: ...


class Verification(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def client_id(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def expires_at(self) -> datetime: ...


class Tenant(Protocol):
    """The client (tenant) the request is for: the relying party of its passkeys, the issuer
    its authenticator apps show."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def issuer(self) -> str | None: ...
    @property
    def webauthn_rp_id(self) -> str | None: ...
    @property
    def webauthn_origins(self) -> Sequence[str]: ...


class FactorPort(Protocol):
    """The operations a factor hook may run. Key-ring and policy reads work everywhere; the
    storage operations need the use case's transaction (they raise outside one)."""

    @property
    def now(self) -> datetime: ...  # the request's clock, read once
    @property
    def client(self) -> Tenant: ...

    # -- configuration and keys (no transaction needed) --------------------------------------
    @property
    def issuer(self) -> str: ...
    @property
    def policy(self) -> Policy: ...
    @property
    def key_profile(self) -> str: ...
    def open(self, factor: StoredFactor) -> str: ...
    def seal(self, factor_id: str, text: str) -> str: ...
    def derived_key(self, purpose: str) -> bytes: ...
    def phone(self, subject: Subject) -> str | None: ...
    # argon2 behind its gate, so PIN floods cannot starve other proofs (ASVS 6.3.8)
    def slow_hash(self, secret: str) -> str: ...
    def slow_verify(self, stored: str | None, secret: str) -> tuple[bool, str | None]: ...
    def send_sms(self, phone: str, code: str, text: str) -> None: ...

    # -- the transaction's storage ----------------------------------------------------------
    def factors(self, subject: Subject) -> list[StoredFactor]: ...
    def replace_secret(self, factor_id: str, secret_ct: str) -> None: ...
    def activate(self, factor_id: str) -> None: ...
    def activate_credential(self, factor_id: str, secret_ct: str, sign_count: int) -> bool: ...
    def add_challenge(
        self, verification_id: str, factor: str, digest: str, expires_at: datetime
    ) -> None: ...
    def use_challenge(self, challenge_id: int) -> bool: ...
    def use_totp_step(self, factor_id: str, step: int) -> bool: ...
    def advance_sign_count(self, factor_id: str, seen: int, new: int) -> bool: ...
    def webauthn_handle(self, subject: Subject, fresh: str) -> str: ...
    def add_code_set(self, factor_id: str, digests: list[str]) -> None: ...
    def use_code(self, factor_id: str, digest: str) -> bool: ...
    def tenant_keys(self) -> list[TenantKey]: ...
    def use_jti(self, jti: str) -> bool: ...
    def charge_sms(self, phone: str, subject: Subject, action: str) -> None: ...
    def audit(self, event: str, subject: Subject, detail: dict[str, Any]) -> None: ...


@dataclass
class Prepared:
    """A factor's enrolment, prepared before the transaction (argon2 runs outside one)."""

    secret: str  # stored encrypted in the factor row
    status: str = "active"
    alg: str | None = None
    # In the transaction, after the row is written (recovery codes' digests, a challenge).
    after_insert: Callable[[FactorPort, Subject], None] | None = None
    # After the commit: what the answer shows.
    shown: Callable[[FactorPort, Subject], dict[str, Any]] | None = None


@dataclass
class Issued:
    """A challenge issued in the transaction: the answer, and what runs after the commit (an
    SMS is sent then: no network call while the transaction holds locks)."""

    answer: dict[str, Any]
    after_commit: Callable[[], None] | None = None


@dataclass
class Attempt:
    """What a proof needs to know, read in one go by the verification use case."""

    record: Verification
    subject: Subject
    options: list[list[str]]
    decision: Decision
    candidates: list[StoredFactor]  # the subject's active factors of the proof's type
    live: list[tuple[int, str]]  # this verification's live challenges of that type
    ref: str  # the subject's pseudonym: rate-limit key and audit subject


@dataclass
class Check:
    """A verifier's verdict and how to record its single use atomically (``record_use`` runs
    in the proof's transaction, through the port bound to it)."""

    accepted: bool
    record_use: Callable[[FactorPort], Any] | None = None
    rehash: tuple[str, str] | None = None
    method: str | None = None  # an accepted attestation's method
    amr: tuple[str, ...] = ()  # RFC 8176 values this proof adds (a passkey's hwk/swk, user)
    alarm: str | None = None  # an audit event a refused proof raises besides proof.failed
    detail: dict[str, Any] = field(default_factory=dict)  # the alarm's audit detail

    def consume(self, port: FactorPort) -> bool:
        return True if self.record_use is None else bool(self.record_use(port))


def uses_challenge(challenge_id: int) -> Callable[[FactorPort], bool]:
    """The ``record_use`` of a proof that answered challenge row ``challenge_id``: the row is
    marked used by one conditional UPDATE, so it is accepted once."""
    return lambda port: port.use_challenge(challenge_id)


@dataclass(frozen=True)
class Guessing:
    """What one online guess can hit (``service.guessing``): ``space`` values to choose from,
    ``accepted`` at any moment, whether they ``change`` between guesses, and how many live codes
    one proof is checked against (``codes_per_proof``; a sent code's count is also bounded by
    the sends a day allows when ``sent``)."""

    space: int
    accepted: int
    changing: bool
    codes_per_proof: int = 1
    sent: bool = False


Prepare = Callable[[FactorPort, str, Mapping[str, Any]], Prepared]
Activate = Callable[[FactorPort, StoredFactor, Mapping[str, Any]], None]
IssueChallenge = Callable[[FactorPort, Verification, Subject], Issued]
Verify = Callable[[FactorPort, Mapping[str, Any], Attempt], Check]
