"""The one list of factor types idv knows (issue 22: a factor is one module).

Adding a factor is its module (with a ``SPEC``), a line here, its migration, its tests, the
default policy and the client. Everything else reads the tables below.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from types import MappingProxyType

from service.domain.policy_file import FactorCatalog
from service.factors import attested, device, knowledge, passkey, recovery_code, sms, totp
from service.factors.spec import FactorSpec

FACTORS: Mapping[str, FactorSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            sms.SPEC,
            totp.SPEC,
            device.SPEC,
            knowledge.SPEC,
            recovery_code.SPEC,
            attested.SPEC,
            passkey.SPEC,
        )
    }
)
NAMES = tuple(FACTORS)
# Handed to the policy parser at start: service.domain never imports service.factors.
CATALOG = FactorCatalog(
    names=frozenset(FACTORS),
    phone_bound=frozenset(n for n, s in FACTORS.items() if s.phone_bound),
    phone_number=frozenset(n for n, s in FACTORS.items() if s.phone_number),
    attesting=frozenset(n for n, s in FACTORS.items() if s.tenant_keyed),
    remembered=frozenset(n for n, s in FACTORS.items() if s.resettable),
)
CHALLENGE_FACTORS = tuple(n for n, s in FACTORS.items() if s.challenge is not None)
ENROLLABLE = tuple(n for n, s in FACTORS.items() if s.enrollable)
OFF_PHONE = frozenset(n for n, s in FACTORS.items() if s.off_phone)
# What a waiting delayed recovery suspends and a completed one revokes (API.md, Recovery): the
# factors that live on the phone. SMS is the phone number itself and is suspended separately.
PHONE_FACTOR_TYPES = frozenset(
    n for n, s in FACTORS.items() if s.phone_bound and not s.phone_number
)
# The roles of FactorSpec, by name, for the use cases that ask "which factors are ...".
PHONE_BOUND = frozenset(n for n, s in FACTORS.items() if s.phone_bound)
PHONE_NUMBER = frozenset(n for n, s in FACTORS.items() if s.phone_number)
TENANT_KEYED = frozenset(n for n, s in FACTORS.items() if s.tenant_keyed)
RESETTABLE = frozenset(n for n, s in FACTORS.items() if s.resettable)
SINGLE_USE_SETS = frozenset(n for n, s in FACTORS.items() if s.single_use_set)


def spec(name: object) -> FactorSpec | None:
    """The spec of ``name``, or None for a name idv does not know."""
    return FACTORS.get(name) if isinstance(name, str) else None


def amr_values(factors: Iterable[str], extra: Iterable[str] = ()) -> list[str]:
    """The RFC 8176 values the accepted ``factors`` contribute, with ``extra`` values that
    proofs reported (an attestation's ``face``), sorted and without duplicates."""
    values = {value for f in factors if f in FACTORS for value in FACTORS[f].amr}
    return sorted(values | set(extra))
