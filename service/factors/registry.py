"""The one list of factor types idv knows (issue 22: a factor is one module).

Adding a factor is its module (with a ``SPEC``), a line here, its migration, its tests, the
default policy and the client. Everything else reads the tables below.

``IDV_EXTRA_FACTORS`` (comma-separated module paths, each ending with a ``SPEC``) adds a
deployment's own factors without editing this file, at start, like the policy file: the process
that reads it imports those modules, so it is an operator's setting and trusted as much as the
code. An extra factor can never replace one of idv's (a name they share stops idv at start), and
the policy must name it before any action offers it (docs/factors.md).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable, Mapping
from types import MappingProxyType

from service.domain.errors import ConfigError
from service.domain.policy_file import FactorCatalog
from service.factors import attested, device, knowledge, passkey, recovery_code, sms, totp
from service.factors.spec import FactorSpec

BUILT_IN = (
    sms.SPEC,
    totp.SPEC,
    device.SPEC,
    knowledge.SPEC,
    recovery_code.SPEC,
    attested.SPEC,
    passkey.SPEC,
)


def _extra(setting: str) -> tuple[FactorSpec, ...]:
    """The SPECs of the modules ``IDV_EXTRA_FACTORS`` names; ``ConfigError`` naming the
    variable when one is not a factor module."""
    specs = []
    for path in filter(None, (part.strip() for part in setting.split(","))):
        try:
            found = getattr(importlib.import_module(path), "SPEC", None)
        except ImportError as exc:
            raise ConfigError("IDV_EXTRA_FACTORS", f"cannot import {path!r}: {exc}") from None
        if not isinstance(found, FactorSpec):
            raise ConfigError("IDV_EXTRA_FACTORS", f"{path!r} has no FactorSpec named SPEC")
        specs.append(found)
    return tuple(specs)


def _by_name(specs: Iterable[FactorSpec]) -> Mapping[str, FactorSpec]:
    table: dict[str, FactorSpec] = {}
    for spec in specs:
        if spec.name in table:  # an extra factor never stands in for sms, knowledge, ...
            raise ConfigError("IDV_EXTRA_FACTORS", f"factor {spec.name!r} is already defined")
        table[spec.name] = spec
    return MappingProxyType(table)


FACTORS: Mapping[str, FactorSpec] = _by_name(
    BUILT_IN + _extra(os.environ.get("IDV_EXTRA_FACTORS", ""))
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
