"""One CPU per ``idv serve`` worker for the threads that serve requests (Linux).

A gthread worker runs its Python under one GIL, so it never uses more than one core's worth
of Python. Its request threads hand the GIL to each other at every database call and socket
read. When those threads are spread over several CPUs, each hand-off wakes another CPU (an
inter-processor interrupt; on a VM, a trip through the hypervisor), and the request's data
moves between CPU caches. On one CPU a hand-off is an ordinary context switch.

Measured on a 2-CPU VM (``bench/RESULTS.md``): server CPU per TOTP proof went from 1.4-1.6 ms
to 0.9-1.0 ms, and throughput rose by 40-60 % on SQLite and PostgreSQL.

What ``idv serve`` does with it:

- the arbiter gives each new worker the CPU its live siblings use least (``pre_fork``), so
  workers stay spread out after a restart;
- the worker pins its main thread to that CPU once the app is built (``post_worker_init``).
  gunicorn's request threads start later from that thread and inherit the pin;
- threads that do their work outside the GIL run elsewhere. The checkpointer and the webhook
  deliverer start before the pin and keep every CPU. argon2 threads start later, from a pinned
  request thread, so ``context.Argon2Gate`` moves them to the process's *other* CPUs
  (``away_from_requests``): a hash on the request CPU would take its time and sweep its caches.

Off with ``IDV_PIN_THREADS=0``, and a no-op where the process may use only one CPU or the
platform has no ``sched_setaffinity``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import Any


def allowed_cpus() -> frozenset[int]:
    """The CPUs the calling thread may run on (empty where the platform cannot say)."""
    getter = getattr(os, "sched_getaffinity", None)
    return frozenset(getter(0)) if getter else frozenset()


def set_thread_cpus(cpus: Iterable[int]) -> bool:
    """Restrict the *calling thread* to ``cpus`` (Linux: pid 0 is the calling thread).
    Threads it starts afterwards inherit this. False where it cannot be done."""
    setter = getattr(os, "sched_setaffinity", None)
    wanted = set(cpus)
    if setter is None or not wanted:
        return False
    try:
        setter(0, wanted)
    except OSError:  # a CPU outside our cpuset, or not permitted: leave the thread as it is
        return False
    return True


def away_from_requests(cpus: frozenset[int]) -> frozenset[int]:
    """The CPUs of ``cpus`` that a helper thread started by a request thread should use.

    A thread inherits its starter's CPUs; when that is a pinned request thread, the helper gets
    the process's other CPUs (argon2's 19 MiB passes would otherwise evict the request
    threads' working set from their CPU's caches and take its time). Every CPU of ``cpus``
    when the starter is not pinned, or when nothing else is left.
    """
    return (cpus - allowed_cpus()) or cpus


def choose_cpu(cpus: Iterable[int], taken: Iterable[int | None]) -> int | None:
    """The CPU of ``cpus`` that the fewest ``taken`` entries use (lowest on a tie); ``None``
    when there are fewer than two CPUs (nothing to gain)."""
    candidates = sorted(set(cpus))
    if len(candidates) < 2:
        return None
    load = dict.fromkeys(candidates, 0)
    for cpu in taken:
        if cpu in load:
            load[cpu] += 1
    return min(candidates, key=lambda cpu: (load[cpu], cpu))


def gunicorn_hooks() -> dict[str, Callable[..., Any]]:
    """gunicorn settings that pin each worker's request threads to its own CPU."""

    def pre_fork(server: Any, worker: Any) -> None:  # in the arbiter
        siblings = (getattr(w, "idv_cpu", None) for w in server.WORKERS.values())
        worker.idv_cpu = choose_cpu(allowed_cpus(), siblings)

    def post_worker_init(worker: Any) -> None:  # in the worker, on its main thread
        cpu = getattr(worker, "idv_cpu", None)
        if cpu is not None and set_thread_cpus({cpu}):
            worker.log.info("request threads of worker %s on CPU %s", worker.pid, cpu)

    return {"pre_fork": pre_fork, "post_worker_init": post_worker_init}
