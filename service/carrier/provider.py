"""What idv asks a carrier, in provider-neutral terms (T1 SIM swaps, T2 recycled numbers).

Pure: no I/O, no framework. A provider (``service.carrier.camara`` for GSMA Open Gateway
CAMARA APIs, a fake in tests) answers with *facts*, never exceptions: every answer carries a
``Reason``, and anything but ``Reason.OK`` means "the carrier could not tell us", which the
policy treats as unknown, never as "all clear".
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol


class SwapStatus(StrEnum):
    """Whether the SIM behind a number changed within the window the policy cares about."""

    SWAPPED = "swapped"
    NOT_SWAPPED = "not_swapped"
    UNKNOWN = "unknown"


class RecycleStatus(StrEnum):
    """Whether a number was reassigned to someone else after a given date (T2)."""

    REASSIGNED = "reassigned"
    NOT_REASSIGNED = "not_reassigned"
    UNKNOWN = "unknown"


class Reason(StrEnum):
    """Why a fact is what it is. Everything but OK comes with an UNKNOWN status."""

    OK = "ok"
    NO_DATA = "no_data"
    NOT_COVERED = "not_covered"
    NOT_FOUND = "not_found"
    WINDOW_UNSUPPORTED = "window_unsupported"
    RATE_LIMITED = "rate_limited"
    TIMEOUT = "timeout"
    PROVIDER_ERROR = "provider_error"
    AUTH_ERROR = "auth_error"
    CIRCUIT_OPEN = "circuit_open"


@dataclass(frozen=True)
class SimChangeFact:
    """The carrier's answer to "when did this number last get a new SIM?".

    CAMARA SIM Swap v2 ``retrieve-date``: ``latest_change`` is ``latestSimChange`` (aware UTC)
    and ``monitored_days`` is ``monitoredPeriod``. A date is kept rather than a yes/no so that
    one answer serves every window a policy may ask about.
    """

    latest_change: datetime | None
    monitored_days: int | None
    reason: Reason = Reason.OK

    @classmethod
    def failed(cls, reason: Reason) -> SimChangeFact:
        """A fact that says nothing: the provider could not answer, for ``reason``."""
        return cls(latest_change=None, monitored_days=None, reason=reason)

    def status_for(self, window: timedelta, now: datetime) -> SwapStatus:
        """Return whether the SIM changed in the ``window`` before ``now``.

        - a date: SWAPPED iff ``now - date < window`` (a date in the future, i.e. clock skew,
          counts as a change: the safe side);
        - no date but a monitored period: the carrier watched that many days and saw no change,
          so NOT_SWAPPED for windows up to the period and UNKNOWN for longer ones;
        - no date and no period, or a failed call: UNKNOWN.
        """
        if self.reason is not Reason.OK:
            return SwapStatus.UNKNOWN
        if self.latest_change is not None:
            return (
                SwapStatus.SWAPPED if now - self.latest_change < window else SwapStatus.NOT_SWAPPED
            )
        if self.monitored_days is not None and window <= timedelta(days=self.monitored_days):
            return SwapStatus.NOT_SWAPPED
        return SwapStatus.UNKNOWN


@dataclass(frozen=True)
class RecycleFact:
    """The carrier's answer to "was this number reassigned since a date?" (Number Recycling)."""

    status: RecycleStatus
    reason: Reason = Reason.OK

    @classmethod
    def failed(cls, reason: Reason) -> RecycleFact:
        """A fact that says nothing: the provider could not answer, for ``reason``."""
        return cls(status=RecycleStatus.UNKNOWN, reason=reason)


class CarrierProvider(Protocol):
    """A source of carrier facts. Implementations never raise for a provider problem.

    ``deadline`` is the number of seconds the whole call may take, token fetch and retry
    included (about 2 s on a login, 5 s on a reset).
    """

    def latest_sim_change(
        self, phone: str, *, deadline: float, use_cache: bool = True
    ) -> SimChangeFact:
        """When the SIM behind the E.164 ``phone`` last changed. ``use_cache=False`` for
        sensitive actions, which must see the carrier's answer of the moment."""

    def number_recycled(self, phone: str, since: datetime, *, deadline: float) -> RecycleFact:
        """Whether the E.164 ``phone`` was reassigned to a new owner after ``since``."""


class NoCarrier:
    """The provider used when no carrier is configured: every answer is NOT_COVERED."""

    def latest_sim_change(
        self, phone: str, *, deadline: float, use_cache: bool = True
    ) -> SimChangeFact:
        """Return an UNKNOWN fact with reason NOT_COVERED."""
        return SimChangeFact.failed(Reason.NOT_COVERED)

    def number_recycled(self, phone: str, since: datetime, *, deadline: float) -> RecycleFact:
        """Return an UNKNOWN fact with reason NOT_COVERED."""
        return RecycleFact.failed(Reason.NOT_COVERED)


class CircuitBreaker:
    """Stop calling a provider that keeps failing, so logins do not all wait out its timeout.

    Closed: calls go through. After ``failures`` consecutive failures it opens for ``reset``
    seconds and ``allow()`` is False. Then it is half-open: exactly one trial call is
    allowed; its success closes the breaker, its failure opens it again. Thread-safe; the
    clock (seconds, monotonic) is injected so tests need not sleep.
    """

    def __init__(
        self, failures: int, reset: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Open after ``failures`` consecutive failures, for ``reset`` seconds."""
        if failures < 1 or reset <= 0:
            raise ValueError("a breaker needs failures >= 1 and reset > 0")
        self._threshold = failures
        self._reset = reset
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False

    @property
    def is_open(self) -> bool:
        """True while calls are refused without trying (open, or half-open with a trial out)."""
        with self._lock:
            if self._opened_at is None:
                return False
            return self._trial_running or self._clock() - self._opened_at < self._reset

    def allow(self) -> bool:
        """Return whether a call may go out now; in half-open state this claims the trial."""
        with self._lock:
            if self._opened_at is None:
                return True
            if self._trial_running or self._clock() - self._opened_at < self._reset:
                return False
            self._trial_running = True
            return True

    def record(self, *, failed: bool) -> None:
        """Record the outcome of a call that ``allow()`` let through."""
        with self._lock:
            self._trial_running = False
            if not failed:
                self._failures = 0
                self._opened_at = None
                return
            self._failures += 1
            if self._opened_at is not None or self._failures >= self._threshold:
                self._opened_at = self._clock()
