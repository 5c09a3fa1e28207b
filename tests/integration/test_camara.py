"""The CAMARA provider against the CAMARA simulator, over real HTTP on 127.0.0.1.

No mocks of the HTTP layer: every test drives a real ``CarrierSimulator`` and asserts what a
caller of ``CamaraProvider`` sees (facts and reasons, time taken) and what the carrier saw
(requests and token grants).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from service.carrier.camara import (
    NUMBER_RECYCLING_CHECK,
    SIM_SWAP_CHECK,
    SIM_SWAP_RETRIEVE_DATE,
    CamaraProvider,
)
from service.carrier.provider import Reason, RecycleStatus, SimChangeFact, SwapStatus
from service.carrier.simulator import TOKEN_PATH, CarrierSimulator, load_script
from service.domain.clock import rfc3339

PHONE = "+8613800138000"
OTHER = "+8613900139000"
WEEK = timedelta(days=7)
DEADLINE = 2.0


class FakeClock:
    """Monotonic seconds for the breaker, cache and token lifetime; moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def now() -> datetime:
    return datetime.now(UTC)


@pytest.fixture
def sim(now: datetime) -> Iterator[CarrierSimulator]:
    simulator = CarrierSimulator("idv-test")
    simulator.add_number(PHONE, activated_at=now - timedelta(days=900))
    simulator.add_number(OTHER, activated_at=now - timedelta(days=900))
    with simulator:
        yield simulator


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(sim: CarrierSimulator, clock: FakeClock) -> CamaraProvider:
    return make_provider(sim, clock)


def make_provider(sim: CarrierSimulator, clock: FakeClock, **options: object) -> CamaraProvider:
    return CamaraProvider(
        sim.base_url, sim.token_url, sim.client_id, sim.client_secret, clock=clock, **options
    )


def api_calls(sim: CarrierSimulator, path: str = SIM_SWAP_RETRIEVE_DATE) -> int:
    return sum(1 for seen in sim.requests if seen == path)


# -- SIM Swap: retrieve-date ------------------------------------------------------------------


