"""How long each kind of record stays after it stops mattering (API.md "Retention", issue 23).

PIPL art. 19 keeps personal information no longer than its purpose needs and art. 47 deletes
it when the purpose is met; the Cybersecurity Law art. 21 keeps network logs at least six
months. ``IDV_RETENTION`` (``verifications=30d,webhooks=7d,audit=3y``) overrides the defaults
below, which README's "Data we keep" table states (and ``tests/unit/test_retention.py`` checks).

Pure: no Flask, no SQL. The purge (``service.usecases.purge``) turns a ``Retention`` into
cut-off times; the floors here keep a replay record alive as long as what it guards, whatever
the setting.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from service.domain.errors import ConfigError

KINDS = (
    "verifications",
    "challenges",
    "replay",
    "webhooks",
    "carrier_events",
    "idempotency",
    "audit",
)

# The defaults, and why (README "Data we keep" says the same):
DEFAULTS: Mapping[str, timedelta] = {
    # A finished or expired verification (and its reasons): a month to investigate a disputed
    # step-up or a fraud report, then gone (PIPL art. 19).
    "verifications": timedelta(days=30),
    # A challenge (a hashed SMS code or device nonce) is useless once expired; a day for
    # support to see that a code was sent.
    "challenges": timedelta(days=1),
    # Replay records (TOTP steps, used assertions, attestation jtis): a day after they stop
    # guarding anything, enough to answer "was this code used twice?".
    "replay": timedelta(days=1),
    # A delivered webhook payload names the subject: a week to answer "did you send it?".
    "webhooks": timedelta(days=7),
    # Carrier events: past the longest window of the default policy (30 d SMS block after a
    # SIM change); the latest event of each type per phone is kept anyway (the recycled-number
    # rule compares against it).
    "carrier_events": timedelta(days=90),
    # API.md "Conveniences": a repeat within 24 h gets the first answer.
    "idempotency": timedelta(hours=24),
    # Cybersecurity Law art. 21 asks for at least six months of network logs; three years
    # covers the limitation period for most civil claims (PRC Civil Code art. 188).
    "audit": timedelta(days=3 * 365),
}

# The Cybersecurity Law art. 21: network logs kept no less than six months.
AUDIT_MINIMUM = timedelta(days=180)

# How long each replay record guards something, counted from the time it was written
# (so a purge never frees a value that could still be accepted):
# RFC 6238 §5.2 with one step of drift either way: a step used at t is accepted until at most
# t + 2 steps of 30 s, plus a step of slack.
TOTP_ALIVE = timedelta(seconds=90)
# API.md Recovery: an attestation's iat is at most 300 s old and at most 60 s ahead, so its jti
# can come back until iat + 300 s <= used_at + 360 s.
ATTESTATION_JTI_ALIVE = timedelta(seconds=360)

_UNITS = {
    "s": timedelta(seconds=1),
    "m": timedelta(minutes=1),
    "h": timedelta(hours=1),
    "d": timedelta(days=1),
    "y": timedelta(days=365),
}
_DURATION = re.compile(r"([0-9]{1,9})([smhdy])")
_LONGEST = timedelta(days=100 * 365)


def parse_duration(text: str) -> timedelta:
    """``Ns``, ``Nm`` (minutes), ``Nh``, ``Nd`` or ``Ny`` (365 days), N a positive integer."""
    match = _DURATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration such as 30d, 12h, 3y")
    value = int(match.group(1)) * _UNITS[match.group(2)]
    if value <= timedelta(0):
        raise ValueError(f"{text!r} must be positive")
    if value > _LONGEST:
        raise ValueError(f"{text!r} is longer than 100 years")
    return value


def format_duration(value: timedelta) -> str:
    """The shortest exact ``N<unit>`` spelling of ``value`` (``3y``, ``24h``, ``90s``)."""
    for unit in ("y", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if value % size == timedelta(0):
            return f"{value // size}{unit}"
    return f"{int(value.total_seconds())}s"


@dataclass(frozen=True)
class Retention:
    """How long each kind stays after it stops mattering (``KINDS``)."""

    periods: Mapping[str, timedelta] = field(default_factory=lambda: dict(DEFAULTS))

    def __getitem__(self, kind: str) -> timedelta:
        return self.periods[kind]

    def describe(self) -> str:
        """``kind=duration`` pairs in ``KINDS`` order, as ``IDV_RETENTION`` spells them."""
        return ",".join(f"{k}={format_duration(self.periods[k])}" for k in KINDS)


def parse_retention(raw: str | None) -> Retention:
    """Read ``IDV_RETENTION``; an unknown kind, a repeated kind, a bad duration or ``audit``
    under ``AUDIT_MINIMUM`` raises ``ConfigError`` (the CLI prints one line and exits 2)."""
    periods = dict(DEFAULTS)
    seen: set[str] = set()
    for item in filter(None, (part.strip() for part in (raw or "").split(","))):
        kind, sep, value = (s.strip() for s in item.partition("="))
        if not sep:
            raise ConfigError("IDV_RETENTION", f"{item!r} is not KIND=DURATION")
        if kind not in KINDS:
            raise ConfigError(
                "IDV_RETENTION", f"unknown kind {kind!r}; kinds are {', '.join(KINDS)}"
            )
        if kind in seen:
            raise ConfigError("IDV_RETENTION", f"{kind} is given twice")
        seen.add(kind)
        try:
            periods[kind] = parse_duration(value)
        except ValueError as exc:
            raise ConfigError("IDV_RETENTION", f"{kind}: {exc}") from None
    if periods["audit"] < AUDIT_MINIMUM:
        raise ConfigError(
            "IDV_RETENTION",
            f"audit={format_duration(periods['audit'])} is under the 180 days the "
            "Cybersecurity Law (art. 21) requires for network logs",
        )
    return Retention(periods)
