"""Rate limits and lockout: idv's throttles on the ``limits`` library (moving window).

RFC 4226 §7.3 and NIST SP 800-63B ("no more than 100 consecutive failed attempts") require
failed attempts to be throttled; OWASP ASVS 6.6.3 requires codes to be rate limited. idv is much
stricter than NIST: see ``DEFAULTS`` and ``service.guessing``.

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

import bisect
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

import limits
from limits.errors import ConfigurationError, StorageError
from limits.storage import MemoryStorage, MovingWindowSupport, Storage, storage_from_string
from limits.storage.memory import Entry

from service.domain.errors import RateLimited, ServiceUnavailable

log = logging.getLogger("idv.ratelimit")

DEFAULTS: Mapping[str, str] = {
    # Per subject+factor. NIST SP 800-63B-4 caps at 100 consecutive failures; idv is far
    # stricter: with ``subject_failures`` and the subject lockout (``service.guessing``) an
    # attacker gets 45 guesses a day (``guessing_budget()``, asserted against README in tests).
    "failed_proofs": "10/15minutes",
    "sms_sends": "5/10minutes",  # per phone (keyed hash); ASVS 6.6.3
    "sms_sends_daily": "20/day",  # per phone (keyed hash)
    # Per tenant: generous (a ministry's backend serves millions of users); the per-subject,
    # per-phone and per-IP limits are what stop guessing.
    "verifications": "1200/minute",  # per client: verification creation
    "ip": "120/minute",  # per source IP (context.ip): creations (carrier-grade NAT shares IPs)
    "client": "6000/minute",  # per client, every request
    "subject_failures": "20/hour",  # per subject, failed proofs across factors (drives lockout)
    # SMS (issue 20 items 3, 4): ``sms_sends``/``sms_sends_daily`` above are per tenant and
    # phone; these are per phone across tenants, a toll-fraud ceiling no tenant reaches alone
    # (checked at start: it must exceed what one tenant's own budget lets through) ...
    "sms_phone": "15/10minutes",
    "sms_phone_daily": "60/day",
    # ... per tenant, against SMS pumping (a real tenant's peak fits: raise them for a big one) ...
    "sms_client": "120/minute",
    "sms_client_daily": "20000/day",
    # ... per tenant and calling code, for a tenant with no ``sms-regions`` set ...
    "sms_calling_code": "30/minute",
    # ... and an ``operator.alert`` when a tenant's sends in this window pass this many and
    # three times its average over the previous hour.
    "sms_surge": "20/minute",
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
        self.check_sms_share()
        if not key_prefix or ":" in key_prefix:
            raise ValueError(f"key_prefix must be non-empty and contain no ':': {key_prefix!r}")
        self.key_prefix = key_prefix
        self.storage_url = storage_url or _MEMORY_URL
        self._storage = _make_storage(self.storage_url)
        self._moving = cast(MovingWindowSupport, self._storage)
        self._tokens: _Tokens = (
            self._storage
            if isinstance(self._storage, _MemoryStorage)
            else _RedisTokens(self._storage)
        )

    def check_sms_share(self, action_limits: Mapping[str, str] | None = None) -> None:
        """``ValueError`` unless a per-phone SMS ceiling exceeds the most one tenant's own
        budget (``sms_sends``, ``sms_sends_daily``, with ``action_limits`` over them) can send
        to one phone within the ceiling's window: no tenant may silence a phone for the others.

        In any span of W seconds a moving window of ``a`` per ``w`` admits at most
        ``a * ceil(W / w)`` events.
        """
        own = [
            parse_limit(self.limit_for(k, action_limits)) for k in ("sms_sends", "sms_sends_daily")
        ]
        for kind in ("sms_phone", "sms_phone_daily"):
            ceiling = parse_limit(self.limits[kind])
            span = ceiling.get_expiry()
            most = min(item.amount * -(-span // item.get_expiry()) for item in own)
            if ceiling.amount <= most:
                raise ValueError(
                    f"rate limit {kind}: {self.limits[kind]} must exceed the {most} sends one "
                    "tenant may make to a phone in that window (sms_sends, sms_sends_daily)"
                )

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
        self.take(kind, *key_parts, action_limits=action_limits)

    def take(
        self, kind: str, *key_parts: str, action_limits: Mapping[str, str] | None = None
    ) -> Taken:
        """Count one event now, in the same atomic step as the check (one Lua script on Redis,
        one lock in memory): ``RateLimited``, and nothing counted, if the window is full.

        Counting an attempt *before* the work it guards is what keeps parallel requests from
        overshooting a limit (a check before and a count after let 10 allowed guesses become
        15-17); ``give_back`` returns the event where that is safe, e.g. a proof that passed.
        """
        return self.take_all([(kind, key_parts)], action_limits=action_limits)[0]

    def take_all(
        self,
        wanted: Sequence[tuple[str, tuple[str, ...]]],
        action_limits: Mapping[str, str] | None = None,
    ) -> list[Taken]:
        """``take`` every ``(kind, key_parts)`` at once, all or none: when one window is full,
        nothing is counted and its ``RateLimited`` is raised (one script, one round trip, on
        Redis; the first full one in ``wanted`` order names the limit)."""
        resolved = [(kind, *self._resolve(kind, parts, action_limits)) for kind, parts in wanted]
        windows = [(key, item.amount, item.get_expiry()) for _, item, key in resolved]
        tokens, full = self._call(self._tokens.acquire_all, windows)
        if full >= 0:
            kind, item, key = resolved[full]
            start, _ = self._window(item, key)
            raise self._limited(kind, item, start)
        return [Taken(key, token) for (_, _, key), token in zip(resolved, tokens, strict=True)]

    def give_back(self, taken: Sequence[Taken]) -> None:
        """Uncount events ``take`` counted (their windows free one place each at once)."""
        if taken:
            self._call(self._tokens.release_all, [(event.key, event.token) for event in taken])

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

    def tally(self, kind: str, *key_parts: str) -> tuple[int, int]:
        """Count one event in fixed windows: (events in the current window of ``kind``'s
        length, events in the previous hour). Two counters, no list: cheap enough for a rate
        that is watched rather than limited (``sms_surge``)."""
        window = parse_limit(self.limits[kind]).get_expiry()
        now = time.time()
        base = self._key(kind, key_parts, window)
        current = self._call(self._storage.incr, f"{base}@{int(now // window)}", 2 * window)
        hour = int(now // 3600)
        self._call(self._storage.incr, f"{base}@h{hour}", 7200)
        previous = self._call(self._storage.get, f"{base}@h{hour - 1}")
        return int(current), int(previous)

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


@dataclass(frozen=True)
class Taken:
    """One event ``RateLimits.take`` counted, so that it can be given back."""

    key: str
    token: Any


Window = tuple[str, int, int]  # key, limit, expiry (seconds)


class _Tokens(Protocol):
    """Moving windows whose entries are taken all or none, and returned one by one."""

    def acquire_all(self, windows: Sequence[Window]) -> tuple[list[Any], int]:
        """(one token per window, -1), or ([], index of the first full window)."""
        ...

    def release_all(self, events: Sequence[tuple[str, Any]]) -> None: ...


class _RedisTokens:
    """``take``/``give_back`` on Redis over the moving windows of ``limits`` (a list of
    timestamps per key, newest first, trimmed to the limit): the same check as ``limits``' own
    script, for several windows in one script, so that two instances can never both take a
    window's last place, and nothing is pushed unless every window has room. The pushed
    timestamp is the token; ``LREM`` of that exact entry gives it back."""

    ACQUIRE = """
