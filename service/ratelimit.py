"""Rate limits and lockout: idv's throttles on the ``limits`` library (moving window).

RFC 4226 §7.3 and NIST SP 800-63B ("no more than 100 consecutive failed attempts") require
failed attempts to be throttled; OWASP ASVS 6.6.3 requires codes to be rate limited. idv is much
stricter than NIST: see ``DEFAULTS`` and ``guessing_budget``.

Storage is ``memory://`` (one process; the embedded default and tests) or ``redis://`` (shared by
every instance: production with more than one process needs it, or each process keeps its own
counters and an attacker gets one budget per process). No Flask, no SQL.

Counters are moving windows kept by the storage of ``limits``. One counter exists per kind, key
and window length, *not* per limit amount: the strategy classes of ``limits`` put the amount into
the key, which would give an action with its own ``failed_proofs`` override a fresh budget of
guesses at the same secret. Guesses at one secret count together whichever action they come
through; only the threshold differs. Sharing one moving-window list between amounts is exact:
an entry is only added while fewer than ``amount`` entries lie in the window, so the trim that
follows (Redis ``LTRIM`` to ``amount``) only ever drops entries that have left the window.
Limits with different window lengths keep separate counters (a trim for a short window would
drop entries a longer one still counts).

``limits`` reads the wall clock (``time.time()``) itself, so this module does too; tests move time
with ``time_machine``.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from typing import Any, cast
from urllib.parse import urlsplit

import limits
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, MovingWindowSupport, Storage, storage_from_string

from service.domain.errors import RateLimited, ServiceUnavailable

log = logging.getLogger("idv.ratelimit")

DEFAULTS: Mapping[str, str] = {
    # Per subject+factor. NIST SP 800-63B caps at 100 consecutive failures; idv is far stricter.
    # Against a 6-digit TOTP this leaves an attacker 960 guesses a day: expected ~347 days to
    # succeed, P(success within 30 days) ~ 8.3% before the per-subject limit and lockout below
    # cut it further (exact figures: ``guessing_budget()``, asserted in tests).
    "failed_proofs": "10/15minutes",
    "sms_sends": "5/10minutes",  # per phone (keyed hash); ASVS 6.6.3
    "sms_sends_daily": "20/day",  # per phone (keyed hash)
    # Per tenant: generous (a ministry's backend serves millions of users); the per-subject,
    # per-phone and per-IP limits are what stop guessing.
    "verifications": "1200/minute",  # per client: verification creation
    "ip": "120/minute",  # per source IP (context.ip): creations (carrier-grade NAT shares IPs)
    "client": "6000/minute",  # per client, every request
    "subject_failures": "20/hour",  # per subject, failed proofs across factors (drives lockout)
    # T3: a support-desk operator reads at most this many subject records an hour ...
    "operator_reads": "60/hour",
    # ... and an alert fires (audit + webhook) as soon as one reads more than this many.
    "operator_alert": "20/hour",
    # Per tenant: attestation proofs tried (each costs a signature check) ...
    "attestations": "600/minute",
    # ... and an operator.alert on every accepted one past this many: a spike may be a stolen
    # tenant key or an insider vouching for people who never stood in front of the tenant (T3).
    "attestation_alert": "200/hour",
}

# Fail fast when Redis is away: a proof must never hang on the rate limiter (and must never pass
# it unchecked: storage errors become ServiceUnavailable, never "allowed").
REDIS_TIMEOUT_SECONDS = 0.5
REDIS_RETRIES = 1  # one retry covers a pooled connection that Redis closed; no backoff

_MEMORY_URL = "memory://"
_REDIS_SCHEMES = frozenset({"redis", "rediss", "redis+unix", "unix"})

# Lockout: "subject lockout with growing back-off".
LOCKOUT_THRESHOLD = 3
LOCKOUT_BASE = timedelta(minutes=15)
LOCKOUT_CAP = timedelta(hours=24)


@lru_cache(maxsize=256)
def parse_limit(text: str) -> limits.RateLimitItem:
    """One ``limits`` string (``"10/15minutes"``) as an item; ``ValueError`` for anything else.

    Stricter than ``limits.parse``, which silently keeps the first of ``"10/minute;5/second"``:
    exactly one limit, allowing at least one event.
    """
    if not isinstance(text, str):
        raise ValueError(f"not a rate limit string: {text!r}")
    items = limits.parse_many(text)  # ValueError when it does not parse
    if len(items) != 1:
        raise ValueError(f"exactly one rate limit expected, got {text!r}")
    if items[0].amount < 1:
        raise ValueError(f"a rate limit must allow at least one event: {text!r}")
    return items[0]


class RateLimits:
    """idv's rate limits by kind (the keys of ``DEFAULTS``), counted in a ``limits`` storage."""

    def __init__(
        self,
        storage_url: str | None = None,
        overrides: Mapping[str, str] | None = None,
        key_prefix: str = "idv",
    ) -> None:
        """Validate every limit (``ValueError`` naming the bad one) and set up the storage.

        ``storage_url``: ``None`` or ``memory://`` for this process only; ``redis://``,
        ``rediss://`` or ``unix://`` to share counters between instances. No connection is made
        here: an unreachable Redis shows in ``healthy()`` and as ``ServiceUnavailable`` on use.
        ``overrides`` replace ``DEFAULTS`` for their kinds.
        """
        self.limits: dict[str, str] = dict(DEFAULTS)
        for kind, text in (overrides or {}).items():
            if kind not in DEFAULTS:
                raise ValueError(
                    f"unknown rate limit kind {kind!r} (known: {', '.join(sorted(DEFAULTS))})"
                )
            self.limits[kind] = text
        for kind, text in self.limits.items():
            try:
                parse_limit(text)
            except ValueError as exc:
                raise ValueError(f"rate limit {kind}: {exc}") from None
        if not key_prefix or ":" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty and contain no ':': {key_prefix!r}")
        self.key_prefix = key_prefix
        self.storage_url = storage_url or _MEMORY_URL
        self._storage = _make_storage(self.storage_url)
        self._moving = cast(MovingWindowSupport, self._storage)

    @property
    def shared(self) -> bool:
        """Whether counters are shared between instances (Redis), not per process (memory)."""
        return urlsplit(self.storage_url).scheme != "memory"

    def limit_for(self, kind: str, action_limits: Mapping[str, str] | None = None) -> str:
        """The limit in force for ``kind``: the action's override, else the configured one."""
        if kind not in self.limits:
            raise ValueError(f"unknown rate limit kind {kind!r}")
        if action_limits and kind in action_limits:
            return action_limits[kind]
        return self.limits[kind]

    def check(
        self, kind: str, *key_parts: str, action_limits: Mapping[str, str] | None = None
    ) -> None:
        """Raise ``RateLimited`` if ``kind`` is exhausted for this key; consumes nothing."""
        item, key = self._resolve(kind, key_parts, action_limits)
        start, count = self._window(item, key)
        if count >= item.amount:
            raise self._limited(kind, item, start)

    def hit(
        self, kind: str, *key_parts: str, action_limits: Mapping[str, str] | None = None
    ) -> None:
        """Consume one event; ``RateLimited`` (and nothing consumed) if already exhausted."""
        item, key = self._resolve(kind, key_parts, action_limits)
        if not self._acquire(item, key):
            start, _ = self._window(item, key)
            raise self._limited(kind, item, start)

    def record(
        self, kind: str, *key_parts: str, action_limits: Mapping[str, str] | None = None
    ) -> None:
        """Consume one event without raising ``RateLimited`` (count a failure after the fact).

        A full window stays full (the moving window refuses the entry; it does not extend).
        Storage failures still raise ``ServiceUnavailable``: a failure that cannot be counted
        must not pass silently.
        """
        item, key = self._resolve(kind, key_parts, action_limits)
        self._acquire(item, key)

    def remaining(
        self, kind: str, *key_parts: str, action_limits: Mapping[str, str] | None = None
    ) -> int:
        """How many more events ``kind`` allows for this key right now (0 when exhausted)."""
        item, key = self._resolve(kind, key_parts, action_limits)
        _, count = self._window(item, key)
        return max(0, item.amount - count)

    def reset(
        self, kind: str, *key_parts: str, action_limits: Mapping[str, str] | None = None
    ) -> None:
        """Forget the counter of ``kind`` for this key (``idv subjects unlock``).

        Clears the counter of the configured limit's window and, when ``action_limits`` is given
        and overrides ``kind`` with another window length, that window's counter too.
        """
        windows = {parse_limit(self.limit_for(kind)).get_expiry()}
        if action_limits and kind in action_limits:
            windows.add(parse_limit(self.limit_for(kind, action_limits)).get_expiry())
        for window in windows:
            key = self._key(kind, key_parts, window)
            self._call(self._storage.clear, key)

    def healthy(self) -> bool:
        """Whether the storage answers (Redis ``PING`` within the timeout); memory always does."""
        try:
            return bool(self._storage.check())
        except Exception:
            return False

    # -- internals -------------------------------------------------------------------------

    def _resolve(
        self, kind: str, key_parts: tuple[str, ...], action_limits: Mapping[str, str] | None
    ) -> tuple[limits.RateLimitItem, str]:
        item = parse_limit(self.limit_for(kind, action_limits))
        return item, self._key(kind, key_parts, item.get_expiry())

    def _key(self, kind: str, key_parts: tuple[str, ...], window: int) -> str:
        """``idv:failed_proofs:<subject>:<factor>/900``: one counter per kind, key and window."""
        if not key_parts:
            raise ValueError(f"rate limit {kind}: at least one key part is required")
        for part in key_parts:
            if not isinstance(part, str) or not part:
                raise ValueError(f"rate limit {kind}: key parts are non-empty strings")
        # Escape the separators so ("a:b", "c") and ("a", "b:c") never share a counter
        # (IPv6 addresses contain ':').
        parts = ":".join(_escape(part) for part in key_parts)
        return f"{self.key_prefix}:{kind}:{parts}/{window}"

    def _acquire(self, item: limits.RateLimitItem, key: str) -> bool:
        return bool(self._call(self._moving.acquire_entry, key, item.amount, item.get_expiry()))

    def _window(self, item: limits.RateLimitItem, key: str) -> tuple[float, int]:
        """(time of the oldest event still counted, events in the window)."""
        start, count = self._call(
            self._moving.get_moving_window, key, item.amount, item.get_expiry()
        )
        return float(start), int(count)

    def _limited(self, kind: str, item: limits.RateLimitItem, start: float) -> RateLimited:
        """``RateLimited`` with Retry-After: seconds until the oldest counted event leaves."""
        window = item.get_expiry()
        # The first whole second strictly after the oldest event leaves: both storages still
        # count an event that is exactly ``window`` old, so ``ceil`` could answer too early.
        retry_after = math.floor(start + window - time.time()) + 1
        retry_after = min(max(retry_after, 1), window)
        return RateLimited(
            f"rate limit exceeded ({kind}: {item.amount} per {_window_text(window)}); "
            f"retry after {retry_after} s",
            retry_after=retry_after,
        )

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except StorageError as exc:
            # Details go to the log only: the message reaches API callers (a 503 body).
            log.error(
                "rate limit storage %s unavailable: %s",
                _redacted(self.storage_url),
                exc.storage_error,
            )
            raise ServiceUnavailable("the rate limit store is unavailable") from exc


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage with its clean-up pass at most once a second.

    ``MemoryStorage`` starts a new ``threading.Timer`` thread 10 ms after any hit when none is
    alive, and that thread walks every key: under load a new thread every 10 ms, each taking the
    GIL from the request threads (measured in ``bench/``). The clean-up only frees memory: the
    moving window itself counts entries by their timestamps, so running it once a second
    changes no answer. (Overrides the name-mangled private method the base class calls.)
    """

    CLEANUP_INTERVAL = 1.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._next_cleanup = 0.0
        super().__init__(uri, **options)

    def _MemoryStorage__schedule_expiry(self) -> None:
        now = time.monotonic()
        if now < self._next_cleanup or self.timer.is_alive():
            return
        self._next_cleanup = now + self.CLEANUP_INTERVAL
        self.timer = threading.Timer(0.0, self._MemoryStorage__expire_events)  # type: ignore[attr-defined]
        self.timer.daemon = True
        self.timer.start()


def _make_storage(url: str) -> Storage:
    scheme = urlsplit(url).scheme
    options: dict[str, Any] = {"wrap_exceptions": True}
    if scheme == "memory":
        return _MemoryStorage(url, **options)
    if scheme in _REDIS_SCHEMES:
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if scheme == "unix":
            url = "redis+unix" + url[len("unix") :]
        options.update(
            socket_timeout=REDIS_TIMEOUT_SECONDS,
            socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
            retry=Retry(NoBackoff(), REDIS_RETRIES),
        )
    else:
        raise ValueError(
            f"rate limit storage must be memory:// or redis:// (rediss://, unix://), "
            f"got {scheme + '://' if scheme else 'a URL without a scheme'}"
        )
    try:
        storage = storage_from_string(url, **options)
    except (ConfigurationError, ValueError) as exc:
        raise ValueError(f"rate limit storage {_redacted(url)}: {exc}") from None
    # Both memory and Redis support the moving window; this narrows the type for mypy.
    if not (isinstance(storage, Storage) and isinstance(storage, MovingWindowSupport)):
        raise ValueError(f"rate limit storage {_redacted(url)} has no moving window")
    return storage


def _escape(part: str) -> str:
    return part.replace("%", "%25").replace(":", "%3A").replace("/", "%2F")


def _redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return parts._replace(netloc=user + netloc).geturl()


def _window_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return unit if count == 1 else f"{count} {unit}s"
    return f"{seconds} s"


def lockout_for(failed_verifications: int) -> timedelta | None:
    """How long a subject stays locked after ``failed_verifications`` failed verifications.

    Growing back-off: no lockout below 3; at 3 it is 15 minutes, and it doubles with every
    further failed verification, capped at 24 hours::

        lockout(n) = min(15 min * 2 ** (n - 3), 24 h)     for n >= 3

        n = 3: 15 min   4: 30 min   5: 1 h   6: 2 h   7: 4 h   8: 8 h   9: 16 h   10+: 24 h

    (15 min * 2**7 = 32 h is the first value over the cap, so every n >= 10 gives 24 h.)
    Pure: the caller counts the subject's failed verifications and stores the lock.
    """
    if failed_verifications < LOCKOUT_THRESHOLD:
        return None
    # Capping the exponent keeps the arithmetic small for absurd counts.
    doublings = min(failed_verifications - LOCKOUT_THRESHOLD, 16)
    return min(LOCKOUT_BASE * 2**doublings, LOCKOUT_CAP)


def guessing_budget(
    limit: str = DEFAULTS["failed_proofs"],
    code_space: int = 10**6,
    drift_window: int = 3,
    days: int = 30,
    changing_code: bool = True,
) -> dict[str, float]:
    """What a throttle leaves an online guesser: the figures README quotes, computed exactly.

    With the default ``10/15minutes`` per subject+factor the attacker makes at most
    10 * (86400 / 900) = **960 guesses a day**. A 6-digit TOTP accepts ``drift_window`` = 3 of
    the 10**6 codes at any moment (current step ±1, RFC 6238 §5.2), so each guess succeeds with
    p = 3 / 10**6 = 3e-6. Codes change every 30 s, so guesses are independent trials:

    - expected guesses 1 / p = 333,333, i.e. 333,333 / 960 = **~347 days**;
    - P(success within 30 days) = 1 - (1 - p) ** (960 * 30) = 1 - (1 - 3e-6) ** 28,800
      = **~8.28%**.

    For a fixed secret (``changing_code=False``: a 6-digit PIN, ``drift_window=1``) the attacker
    never repeats a wrong guess, so P = min(1, guesses / code_space): 28,800 / 10**6 = 2.88% in
    30 days, and the expected count is (code_space + 1) / 2.

    These are upper bounds for one subject+factor: the per-subject limit
    (``subject_failures``, 20/hour across factors) and ``lockout_for`` cut them further.
    Returns ``guesses_per_day``, ``p_per_guess``, ``expected_guesses``, ``expected_days``,
    ``guesses_in_period``, ``p_success_in_period`` and ``days``.
    """
    item = parse_limit(limit)
    if code_space < 1 or not 1 <= drift_window <= code_space or days < 1:
        raise ValueError("need code_space >= drift_window >= 1 and days >= 1")
    guesses_per_day = item.amount * 86400 / item.get_expiry()
    guesses = guesses_per_day * days
    p = drift_window / code_space
    if changing_code:
        expected = 1 / p
        # 1 - (1 - p) ** n, computed without losing digits when p is tiny
        p_success = -math.expm1(guesses * math.log1p(-p)) if p < 1 else 1.0
    else:
        # Sampling without replacement among code_space / drift_window candidates.
        candidates = code_space / drift_window
        expected = (candidates + 1) / 2
        p_success = min(1.0, guesses / candidates)
    return {
        "guesses_per_day": guesses_per_day,
        "p_per_guess": p,
        "expected_guesses": expected,
        "expected_days": expected / guesses_per_day,
        "days": float(days),
        "guesses_in_period": guesses,
        "p_success_in_period": p_success,
    }
