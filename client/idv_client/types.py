"""The contract's closed vocabularies as ``Literal`` types (API.md).

They document what idv sends today and let a type checker catch a misspelt status. idv may add
values (a new reason code, a new factor): the client passes unknown strings through unchanged,
so code that switches on them should keep a default branch.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

VerificationStatus: TypeAlias = Literal[
    "pending", "denied", "satisfied", "locked", "expired", "waiting", "cancelled"
]
"""``status`` of a verification; ``waiting``/``cancelled`` only for ``recover_delayed``."""

FactorType: TypeAlias = Literal[
    "sms", "totp", "knowledge", "device", "recovery_code", "attested", "passkey"
]
"""A factor of an option (``attested`` has no enrolled factor: the tenant vouches per proof)."""

FactorState: TypeAlias = Literal["pending", "active", "suspended", "revoked"]
"""``status`` of an enrolled factor (``suspended`` while a delayed recovery waits)."""

Reason: TypeAlias = Literal[
    "recent_sim_change",
    "sim_lost",
    "number_recycled",
    "cooling_off",
    "signal_unavailable",
    "subject_locked",
    "no_eligible_factors",
    "recovery_pending",
]
"""Machine-readable codes in ``reasons``: what was ruled out or why the action is denied."""

Acr: TypeAlias = Literal["aal1", "aal2", "aal3"]
"""Assertion ``acr`` values, ordered ``aal1`` < ``aal2`` < ``aal3`` (API.md, Assertions)."""

DeviceAlg: TypeAlias = Literal["ES256", "EdDSA", "SM2"]
"""Algorithms of an enrolled device key (SM2 under the ``gm`` profile)."""

CarrierEventType: TypeAlias = Literal["sim_swap", "sim_lost", "sim_unblocked", "number_recycled"]

AttestationMethod: TypeAlias = Literal["face", "eid", "id_document", "in_person"]

AssertionFailure: TypeAlias = Literal[
    "malformed",
    "bad_typ",
    "bad_algorithm",
    "unknown_kid",
    "bad_signature",
    "expired",
    "not_yet_valid",
    "missing_claim",
    "wrong_issuer",
    "wrong_audience",
    "wrong_subject",
    "wrong_action",
    "lifetime_too_long",
    "insufficient_acr",
    "too_old",
    "replayed",
]
"""``AssertionInvalid.reason``: why an assertion must not be trusted."""

ACR_ORDER: dict[str, int] = {"aal1": 1, "aal2": 2, "aal3": 3}
"""Rank of each known ``acr``; an unknown value has no rank and never satisfies a requirement."""