local stamp = tonumber(ARGV[1])
for i = 1, #KEYS do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    local entry = redis.call('lindex', KEYS[i], limit - 1)
    if entry and tonumber(entry) >= stamp - expiry then
        return i
    end
end
for i = 1, #KEYS do
    local limit, expiry = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
    redis.call('lpush', KEYS[i], ARGV[1])
    redis.call('ltrim', KEYS[i], 0, limit - 1)
    redis.call('expire', KEYS[i], expiry)
end
return 0
"""
    RELEASE = """
for i = 1, #KEYS do
    redis.call('lrem', KEYS[i], 1, ARGV[i])
end
return #KEYS
"""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        connection = storage.get_connection()
        self._acquire = connection.register_script(self.ACQUIRE)
        self._release = connection.register_script(self.RELEASE)

    def acquire_all(self, windows: Sequence[Window]) -> tuple[list[Any], int]:
        stamp = repr(time.time())
        args: list[Any] = [stamp]
        for _, limit, expiry in windows:
            args += [limit, expiry]
        full = int(self._run(self._acquire, [key for key, _, _ in windows], args))
        return ([], full - 1) if full else ([stamp] * len(windows), -1)

    def release_all(self, events: Sequence[tuple[str, Any]]) -> None:
        self._run(self._release, [key for key, _ in events], [token for _, token in events])

    def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        from redis.exceptions import RedisError

        try:
            return script([self._storage.prefixed_key(key) for key in keys], args)
        except RedisError as exc:
            raise StorageError(exc) from exc


class _StripedLocks:
    """A fixed set of re-entrant locks, one chosen by the key's hash, in place of ``limits``'
    ``defaultdict`` of one lock per key.

    A per-key lock cannot be dropped safely while the key may be in use: a thread still waiting
    on the dropped lock and a newcomer given a fresh one would both change the key's window at
    once. These locks live as long as the storage, so a key's window can be deleted under its
    lock at any time. No code path holds two keys' locks at once, so sharing cannot deadlock.
    """

    def __init__(self, count: int = 64) -> None:
        self._locks = tuple(threading.RLock() for _ in range(count))

    def __getitem__(self, key: str) -> threading.RLock:
        return self._locks[hash(key) % len(self._locks)]

    def pop(self, key: str, default: Any = None) -> Any:
        """Nothing to drop: ``limits`` calls this when it forgets a key."""
        return default

    def clear(self) -> None:
        """Nothing to drop (``limits``' ``reset``)."""


class _MemoryStorage(MemoryStorage):
    """``limits``' memory storage with its clean-up pass at most once a second, which forgets
    the keys whose windows emptied.

    ``MemoryStorage`` starts a new ``threading.Timer`` thread 10 ms after any hit when none is
    alive, and that thread walks every key: under load a new thread every 10 ms, each taking the
    GIL from the request threads (measured in ``bench/``). The clean-up only frees memory: the
    moving window itself counts entries by their timestamps, so running it once a second
    changes no answer. (Overrides the name-mangled private methods the base class calls.)

    ``limits`` 5.8's pass empties a window's list but keeps the key, and makes a new lock for
    every key on every pass: every subject and factor that ever sent a proof stayed in memory
    for good, and the pass, holding the GIL, grew with them (45 ms a second after 20,000
    subjects, bench/RESULTS.md). Here a key whose window emptied is deleted, under a lock of
    ``_StripedLocks``.
    """

    CLEANUP_INTERVAL = 1.0

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._next_cleanup = 0.0
        super().__init__(uri, **options)
        self.locks = _StripedLocks()  # type: ignore[assignment]

    def _MemoryStorage__expire_events(self) -> None:
        """Drop expired entries, then the keys left without any; expired counters too."""
        now = time.time()
        for key in list(self.events):
            with self.locks[key]:
                events = self.events.get(key)
                if events:  # newest first: the expired ones are a tail
                    del events[bisect.bisect_left(events, -now, key=lambda e: -e.expiry) :]
                if not events:
                    self.events.pop(key, None)
        for key in list(self.expirations):
            with self.locks[key]:
                if self.expirations.get(key, now + 1) <= now:
                    self.storage.pop(key, None)
                    self.expirations.pop(key, None)

    def acquire(self, key: str, limit: int, expiry: int) -> Entry | None:
        """``acquire_entry`` that returns the entry it added (``_Tokens``)."""
        self._MemoryStorage__schedule_expiry()
        with self.locks[key]:
            events = self.events.setdefault(key, [])
            entry = Entry(expiry)
            if len(events) >= limit and events[limit - 1].atime >= entry.atime - expiry:
                return None
            events.insert(0, entry)
            return entry

    def acquire_all(self, windows: Sequence[Window]) -> tuple[list[Any], int]:
        """``_Tokens``: one window after the other, the taken ones returned at a full one."""
        taken: list[tuple[str, Any]] = []
        for index, (key, limit, expiry) in enumerate(windows):
            token = self.acquire(key, limit, expiry)
            if token is None:
                self.release_all(taken)
                return [], index
            taken.append((key, token))
        return [token for _, token in taken], -1

    def release_all(self, events: Sequence[tuple[str, Any]]) -> None:
        """Remove the entries ``acquire`` returned, those still there."""
        for key, token in events:
            with self.locks[key]:
                entries = self.events.get(key, [])
                for i, entry in enumerate(entries):
                    if entry is token:
                        del entries[i]
                        break

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
