"""The argon2 gate: bounded concurrency that answers 429 instead of queueing server threads."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from service.context import Argon2Gate
from service.domain.errors import RateLimited


def test_gate_admits_up_to_its_slots_then_refuses_fast():
    gate = Argon2Gate(1, wait=0.05)
    entered, release = threading.Event(), threading.Event()

    def hold() -> str:
        entered.set()
        release.wait(5)
        return threading.current_thread().name

    worker = threading.Thread(target=gate.run, args=(hold,))
    worker.start()
    assert entered.wait(5)
    with pytest.raises(RateLimited) as err:
        gate.run(lambda: None)
    assert err.value.retry_after == 1
    release.set()
    worker.join(5)
    release.set()
    # Free again, and the work runs on the gate's own thread, not the caller's.
    assert gate.run(hold).startswith("idv-argon2")


def test_beyond_the_waiting_places_a_pin_check_is_refused_without_waiting():
    """A PIN flood holds at most ADMITTED_PER_SLOT x slots server threads: the rest get 429 at
    once, before any other work."""
    import time

    gate = Argon2Gate(1, wait=5)
    entered, release = threading.Event(), threading.Event()
    outcomes: list[str] = []

    def hold() -> None:
        entered.set()
        release.wait(5)

    def waiter() -> None:
        with gate.admission():
            outcomes.append(str(gate.run(lambda: "ran")))

    def hashing_request() -> None:
        with gate.admission():
            gate.run(hold)

    hashing = threading.Thread(target=hashing_request)
    hashing.start()
    assert entered.wait(5)
    waiting = [threading.Thread(target=waiter) for _ in range(Argon2Gate.WAITING_PER_SLOT)]
    for thread in waiting:
        thread.start()
    time.sleep(0.1)  # the waiters are now queued for the slot
    started = time.monotonic()
    with pytest.raises(RateLimited), gate.admission():
        pytest.fail("one PIN check more than the gate admits was admitted")
    assert time.monotonic() - started < 0.5  # refused at once, not after ``wait``
    release.set()
    hashing.join(5)
    for thread in waiting:
        thread.join(5)
    assert outcomes == ["ran"] * Argon2Gate.WAITING_PER_SLOT  # each waiter got the slot


@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux")
def test_argon2_threads_run_at_the_configured_nice_and_callers_are_untouched():
    """A PIN flood competes for CPUs at a lower priority than TOTP and device proofs."""
    before = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    gate = Argon2Gate(1, nice=10)
    inside = gate.run(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert inside == max(before, 10)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == before
    assert Argon2Gate(1).run(lambda: os.getpriority(os.PRIO_PROCESS, 0)) == before


@pytest.mark.skipif(sys.platform != "linux", reason="SCHED_IDLE is Linux")
def test_argon2_threads_run_under_sched_idle_by_default_and_callers_are_untouched():
    """sched(7) SCHED_IDLE: a hash runs only on CPU time nothing else wants, and any waking
    thread of any process (a request thread, a PostgreSQL backend) preempts it at once."""
    from service.settings import Settings

    nice = Settings.from_env({}).argon2_nice
    gate = Argon2Gate(1, nice=nice)
    assert gate.run(lambda: os.sched_getscheduler(0)) == os.SCHED_IDLE
    assert os.sched_getscheduler(0) == os.SCHED_OTHER  # the request thread keeps its policy
    assert Argon2Gate(1, nice=10).run(lambda: os.sched_getscheduler(0)) == os.SCHED_OTHER
    assert Argon2Gate(1).run(lambda: os.sched_getscheduler(0)) == os.SCHED_OTHER


def test_argon2_nice_setting_is_validated():
    from service.settings import ConfigError, Settings

    assert Settings.from_env({}).argon2_nice == "idle"
    assert Settings.from_env({"IDV_ARGON2_NICE": " IDLE "}).argon2_nice == "idle"
    assert Settings.from_env({"IDV_ARGON2_NICE": "0"}).argon2_nice == 0
    assert Settings.from_env({"IDV_ARGON2_NICE": "10"}).argon2_nice == 10
    for bad in ("20", "-1", "lowest", "1.5"):
        with pytest.raises(ConfigError, match="IDV_ARGON2_NICE"):
            Settings.from_env({"IDV_ARGON2_NICE": bad})


class _Clock:
    """A fake monotonic clock: a hash takes what the test says; sleeps are recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def _gate_on(clock: _Clock, duty: int) -> Argon2Gate:
    gate = Argon2Gate(1, wait=5, duty=duty)
    gate.monotonic, gate.sleep = clock.monotonic, clock.sleep  # type: ignore[method-assign]
    return gate


def test_an_argon2_thread_rests_after_a_hash_by_its_duty():
    """IDV_ARGON2_DUTY: at 50 % a thread rests as long as its last hash took before the next;
    time already passed counts towards the rest (a lone PIN check waits for nothing)."""
    clock = _Clock()
    gate = _gate_on(clock, 50)

    def hash_taking(seconds: float):  # type: ignore[no-untyped-def]
        def work() -> None:
            clock.now += seconds

        return work

    gate.run(hash_taking(0.04))
    assert clock.slept == []  # the first hash starts at once
    gate.run(hash_taking(0.02))
    assert clock.slept == [0.04]  # rested as long as the first hash took
    clock.now += 0.015  # 15 ms pass before the next PIN check arrives
    gate.run(hash_taking(0.01))
    assert clock.slept == [0.04, 0.005]  # the rest left of the second hash's 20 ms
    clock.now += 1
    gate.run(hash_taking(0.01))
    assert clock.slept == [0.04, 0.005]  # long since rested: no wait


def test_duty_25_rests_three_times_the_hash_and_100_never_rests():
    clock = _Clock()
    quarter = _gate_on(clock, 25)
    for _ in range(2):
        quarter.run(lambda: setattr(clock, "now", clock.now + 0.02))
    assert clock.slept == [0.06]
    clock.slept.clear()
    full = _gate_on(clock, 100)
    for _ in range(3):
        full.run(lambda: setattr(clock, "now", clock.now + 0.02))
    assert clock.slept == []


def test_duty_setting():
    from service.settings import ConfigError, Settings

    assert Settings.from_env({}).argon2_duty == 50
    assert Settings.from_env({"IDV_ARGON2_DUTY": "100"}).argon2_duty == 100
    for bad in ("0", "4", "101", "half"):
        with pytest.raises(ConfigError, match="IDV_ARGON2_DUTY"):
            Settings.from_env({"IDV_ARGON2_DUTY": bad})
