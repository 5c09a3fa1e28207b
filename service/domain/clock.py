"""Time helpers: everything is timezone-aware UTC and printed as RFC 3339 (API.md)."""

from __future__ import annotations

import re
from datetime import UTC, datetime


def utcnow() -> datetime:
    """The current time, UTC, to the microsecond."""
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """Attach UTC to a naive value read back from SQLite; convert aware ones."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    """``2026-11-23T10:00:00Z``: RFC 3339 in UTC, seconds precision."""
    return as_utc(value).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


# RFC 3339 §5.6 date-time: full-date "T" full-time, with Z or a numeric offset.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 date-time (§5.6) with Z or an offset; raise ValueError otherwise.

    Stricter than ``datetime.fromisoformat``, which also takes other ISO 8601 forms.
    """
    if not isinstance(text, str) or not _RFC3339.fullmatch(text):
        raise ValueError("not an RFC 3339 date-time")
    head, frac, zone = text[:19], "", text[19:]
    if zone.startswith("."):
        digits = re.match(r"\.(\d+)", zone)
        assert digits is not None
        frac, zone = "." + digits.group(1)[:6].ljust(6, "0"), zone[digits.end() :]
    zone = "+00:00" if zone in ("Z", "z") else zone
    try:
        return datetime.fromisoformat(head.replace("t", "T") + frac + zone).astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 is before datetime.min in UTC
        raise ValueError("date-time out of range") from None
