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

Challenge = Literal["sms", "nonce", "webauthn"]


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
    ``challenge``: None, ``"sms"`` (a code sent), ``"nonce"`` (a server nonce the device signs)
    or ``"webauthn"`` (PublicKeyCredentialRequestOptions).
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
