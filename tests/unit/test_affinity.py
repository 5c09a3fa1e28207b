"""service.affinity: each ``idv serve`` worker's request threads on one CPU, the threads that
work outside the GIL (argon2) on all of them."""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from service import affinity
from service.context import Argon2Gate

CPUS = affinity.allowed_cpus()
needs_two_cpus = pytest.mark.skipif(
    sys.platform != "linux" or len(CPUS) < 2, reason="needs Linux and at least two CPUs"
)


def in_thread(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on a fresh thread (pinning the test runner's own thread would leak)."""
    out: list[Any] = []
    worker = threading.Thread(target=lambda: out.append(fn()))
    worker.start()
    worker.join(10)
    assert not worker.is_alive()
    return out[0]


def test_choose_cpu_takes_the_least_used_and_the_lowest_on_a_tie():
    assert affinity.choose_cpu({0, 1, 2}, []) == 0
    assert affinity.choose_cpu({0, 1, 2}, [0]) == 1
    assert affinity.choose_cpu({0, 1, 2}, [0, 1]) == 2
    assert affinity.choose_cpu({0, 1, 2}, [0, 1, 2, 0]) == 1
    # A worker that was not pinned, or a CPU the process may no longer use, counts for nothing.
    assert affinity.choose_cpu({2, 3}, [None, 0, 2]) == 3


def test_choose_cpu_does_nothing_with_one_cpu():
    assert affinity.choose_cpu({5}, []) is None
    assert affinity.choose_cpu(set(), []) is None


def test_pre_fork_spreads_workers_and_refills_the_cpu_a_dead_worker_left():
    """The arbiter's hook: worker k on the CPU its live siblings use least, so a restart after
    a crash does not stack two workers on one CPU."""
    hooks = affinity.gunicorn_hooks()
    cpus = sorted(CPUS)
    if len(cpus) < 2:
        pytest.skip("needs at least two CPUs")
    server = SimpleNamespace(WORKERS={})
    for pid in (101, 102):
        worker = SimpleNamespace()
        hooks["pre_fork"](server, worker)
        server.WORKERS[pid] = worker
    assert sorted(w.idv_cpu for w in server.WORKERS.values()) == cpus[:2]
    lost = server.WORKERS.pop(101).idv_cpu  # worker 101 died; gunicorn forks a replacement
    replacement = SimpleNamespace()
    hooks["pre_fork"](server, replacement)
    assert replacement.idv_cpu == lost


@needs_two_cpus
def test_pinning_holds_for_the_thread_and_the_threads_it_starts_only():
    cpu = max(CPUS)

    def pinned_then_child() -> tuple[set[int], set[int]]:
        assert affinity.set_thread_cpus({cpu})
        return os.sched_getaffinity(0), in_thread(lambda: os.sched_getaffinity(0))

    mine, child = in_thread(pinned_then_child)
    assert mine == {cpu} and child == {cpu}  # gunicorn's request threads inherit the pin
    assert os.sched_getaffinity(0) == set(CPUS)  # no other thread of the process moved


@needs_two_cpus
def test_post_worker_init_pins_the_worker_main_thread(caplog):
    hooks = affinity.gunicorn_hooks()
    worker = SimpleNamespace(idv_cpu=min(CPUS), pid=os.getpid(), log=logging.getLogger("t"))

    def init(w: Any) -> set[int]:
        hooks["post_worker_init"](w)
        return os.sched_getaffinity(0)

    with caplog.at_level(logging.INFO):
        assert in_thread(lambda: init(worker)) == {min(CPUS)}
    assert f"on CPU {min(CPUS)}" in caplog.text
    unpinned = SimpleNamespace(idv_cpu=None, pid=1, log=logging.getLogger("t"))
    assert in_thread(lambda: init(unpinned)) == set(CPUS)


def test_a_cpu_outside_the_cpuset_is_refused_quietly():
    if sys.platform != "linux":
        pytest.skip("Linux only")
    assert in_thread(lambda: affinity.set_thread_cpus({10_000})) is False
    assert in_thread(lambda: affinity.set_thread_cpus(set())) is False


@needs_two_cpus
def test_argon2_threads_started_by_a_pinned_request_thread_keep_off_its_cpu():
    """A request thread (pinned) starts the gate's argon2 thread on the first PIN check; that
    thread must not inherit the pin, or hashing would compete with the requests for one CPU
    and sweep its caches: it gets the process's other CPUs."""
    gate = Argon2Gate(1, wait=1)  # built like ServiceContext.build: before the worker pins
    request_cpu = min(CPUS)

    def pinned_request() -> set[int]:
        affinity.set_thread_cpus({request_cpu})
        return gate.run(lambda: os.sched_getaffinity(0))

    assert in_thread(pinned_request) == set(CPUS) - {request_cpu}


def test_a_helper_of_an_unpinned_thread_keeps_every_cpu():
    """Without IDV_PIN_THREADS (or on one CPU) there is no request CPU to keep away from."""
    everything = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    if not everything:
        pytest.skip("no sched_getaffinity here")
    assert affinity.away_from_requests(everything) == everything
    assert in_thread(lambda: Argon2Gate(1).run(lambda: os.sched_getaffinity(0))) == everything


@pytest.mark.parametrize(
    ("value", "pinned"),
    [(None, True), ("", True), ("1", True), ("on", True), ("0", False), (" OFF ", False)],
)
def test_idv_pin_threads_setting(tmp_path, value, pinned):
    from service.settings import Settings

    env = {"IDV_DATA_DIR": str(tmp_path)}
    if value is not None:
        env["IDV_PIN_THREADS"] = value
    assert Settings.from_env(env).pin_threads is pinned


def test_idv_pin_threads_refuses_anything_else(tmp_path):
    from service.settings import ConfigError, Settings

    with pytest.raises(ConfigError, match="IDV_PIN_THREADS"):
        Settings.from_env({"IDV_DATA_DIR": str(tmp_path), "IDV_PIN_THREADS": "sometimes"})
