"""The provider-neutral carrier facts: swap windows, monitored periods, the circuit breaker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from service.carrier.provider import (
    CircuitBreaker,
    NoCarrier,
    Reason,
    RecycleFact,
    RecycleStatus,
    SimChangeFact,
    SwapStatus,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WEEK = timedelta(days=7)
TICK = timedelta(microseconds=1)


class FakeClock:
    """Monotonic seconds that only move when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_change_just_inside_the_window_is_a_swap() -> None:
    fact = SimChangeFact(latest_change=NOW - WEEK + TICK, monitored_days=None)
    assert fact.status_for(WEEK, NOW) is SwapStatus.SWAPPED


def test_a_change_exactly_one_window_ago_is_outside_it() -> None:
    fact = SimChangeFact(latest_change=NOW - WEEK, monitored_days=None)
    assert fact.status_for(WEEK, NOW) is SwapStatus.NOT_SWAPPED


def test_a_change_just_outside_the_window_is_not_a_swap() -> None:
    fact = SimChangeFact(latest_change=NOW - WEEK - TICK, monitored_days=None)
    assert fact.status_for(WEEK, NOW) is SwapStatus.NOT_SWAPPED


def test_one_date_answers_every_window() -> None:
    fact = SimChangeFact(latest_change=NOW - timedelta(days=3), monitored_days=None)
    assert fact.status_for(timedelta(days=1), NOW) is SwapStatus.NOT_SWAPPED
    assert fact.status_for(timedelta(days=30), NOW) is SwapStatus.SWAPPED


def test_a_change_dated_in_the_future_counts_as_a_swap() -> None:
    fact = SimChangeFact(latest_change=NOW + timedelta(minutes=5), monitored_days=None)
    assert fact.status_for(WEEK, NOW) is SwapStatus.SWAPPED


def test_no_date_with_a_monitored_period_is_no_swap_within_that_period() -> None:
    fact = SimChangeFact(latest_change=None, monitored_days=30)
    assert fact.status_for(WEEK, NOW) is SwapStatus.NOT_SWAPPED
    assert fact.status_for(timedelta(days=30), NOW) is SwapStatus.NOT_SWAPPED


def test_no_date_says_nothing_about_windows_longer_than_the_monitored_period() -> None:
    fact = SimChangeFact(latest_change=None, monitored_days=30)
    assert fact.status_for(timedelta(days=30) + TICK, NOW) is SwapStatus.UNKNOWN
    assert fact.status_for(timedelta(days=90), NOW) is SwapStatus.UNKNOWN


def test_no_date_and_no_monitored_period_is_unknown() -> None:
    fact = SimChangeFact(latest_change=None, monitored_days=None)
    assert fact.status_for(timedelta(hours=1), NOW) is SwapStatus.UNKNOWN


@pytest.mark.parametrize("reason", [r for r in Reason if r is not Reason.OK])
def test_a_failed_fact_is_always_unknown(reason: Reason) -> None:
    fact = SimChangeFact.failed(reason)
    assert fact.reason is reason
    assert fact.status_for(timedelta(hours=1), NOW) is SwapStatus.UNKNOWN
    assert RecycleFact.failed(reason).status is RecycleStatus.UNKNOWN


def test_a_failure_reason_overrides_a_date() -> None:
    fact = SimChangeFact(latest_change=NOW - WEEK * 4, monitored_days=None, reason=Reason.TIMEOUT)
    assert fact.status_for(WEEK, NOW) is SwapStatus.UNKNOWN


def test_no_carrier_answers_not_covered() -> None:
    provider = NoCarrier()
    assert provider.latest_sim_change("+8613800138000", deadline=1).reason is Reason.NOT_COVERED
    recycled = provider.number_recycled("+8613800138000", NOW, deadline=1)
    assert (recycled.status, recycled.reason) == (RecycleStatus.UNKNOWN, Reason.NOT_COVERED)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(3, 30.0, FakeClock())
    for _ in range(2):
        assert breaker.allow()
        breaker.record(failed=True)
    breaker.record(failed=False)  # a success resets the count
    for _ in range(2):
        assert breaker.allow()
        breaker.record(failed=True)
    assert not breaker.is_open
    assert breaker.allow()
    breaker.record(failed=True)
    assert breaker.is_open
    assert not breaker.allow()


def test_breaker_half_opens_with_exactly_one_trial() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(1, 30.0, clock)
    breaker.record(failed=True)
    clock.now += 29.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # no second trial while the first is out
    breaker.record(failed=False)
    assert breaker.allow()
    assert not breaker.is_open


def test_a_failed_trial_opens_the_breaker_again_for_a_full_period() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(2, 30.0, clock)
    breaker.record(failed=True)
    breaker.record(failed=True)
    clock.now += 30
    assert breaker.allow()
    breaker.record(failed=True)
    clock.now += 29
    assert not breaker.allow()
    clock.now += 1
    assert breaker.allow()


@pytest.mark.parametrize(("failures", "reset"), [(0, 30.0), (3, 0.0)])
def test_breaker_rejects_nonsense_settings(failures: int, reset: float) -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures, reset)
