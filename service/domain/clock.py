"""Time helpers: everything is timezone-aware UTC and printed as RFC 3339 (API.md)."""

from __future__ import annotations

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


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp with an explicit offset; raise ValueError otherwise."""
    if not isinstance(text, str) or len(text) < 20 or text[10] not in "Tt":
        raise ValueError("not an RFC 3339 date-time")
    value = datetime.fromisoformat(text.replace("z", "Z"))
    if value.tzinfo is None:
        raise ValueError("an RFC 3339 date-time needs Z or an offset")
    return value.astimezone(UTC)
