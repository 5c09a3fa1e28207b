"""What the rest of idv asks of a factor, declared in one object per factor module (issue 22).

Pure: no Flask, no SQL. Each module of ``service.factors`` ends with a ``SPEC``; the registry
(``service.factors.registry``) lists them, and the API models, the OpenAPI document, challenge and
proof dispatch, the policy's factor catalogue, the ``amr`` claim, the CLI and the client read it
from there instead of switching on the type name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from service.factors.ports import Activate, Guessing, IssueChallenge, Prepare, Verify

Challenge = Literal["code", "nonce", "webauthn"]


@dataclass(frozen=True)
class Input:
    """One JSON field of a request or answer: its type (``str``, ``dict`` or ``list``), the
    longest string accepted, the values allowed, and what it means (for the OpenAPI document)."""

    kind: type
    max_length: int | None = None
    choices: tuple[str, ...] | None = None
    description: str | None = None


def fields(**inputs: Input) -> Mapping[str, Input]:
    """A read-only field name → ``Input`` table."""
    return MappingProxyType(inputs)


@dataclass(frozen=True)
class FactorSpec:
    """One factor type, as idv's use cases, HTTP layer and policy see it.

    ``phone_bound``: it travels with an unlocked phone (THREATS.md T1), so a sensitive option is
    never made of it and other phone-bound factors alone, and recovery revokes it.
    ``challenge``: None, ``"code"`` (a code sent out of band), ``"nonce"`` (a server nonce the
    device signs) or ``"webauthn"`` (PublicKeyCredentialRequestOptions).
    ``proof_fields``/``enrol_fields``: the fields of its proof and of its enrolment request;
    ``enrolled_fields``/``challenge_fields``: what its enrolment and challenge answers add;
    ``activate_fields``: what activates a pending one (``POST .../activate``).
    ``amr``: the RFC 8176 values an accepted proof adds (a verifier may add more per proof).
    ``replay``: the single-use record an accepted proof writes in its transaction.
    ``stores``: what the factor's row holds (encrypted under the key ring).
    ``off_phone``: a factor that stays with the person; outside onboarding a subject's first one
    needs an ``enroll_factor`` step-up even when SMS is its only factor (API.md).
    ``replaces``: what a new enrolment voids of the subject's factors of this type: ``"any"``
    (one PIN, one set of recovery codes) or ``"pending"`` (set-ups never activated).
    ``enrollable``: whether ``POST .../factors`` creates one (``sms`` is the subject's phone and
    ``attested`` is the tenant's key, neither is enrolled).

    Behaviour hooks (``service.factors.ports``; the use cases call them and decide the order):
    ``verify`` judges a proof (never raises for a wrong one); ``prepare`` builds an enrolment
    (required when ``enrollable``); ``activate`` turns a pending factor active (``InvalidCode``
    when the answer does not verify); ``issue_challenge`` (required when ``challenge`` is set).
    ``guessing``: what one online guess can hit, for ``service.guessing`` (None: not guessable
    online, e.g. a signature).

    Roles, for the few semantics that truly differ (each names who holds the factor):
    ``slow_hash``: its verifier runs a memory-hard hash, outside any transaction and behind the
    argon2 gate (a PIN). ``tenant_keyed``: the tenant holds the keys; every subject of a tenant
    that registered one may use it, and its proofs are also limited per tenant (attested).
    ``phone_number``: the subject's phone number itself is the factor; a subject with a phone
    has it, a recovery suspends it rather than revoking it (SMS). ``resettable``: a chosen
    secret the person can forget; a ``reset_knowledge`` assertion enrols a new one, a first one
    on an established account starts the money cooling-off, and a recovery proven with it is
    recorded as such (the PIN). ``single_use_set``: a set of one-time codes; a proof may use
    the set's last code, which still counts for the assertion it earned (recovery codes).
    """

    name: str
    phone_bound: bool
    challenge: Challenge | None
    proof_fields: Mapping[str, Input]
    amr: tuple[str, ...]
    replay: str
    stores: str
    enrol_fields: Mapping[str, Input] = field(default_factory=fields)
    enrolled_fields: Mapping[str, Input] = field(default_factory=fields)
    activate_fields: Mapping[str, Input] = field(default_factory=fields)
    challenge_fields: Mapping[str, Input] = field(default_factory=fields)
    off_phone: bool = False
    enrollable: bool = True
    replaces: Literal["any", "pending"] | None = None
    verify: Verify | None = None
    prepare: Prepare | None = None
    activate: Activate | None = None
    issue_challenge: IssueChallenge | None = None
    guessing: Guessing | None = None
    slow_hash: bool = False
    tenant_keyed: bool = False
    phone_number: bool = False
    resettable: bool = False
    single_use_set: bool = False

    def __post_init__(self) -> None:
        # A factor without its hooks fails at import, not at a proof.
        if self.verify is None:
            raise ValueError(f"factor {self.name}: a verify hook is required")
        if self.enrollable and self.prepare is None:
            raise ValueError(f"factor {self.name}: an enrollable factor needs a prepare hook")
        if (self.challenge is None) != (self.issue_challenge is None):
            raise ValueError(
                f"factor {self.name}: a challenge needs issue_challenge, and only then"
            )