def test_a_recent_swap_is_reported_with_its_date(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    swap = now - timedelta(days=2)
    sim.add_number(PHONE, activated_at=now - timedelta(days=900), swaps=[swap])
    fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert fact.reason is Reason.OK
    assert fact.latest_change is not None
    assert abs(fact.latest_change - swap) < timedelta(seconds=1)
    assert fact.status_for(WEEK, now) is SwapStatus.SWAPPED
    assert fact.status_for(timedelta(days=1), now) is SwapStatus.NOT_SWAPPED


def test_an_old_swap_is_not_a_swap_in_a_short_window(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    sim.add_number(PHONE, activated_at=now - timedelta(days=900), swaps=[now - timedelta(days=30)])
    fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert (fact.reason, fact.status_for(WEEK, now)) == (Reason.OK, SwapStatus.NOT_SWAPPED)


def test_null_date_with_monitored_period_covers_that_period_only(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    sim.add_number(PHONE, swaps=[now - timedelta(days=200)], monitored_days=90)
    fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert fact == SimChangeFact(latest_change=None, monitored_days=90, reason=Reason.OK)
    assert fact.status_for(timedelta(days=30), now) is SwapStatus.NOT_SWAPPED
    assert fact.status_for(timedelta(days=120), now) is SwapStatus.UNKNOWN


def test_null_date_without_monitored_period_is_unknown(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    sim.mode(PHONE, "null_date")
    fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert fact == SimChangeFact(latest_change=None, monitored_days=None, reason=Reason.OK)
    assert fact.status_for(timedelta(hours=1), now) is SwapStatus.UNKNOWN


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("unknown_number", Reason.NOT_FOUND),
        ("not_applicable", Reason.NOT_COVERED),
        ("out_of_range", Reason.WINDOW_UNSUPPORTED),
        ("error", Reason.PROVIDER_ERROR),
        ("bad_json", Reason.PROVIDER_ERROR),
        ("forbidden", Reason.AUTH_ERROR),
        ("unauthorized", Reason.AUTH_ERROR),
    ],
)
def test_carrier_errors_map_to_reasons_and_unknown(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime, mode: str, reason: Reason
) -> None:
    sim.mode(PHONE, mode)
    fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert fact.reason is reason
    assert fact.status_for(WEEK, now) is SwapStatus.UNKNOWN
    status, check_reason = provider.check_swapped(PHONE, 24, DEADLINE)
    assert (status, check_reason) == (SwapStatus.UNKNOWN, reason)


def test_a_number_the_carrier_does_not_know_is_not_found(provider: CamaraProvider) -> None:
    fact = provider.latest_sim_change("+8613700137000", deadline=DEADLINE)
    assert fact.reason is Reason.NOT_FOUND


def test_401_after_a_refresh_is_an_auth_error_after_exactly_one_refresh(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    sim.mode(None, "unauthorized")
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.AUTH_ERROR
    assert sim.token_grants == 2
    assert api_calls(sim) == 2


def test_wrong_client_secret_is_an_auth_error(sim: CarrierSimulator, clock: FakeClock) -> None:
    provider = CamaraProvider(sim.base_url, sim.token_url, sim.client_id, "wrong", clock=clock)
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.AUTH_ERROR
    assert api_calls(sim) == 0


def test_an_unreachable_carrier_is_a_provider_error(clock: FakeClock) -> None:
    with CarrierSimulator() as gone:
        url = gone.base_url
    provider = CamaraProvider(url, url + TOKEN_PATH, "id", "secret", clock=clock)
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.PROVIDER_ERROR


# -- SIM Swap: check --------------------------------------------------------------------------


def test_check_answers_swapped_within_max_age_only(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    sim.add_number(PHONE, activated_at=now - timedelta(days=900), swaps=[now - timedelta(hours=5)])
    assert provider.check_swapped(PHONE, 24, DEADLINE) == (SwapStatus.SWAPPED, Reason.OK)
    assert provider.check_swapped(PHONE, 4, DEADLINE) == (SwapStatus.NOT_SWAPPED, Reason.OK)


def test_check_beyond_the_carriers_monitored_period_is_window_unsupported(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    sim.add_number(PHONE, monitored_days=10)
    result = provider.check_swapped(PHONE, 2400, DEADLINE)
    assert result == (SwapStatus.UNKNOWN, Reason.WINDOW_UNSUPPORTED)
    assert api_calls(sim, SIM_SWAP_CHECK) == 1


@pytest.mark.parametrize("hours", [0, 2401])
def test_check_outside_the_spec_range_never_reaches_the_carrier(
    sim: CarrierSimulator, provider: CamaraProvider, hours: int
) -> None:
    assert provider.check_swapped(PHONE, hours, DEADLINE) == (
        SwapStatus.UNKNOWN,
        Reason.WINDOW_UNSUPPORTED,
    )
    assert sim.requests == []


# -- deadline, retries, tokens ------------------------------------------------------------------


def test_a_429_is_retried_once_after_retry_after(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    sim.mode(PHONE, "rate_limited_once")
    started = time.monotonic()
    fact = provider.latest_sim_change(PHONE, deadline=3.0)
    assert fact.reason is Reason.OK
    assert time.monotonic() - started >= 1.0  # Retry-After: 1 was honoured
    assert api_calls(sim) == 2


def test_a_persistent_429_is_rate_limited_after_one_retry(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    sim.mode(PHONE, "rate_limited")
    assert provider.latest_sim_change(PHONE, deadline=3.0).reason is Reason.RATE_LIMITED
    assert api_calls(sim) == 2


def test_retry_after_longer_than_the_time_left_is_not_waited_for(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    sim.mode(PHONE, "rate_limited")
    started = time.monotonic()
    assert provider.latest_sim_change(PHONE, deadline=0.8).reason is Reason.RATE_LIMITED
    assert time.monotonic() - started < 0.8
    assert api_calls(sim) == 1


def test_a_flaky_503_is_retried_once(sim: CarrierSimulator, provider: CamaraProvider) -> None:
    sim.mode(PHONE, "flaky")
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.OK
    assert api_calls(sim) == 2


@pytest.mark.parametrize("deadline", [0.3, 1.0])
def test_a_hanging_carrier_times_out_within_the_deadline(
    sim: CarrierSimulator, provider: CamaraProvider, deadline: float
) -> None:
    sim.mode(None, "hang")
    started = time.monotonic()
    fact = provider.latest_sim_change(PHONE, deadline=deadline)
    elapsed = time.monotonic() - started
    assert fact.reason is Reason.TIMEOUT
    assert elapsed < deadline + 0.5
    started = time.monotonic()
    recycled = provider.number_recycled(PHONE, datetime.now(UTC), deadline=deadline)
    assert recycled.reason is Reason.TIMEOUT
    assert time.monotonic() - started < deadline + 0.5


def test_the_token_is_fetched_once_and_reused(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    for _ in range(3):
        fact = provider.latest_sim_change(PHONE, deadline=DEADLINE, use_cache=False)
        assert fact.reason is Reason.OK
    assert provider.number_recycled(PHONE, now, deadline=DEADLINE).reason is Reason.OK
    assert sim.token_grants == 1


def test_an_expired_token_is_refreshed_once_and_the_call_succeeds(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.OK
    sim.mode(None, "expire_token")
    fact = provider.latest_sim_change(PHONE, deadline=DEADLINE, use_cache=False)
    assert fact.reason is Reason.OK
    assert sim.token_grants == 2
    assert api_calls(sim) == 3


def test_a_token_near_its_expiry_is_renewed_before_use(
    sim: CarrierSimulator, provider: CamaraProvider, clock: FakeClock
) -> None:
    provider.latest_sim_change(PHONE, deadline=DEADLINE)
    clock.now += sim.token_ttl - 10  # inside the renewal margin
    provider.latest_sim_change(PHONE, deadline=DEADLINE, use_cache=False)
    assert sim.token_grants == 2


def test_concurrent_callers_share_one_token(
    sim: CarrierSimulator, provider: CamaraProvider
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        facts = list(
            pool.map(lambda _: provider.latest_sim_change(PHONE, deadline=DEADLINE), range(16))
        )
    assert {fact.reason for fact in facts} == {Reason.OK}
    assert sim.token_grants == 1


# -- circuit breaker ----------------------------------------------------------------------------


def test_the_breaker_opens_after_n_failures_and_answers_without_network(
    sim: CarrierSimulator, clock: FakeClock
) -> None:
    provider = make_provider(sim, clock, breaker_failures=3, breaker_reset=30.0)
    sim.mode(None, "error")
    for _ in range(3):
        fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
        assert fact.reason is Reason.PROVIDER_ERROR
    seen = len(sim.requests)
    started = time.monotonic()
    assert provider.latest_sim_change(OTHER, deadline=DEADLINE).reason is Reason.CIRCUIT_OPEN
    recycled = provider.number_recycled(PHONE, datetime.now(UTC), deadline=DEADLINE)
    assert recycled.reason is Reason.CIRCUIT_OPEN
    assert provider.check_swapped(PHONE, 24, DEADLINE)[1] is Reason.CIRCUIT_OPEN
    assert time.monotonic() - started < 0.1
    assert len(sim.requests) == seen

    # Half-open after the reset period: one trial goes out; its success closes the breaker.
    sim.mode(None, None)
    clock.now += 30.0
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.OK
    assert provider.latest_sim_change(OTHER, deadline=DEADLINE).reason is Reason.OK
    assert len(sim.requests) == seen + 2


def test_a_failed_trial_opens_the_breaker_again(sim: CarrierSimulator, clock: FakeClock) -> None:
    provider = make_provider(sim, clock, breaker_failures=2, breaker_reset=30.0)
    sim.mode(None, "hang")
    for _ in range(2):
        assert provider.latest_sim_change(PHONE, deadline=0.2).reason is Reason.TIMEOUT
    clock.now += 30.0
    assert provider.latest_sim_change(PHONE, deadline=0.2).reason is Reason.TIMEOUT  # the trial
    seen = len(sim.requests)
    assert provider.latest_sim_change(PHONE, deadline=0.2).reason is Reason.CIRCUIT_OPEN
    assert len(sim.requests) == seen


def test_answers_that_are_not_failures_do_not_open_the_breaker(
    sim: CarrierSimulator, clock: FakeClock
) -> None:
    provider = make_provider(sim, clock, breaker_failures=2)
    sim.mode(None, "unknown_number")
    for _ in range(4):
        assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.NOT_FOUND
    assert api_calls(sim) == 4


# -- fact cache --------------------------------------------------------------------------------


def test_a_fact_is_cached_for_its_ttl(
    sim: CarrierSimulator, clock: FakeClock, now: datetime
) -> None:
    provider = make_provider(sim, clock, cache_ttl=60.0)
    first = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    clock.now += 59.0
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE) == first
    assert api_calls(sim) == 1
    clock.now += 1.0
    provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert api_calls(sim) == 2


def test_sensitive_actions_bypass_the_cache(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    before = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert before.status_for(WEEK, now) is SwapStatus.NOT_SWAPPED
    sim.add_number(PHONE, swaps=[now - timedelta(minutes=1)])  # the SIM is swapped now
    cached = provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert cached.status_for(WEEK, now) is SwapStatus.NOT_SWAPPED
    fresh = provider.latest_sim_change(PHONE, deadline=DEADLINE, use_cache=False)
    assert fresh.status_for(WEEK, now) is SwapStatus.SWAPPED
    assert api_calls(sim) == 2


def test_errors_are_never_cached(sim: CarrierSimulator, provider: CamaraProvider) -> None:
    sim.mode(PHONE, "not_applicable")
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.NOT_COVERED
    sim.mode(PHONE, None)
    assert provider.latest_sim_change(PHONE, deadline=DEADLINE).reason is Reason.OK
    assert api_calls(sim) == 2


def test_the_cache_is_per_number(sim: CarrierSimulator, provider: CamaraProvider) -> None:
    provider.latest_sim_change(PHONE, deadline=DEADLINE)
    provider.latest_sim_change(OTHER, deadline=DEADLINE)
    assert api_calls(sim) == 2


# -- number recycling --------------------------------------------------------------------------


def test_a_number_reassigned_after_verification_is_reported(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    sim.add_number(
        PHONE, activated_at=now - timedelta(days=10), recycled_at=now - timedelta(days=10)
    )
    verified_at = now - timedelta(days=400)
    fact = provider.number_recycled(PHONE, verified_at, deadline=DEADLINE)
    assert (fact.status, fact.reason) == (RecycleStatus.REASSIGNED, Reason.OK)
    assert api_calls(sim, NUMBER_RECYCLING_CHECK) == 1


def test_a_number_reassigned_before_verification_is_not_reported(
    sim: CarrierSimulator, provider: CamaraProvider, now: datetime
) -> None:
    sim.add_number(PHONE, recycled_at=now - timedelta(days=400))
    fact = provider.number_recycled(PHONE, now - timedelta(days=10), deadline=DEADLINE)
    assert (fact.status, fact.reason) == (RecycleStatus.NOT_REASSIGNED, Reason.OK)


def test_recycling_errors_are_unknown(sim: CarrierSimulator, provider: CamaraProvider) -> None:
    sim.mode(PHONE, "not_applicable")
    fact = provider.number_recycled(PHONE, datetime.now(UTC), deadline=DEADLINE)
    assert (fact.status, fact.reason) == (RecycleStatus.UNKNOWN, Reason.NOT_COVERED)


# -- privacy -----------------------------------------------------------------------------------


def test_logs_never_show_a_phone_number_in_clear(
    sim: CarrierSimulator, provider: CamaraProvider, caplog: pytest.LogCaptureFixture
) -> None:
    sim.mode(PHONE, "error")
    with caplog.at_level(logging.DEBUG, logger="service.carrier"):
        provider.latest_sim_change(PHONE, deadline=DEADLINE)
    assert caplog.records
    assert PHONE not in caplog.text
    assert PHONE[3:] not in caplog.text
    assert "8000" in caplog.text  # the masked form keeps the last four digits


# -- the simulator's JSON script ------------------------------------------------------------------


def test_a_json_script_sets_up_numbers_and_modes(clock: FakeClock, now: datetime) -> None:
    recent = rfc3339(now - timedelta(hours=3))
    script = json.loads(
        f'{{"numbers": [{{"phone": "{PHONE}", "activated_at": "2020-01-01T00:00:00Z",'
        f' "swaps": ["{recent}"]}}, {{"phone": "{OTHER}", "mode": "not_applicable"}}]}}'
    )
    with CarrierSimulator() as sim:
        load_script(sim, script)
        provider = make_provider(sim, clock)
        fact = provider.latest_sim_change(PHONE, deadline=DEADLINE)
        assert fact.status_for(WEEK, now) is SwapStatus.SWAPPED
        assert provider.latest_sim_change(OTHER, deadline=DEADLINE).reason is Reason.NOT_COVERED
