"""The policy file: its types and strict parsing of the TOML that defines them.

Pure: the only I/O is reading the file in ``load_policy``. Every mistake in a policy file is a
``PolicyError`` naming the file and the key, so a typo can never silently weaken a rule.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any

import limits

from service.domain.errors import PolicyError, UnknownAction

# How a tenant checked the person itself (an ``attested`` proof's ``method``): face against the
# ID photo, the national network identity credential, an ID document, a visit in person.
ATTESTED_METHODS = ("face", "eid", "id_document", "in_person")
# A stolen phone may hold photos of the ID and the national identity app: beside anything but
# the PIN only the person's own face or presence counts (API.md, Recovery).
DEFAULT_ATTESTED_METHODS = ("face", "in_person")
SENSITIVE_EVENTS = frozenset(
    {
        "password_reset",
        "factor_added",
        "factor_removed",
        "phone_changed",
        # The account lifecycle (API.md, Recovery): a completed recovery, a PIN replaced through
        # reset_knowledge, and a first PIN set after onboarding all restart money actions'
        # cooling-off, onboarding or not (T1 "sensitive events chain").
        "recovered",
        "knowledge_reset",
        "first_knowledge",
    }
)
# "sim_event" stands for the subject's latest SIM change (T1: "a SIM event is a signal").
COOLING_OFF_EVENTS = SENSITIVE_EVENTS | {"sim_event"}
SIGNAL_UNAVAILABLE_MODES = ("allow", "block_sms", "deny")
LIMIT_KEYS = frozenset({"failed_proofs", "sms_sends", "verifications", "ip"})

_ACTION_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_DURATION = re.compile(r"^([0-9]{1,9})([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# Ten years: longer than any sensible window, short enough that time arithmetic never overflows.
_MAX_WINDOW = timedelta(days=3650)

_TOP_KEYS = frozenset({"version", "defaults", "actions"})
_METHOD_KEYS = frozenset({"attested_methods", "attested_methods_with_knowledge"})
_DEFAULT_KEYS = frozenset({"lifetime", "failure_limit", "knowledge_min_length"}) | _METHOD_KEYS
_ACTION_KEYS = frozenset(
    {
        "description",
        "acr",
        "options",
        "sensitive",
        "lifetime",
        "failure_limit",
        "sms_blocked_after_sim_change",
        "hold_after_sim_change",
        "cooling_off",
        "cooling_off_after",
        "on_signal_unavailable",
        "limits",
        "when",
        "delay",
        "recovers",
        "suspended_factors_count",
        "device_bound_keys",
    }
    | _METHOD_KEYS
)
_WHEN_KEYS = frozenset(
    {
        "subject_lacks",
        "subject_has",
        "onboarding",
        "recovered_within",
        "recovered_with_knowledge",
        "add",
        "options",
    }
)

Options = tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Conditional:
    """A ``when`` block: while every condition it names holds, its options replace the action's
    base ones (or, with ``add = true``, are offered beside them).

    Conditions: ``subject_lacks`` / ``subject_has`` (a factor name), ``onboarding`` (the
    subject's first 24 h), ``recovered_within`` (a completed recovery that recent) and
    ``recovered_with_knowledge`` (whether that recovery proved the PIN). At least one is set.
    """

    options: Options
    subject_lacks: str | None = None
    subject_has: str | None = None
    onboarding: bool | None = None
    recovered_within: timedelta | None = None
    recovered_with_knowledge: bool | None = None
    add: bool = False

    def applies(
        self,
        factors: frozenset[str],
        *,
        onboarding: bool = False,
        recovered_ago: timedelta | None = None,
        recovered_with_knowledge: bool = False,
    ) -> bool:
        """Whether a subject with these active factors and this history meets every condition
        (``recovered_ago``: how long ago its latest recovery completed, None if never)."""
        if self.subject_lacks is not None and self.subject_lacks in factors:
            return False
        if self.subject_has is not None and self.subject_has not in factors:
            return False
        if self.onboarding is not None and self.onboarding != onboarding:
            return False
        if self.recovered_within is not None and (
            recovered_ago is None or recovered_ago >= self.recovered_within
        ):
            return False
        return self.recovered_with_knowledge is None or (
            recovered_ago is not None and self.recovered_with_knowledge == recovered_with_knowledge
        )

    def describe(self) -> str:
        """The conditions in words, for explanations."""
        parts = []
        for name in ("subject_lacks", "subject_has", "onboarding", "recovered_with_knowledge"):
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{name} = {str(value).lower() if isinstance(value, bool) else value}")
        if self.recovered_within is not None:
            parts.insert(0, f"recovered_within = {format_duration(self.recovered_within)}")
        return ", ".join(parts)


@dataclass(frozen=True)
class ActionPolicy:
    """What a subject must prove for one action, and which signals hold or narrow it."""

    name: str
    description: str
    acr: str
    options: Options
    conditional: tuple[Conditional, ...]
    lifetime: timedelta
    failure_limit: int
    sensitive: bool
    sms_blocked_after_sim_change: timedelta | None
    hold_after_sim_change: timedelta | None
    cooling_off: timedelta | None
    cooling_off_after: tuple[str, ...]
    on_signal_unavailable: str
    limits: Mapping[str, str]
    # API.md, Recovery: ``delay`` makes a completed option "waiting" until it has passed
    # (recover_delayed); ``recovers`` applies a recovery's effects when satisfied (revocation of
    # the phone-bound factors); ``suspended_factors_count`` lets factors suspended by a waiting
    # recovery count (cancel_recovery).
    delay: timedelta | None = None
    recovers: bool = False
    suspended_factors_count: bool = False
    # An AAL3-style action (NIST SP 800-63B-4: AAL3 needs a non-exportable key): a passkey
    # counts only when it is not backup-eligible (WebAuthn BE flag clear: device-bound, amr hwk).
    device_bound_keys: bool = False
    # Which attestation methods complete an option with ``attested``: without ``knowledge`` in
    # the option, and beside it (API.md, Recovery).
    attested_methods: tuple[str, ...] = DEFAULT_ATTESTED_METHODS
    attested_methods_with_knowledge: tuple[str, ...] = ATTESTED_METHODS
    # The factor roles these rules read, from the catalogue handed in at start (FactorCatalog).
    attesting: frozenset[str] = frozenset()
    remembered: frozenset[str] = frozenset()

    def counted_methods(self, option: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The attestation methods that count in ``option`` (which contains an attesting
        factor): more beside a remembered secret (the PIN) than without one."""
        if self.remembered.intersection(option):
            return self.attested_methods_with_knowledge
        return self.attested_methods

    def attests(self, option: tuple[str, ...] | list[str]) -> bool:
        """Whether ``option`` holds an attesting factor (a tenant's attestation)."""
        return bool(self.attesting.intersection(option))


@dataclass(frozen=True)
class FactorCatalog:
    """The factor types a policy may name, handed in at start by ``service.factors.registry``
    (the domain never imports the factors: that arrow would run back up).

    ``phone_bound``: the factors a thief holds once he holds the unlocked phone (T1 step 1):
    the SIM, the authenticator app, the device key and passkeys travel with it; the PIN, a
    printed sheet of recovery codes and the person's own face stay with the person.
    """

    names: frozenset[str]
    phone_bound: frozenset[str]
    # ``phone_number``: the subject's phone number itself (SMS), a restricted authenticator
    # (NIST SP 800-63B-4): never alone in a sensitive option, and carrier signals take it away.
    # ``attesting``: a tenant's attestation, which counts only where its method does
    # (``ActionPolicy.counted_methods``). ``remembered``: the secret the person chose (the PIN),
    # beside which more attestation methods count.
    phone_number: frozenset[str] = frozenset()
    attesting: frozenset[str] = frozenset()
    remembered: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Policy:
    """A validated policy file: every action by name, plus global settings."""

    source: str
    actions: Mapping[str, ActionPolicy]
    knowledge_min_length: int
    factors: FactorCatalog

    def action(self, name: str) -> ActionPolicy:
        """The policy of ``name``; ``UnknownAction`` if the file defines no such action."""
        try:
            return self.actions[name]
        except (KeyError, TypeError):
            raise UnknownAction(f"unknown action: {name}") from None


def parse_duration(text: str) -> timedelta:
    """Parse ``"30s"``, ``"10m"``, ``"24h"`` or ``"7d"``; ``ValueError`` for anything else."""
    match = _DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not a duration: {text!r} (use a whole number and s, m, h or d: '7d')")
    try:
        return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise ValueError(f"duration too long: {text!r}") from None


def format_duration(delta: timedelta) -> str:
    """The shortest ``parse_duration`` spelling of a whole number of seconds (``72h`` -> ``3d``)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def load_policy(path: str | os.PathLike[str], *, factors: FactorCatalog) -> Policy:
    """Read and validate a policy file; ``PolicyError(file, key, problem)`` when it is wrong."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(source, "<file>", f"cannot read: {exc}") from None
    return parse_policy(text, source, factors=factors)


def parse_policy(text: str, source: str = "<string>", *, factors: FactorCatalog) -> Policy:
    """Validate policy TOML given as text; ``source`` names it in errors and in ``Policy``;
    ``factors`` are the factor names it may use."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(source, "<toml>", str(exc)) from None
    return _Parser(source, factors).policy(data)


class _Parser:
    """Validation of one file; knows its name so every error can point at file and key."""

    def __init__(self, source: str, factors: FactorCatalog) -> None:
        self.source = source
        self.factors = factors

    def fail(self, key: str, problem: str) -> PolicyError:
        return PolicyError(self.source, key, problem)

    def table(self, value: Any, key: str, allowed: frozenset[str]) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        for name in value:
            if name not in allowed:
                where = f"{key}.{name}" if key else name
                raise self.fail(where, f"unknown key (allowed: {', '.join(sorted(allowed))})")
        return value

    def policy(self, data: dict[str, Any]) -> Policy:
        self.table(data, "", _TOP_KEYS)
        if "version" not in data:
            raise self.fail("version", "missing (this engine reads version = 1)")
        if type(data["version"]) is not int or data["version"] != 1:
            raise self.fail("version", f"unsupported version {data['version']!r} (expected 1)")
        defaults = self.table(data.get("defaults", {}), "defaults", _DEFAULT_KEYS)
        lifetime = self.lifetime(defaults, "defaults", timedelta(minutes=10))
        failure_limit = self.failure_limit(defaults, "defaults", 5)
        # NIST SP 800-63B-4: a chosen secret in a multi-factor flow; idv's floor is the 6-digit
        # payment PIN, safe only with the per-subject throttle (STANDARDS.md).
        knowledge_min_length = self.integer(defaults, "knowledge_min_length", "defaults", 6, 6, 128)
        methods = {
            name: self.methods(defaults, name, "defaults", default)
            for name, default in (
                ("attested_methods", DEFAULT_ATTESTED_METHODS),
                ("attested_methods_with_knowledge", ATTESTED_METHODS),
            )
        }
        actions_table = data.get("actions", {})
        if not isinstance(actions_table, dict):
            raise self.fail("actions", "must be a table of actions")
        if not actions_table:
            raise self.fail("actions", "the policy defines no actions")
        actions: dict[str, ActionPolicy] = {}
        for name, body in actions_table.items():
            if not _ACTION_NAME.match(name):
                raise self.fail(f"actions.{name}", "action names match ^[a-z][a-z0-9_]{0,63}$")
            actions[name] = self.action(name, body, lifetime, failure_limit, methods)
        return Policy(self.source, MappingProxyType(actions), knowledge_min_length, self.factors)

    def action(
        self,
        name: str,
        body: Any,
        lifetime: timedelta,
        failure_limit: int,
        methods: Mapping[str, tuple[str, ...]],
    ) -> ActionPolicy:
        key = f"actions.{name}"
        body = self.table(body, key, _ACTION_KEYS)
        description = body.get("description", "")
        if not isinstance(description, str):
            raise self.fail(f"{key}.description", "must be a string")
        acr = body.get("acr")
        if not isinstance(acr, str) or not acr.strip():
            raise self.fail(f"{key}.acr", "required, a non-empty string")
        sensitive = body.get("sensitive", False)
        if not isinstance(sensitive, bool):
            raise self.fail(f"{key}.sensitive", "must be true or false")
        if "options" not in body:
            raise self.fail(f"{key}.options", "required")
        options = self.options(body["options"], f"{key}.options")
        if sensitive:
            for option in options:
                if len(option) == 1 and option[0] in self.factors.phone_number:
                    # T1 step 2 and 5; NIST SP 800-63B-4: SMS is a restricted authenticator.
                    raise self.fail(
                        f"{key}.options", "SMS alone is never enough for a sensitive action"
                    )
        mode = body.get("on_signal_unavailable", "block_sms" if sensitive else "allow")
        if mode not in SIGNAL_UNAVAILABLE_MODES:
            raise self.fail(
                f"{key}.on_signal_unavailable",
                f"must be one of {', '.join(SIGNAL_UNAVAILABLE_MODES)}",
            )
        return ActionPolicy(
            name=name,
            description=description,
            acr=acr,
            options=options,
            conditional=self.conditionals(body.get("when", []), f"{key}.when"),
            lifetime=self.lifetime(body, key, lifetime),
            failure_limit=self.failure_limit(body, key, failure_limit),
            sensitive=sensitive,
            sms_blocked_after_sim_change=self.window(body, "sms_blocked_after_sim_change", key),
            hold_after_sim_change=self.window(body, "hold_after_sim_change", key),
            cooling_off=self.window(body, "cooling_off", key),
            cooling_off_after=self.events(body, key),
            on_signal_unavailable=mode,
            limits=self.limits(body.get("limits", {}), f"{key}.limits"),
            delay=self.window(body, "delay", key),
            recovers=self.flag(body, "recovers", key),
            suspended_factors_count=self.flag(body, "suspended_factors_count", key),
            device_bound_keys=self.flag(body, "device_bound_keys", key),
            attesting=self.factors.attesting,
            remembered=self.factors.remembered,
            attested_methods=self.methods(
                body, "attested_methods", key, methods["attested_methods"]
            ),
            attested_methods_with_knowledge=self.methods(
                body,
                "attested_methods_with_knowledge",
                key,
                methods["attested_methods_with_knowledge"],
            ),
        )

    def flag(self, table: dict[str, Any], name: str, key: str) -> bool:
        value = table.get(name, False)
        if not isinstance(value, bool):
            raise self.fail(f"{key}.{name}", "must be true or false")
        return value

    def options(self, value: Any, key: str) -> Options:
        if not isinstance(value, list) or not value:
            raise self.fail(key, "must be a non-empty list of factor lists, e.g. [['totp']]")
        seen: set[frozenset[str]] = set()
        result = []
        for index, option in enumerate(value):
            if not isinstance(option, list) or not option:
                raise self.fail(key, f"option {index} must be a non-empty list of factor names")
            for factor in option:
                if not isinstance(factor, str) or factor not in self.factors.names:
                    known = ", ".join(sorted(self.factors.names))
                    raise self.fail(key, f"unknown factor {factor!r} (known: {known})")
            if len(set(option)) != len(option):
                raise self.fail(key, f"option {index} names a factor twice")
            if frozenset(option) in seen:
                raise self.fail(key, f"option {index} repeats an earlier option")
            seen.add(frozenset(option))
            result.append(tuple(option))
        return tuple(result)

    def conditionals(self, value: Any, key: str) -> tuple[Conditional, ...]:
        if not isinstance(value, list):
            raise self.fail(key, "must be an array of tables ([[actions.NAME.when]])")
        result = []
        for index, block in enumerate(value):
            where = f"{key}[{index}]"
            block = self.table(block, where, _WHEN_KEYS)
            named = [n for n in ("subject_lacks", "subject_has") if n in block]
            if len(named) > 1:
                raise self.fail(where, "give at most one of subject_lacks or subject_has")
            conditions: dict[str, Any] = {}
            for name in named:
                factor = block[name]
                if not isinstance(factor, str) or factor not in self.factors.names:
                    raise self.fail(f"{where}.{name}", f"unknown factor {factor!r}")
                conditions[name] = factor
            for flag in ("onboarding", "recovered_with_knowledge"):
                if flag in block:
                    conditions[flag] = self.flag(block, flag, where)
            if "recovered_within" in block:
                conditions["recovered_within"] = self.window(block, "recovered_within", where)
            if not conditions:
                raise self.fail(
                    where,
                    "needs a condition: subject_lacks, subject_has, onboarding, "
                    "recovered_within or recovered_with_knowledge",
                )
            if "recovered_with_knowledge" in conditions and "recovered_within" not in conditions:
                raise self.fail(
                    f"{where}.recovered_with_knowledge", "given without recovered_within"
                )
            if "options" not in block:
                raise self.fail(f"{where}.options", "required")
            # A when block may offer SMS alone (bootstrapping a subject who has nothing else).
            options = self.options(block["options"], f"{where}.options")
            add = self.flag(block, "add", where)
            result.append(Conditional(options, add=add, **conditions))
        return tuple(result)

    def methods(
        self, table: dict[str, Any], name: str, key: str, default: tuple[str, ...]
    ) -> tuple[str, ...]:
        """A non-empty list of distinct attestation methods (``attested_methods``, ...)."""
        if name not in table:
            return default
        value, where = table[name], f"{key}.{name}"
        if not isinstance(value, list) or not value:
            raise self.fail(where, f"must be a non-empty list of {', '.join(ATTESTED_METHODS)}")
        for method in value:
            if not isinstance(method, str) or method not in ATTESTED_METHODS:
                raise self.fail(
                    where, f"unknown method {method!r} (known: {', '.join(ATTESTED_METHODS)})"
                )
        if len(set(value)) != len(value):
            raise self.fail(where, "names a method twice")
        return tuple(value)

    def window(self, table: dict[str, Any], name: str, key: str) -> timedelta | None:
        if name not in table:
            return None
        try:
            value = parse_duration(table[name])
        except ValueError as exc:
            raise self.fail(f"{key}.{name}", str(exc)) from None
        if not timedelta(0) < value <= _MAX_WINDOW:
            raise self.fail(f"{key}.{name}", "must be longer than 0s and at most 3650d")
        return value

    def lifetime(self, table: dict[str, Any], key: str, default: timedelta) -> timedelta:
        value = self.window(table, "lifetime", key)
        return default if value is None else value

    def integer(
        self, table: dict[str, Any], name: str, key: str, default: int, low: int, high: int
    ) -> int:
        value = table.get(name, default)
        if type(value) is not int or not low <= value <= high:
            raise self.fail(f"{key}.{name}", f"must be a whole number from {low} to {high}")
        return value

    def failure_limit(self, table: dict[str, Any], key: str, default: int) -> int:
        # NIST SP 800-63B-4: no more than 100 consecutive failed attempts per account.
        return self.integer(table, "failure_limit", key, default, 1, 100)

    def events(self, body: dict[str, Any], key: str) -> tuple[str, ...]:
        value = body.get("cooling_off_after", [])
        where = f"{key}.cooling_off_after"
        if not isinstance(value, list):
            raise self.fail(where, "must be a list of event names")
        for event in value:
            if not isinstance(event, str) or event not in COOLING_OFF_EVENTS:
                raise self.fail(
                    where,
                    f"unknown event {event!r} (known: {', '.join(sorted(COOLING_OFF_EVENTS))})",
                )
        if value and "cooling_off" not in body:
            raise self.fail(where, "given without cooling_off")
        if "cooling_off" in body and not value:
            raise self.fail(f"{key}.cooling_off", "given without cooling_off_after")
        return tuple(dict.fromkeys(value))

    def limits(self, value: Any, key: str) -> Mapping[str, str]:
        table = self.table(value, key, LIMIT_KEYS)
        for name, text in table.items():
            if not isinstance(text, str):
                raise self.fail(f"{key}.{name}", "must be a rate string like '10/15minutes'")
            try:
                limits.parse(text)
            except ValueError as exc:
                raise self.fail(f"{key}.{name}", str(exc)) from None
        return MappingProxyType(dict(table))
