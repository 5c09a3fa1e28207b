"""How many gunicorn workers ``idv serve`` runs, and the line at start that says why.

A gthread worker runs its Python under one GIL: one worker uses about one core, however many
threads it has (``service.affinity``). So the worker count is the number of cores idv can use.

- **No Redis (the embedded default): one worker.** The rate limits (failed proofs per subject
  and factor, failures per subject, SMS sends per phone and per tenant, the per-tenant request
  ceilings) are moving windows in the process's memory (``service.ratelimit``, ``memory://``).
  N processes would keep N sets of counters, and a caller whose requests land on each would get
  N times every budget: N times the codes a phone may be sent (OWASP ASVS 5.0 6.6.3: codes are
  rate limited), N times the guesses ``guessing_budget`` counts before the database-backed
  subject lockout (which does hold across processes) steps in. ``--workers`` above 1 is refused
  rather than allowed to weaken them. The replay records (TOTP steps, challenges, assertion ids)
  are database rows and would be safe; the counters are not.

  Sharing the counters between processes on one host without Redis (an SQLite table or shared
  memory) was considered and not done: every limit check would become a write to the database
  file, and SQLite allows one writer at a time across processes, so each proof's limit writes
  would queue behind every other process's proof transactions, the very lock that keeps a
  second SQLite process from adding throughput (bench/RESULTS.md, "The audit chain with two
  instances"). Shared memory would need a lock-free moving window that survives a worker being
  killed mid-update; ``limits`` has none. Instead the line at start says how many cores are
  left idle and what uses them: ``IDV_REDIS_URL``.
- **Redis and PostgreSQL: one worker per core** idv may run on (``sched_getaffinity``: a
  ``taskset`` or cpuset counts; so does a cgroup v2 CPU quota, e.g. ``docker run --cpus``).
  Counters are shared through Redis and every other piece of state is in PostgreSQL, so
  workers are interchangeable. Each worker has its own database pool: PostgreSQL's
  ``max_connections`` must cover instances x workers x (threads + 2) (bench/RESULTS.md).
- **Redis and SQLite: at most two.** Correct with any number (the counters are in Redis and
  SQLite serialises writers), but every proof commits, and SQLite has one writer at a time per
  file: more processes mostly wait on each other's write lock. Two keeps the earlier default;
  use PostgreSQL to use every core.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from service import affinity
from service.domain.errors import ConfigError
from service.settings import Settings

SQLITE_MOST = 2  # workers on one SQLite file by default (one writer at a time)


@dataclass(frozen=True)
class Plan:
    """The worker count ``idv serve`` runs and the line it prints at start."""

    workers: int
    line: str


def cpu_quota(root: Path = Path("/")) -> int | None:
    """The cores a cgroup v2 CPU quota allows this process (``cpu.max``, rounded up), or
    ``None`` where none is set or it cannot be read (cgroup v1, not Linux).

    A container limited to 2 CPUs on a 16-core host sees all 16 in its affinity mask; 16
    GIL-bound workers would then share 2 cores' worth of time, and each would be throttled
    in turn (a stall of up to the quota period for every request it holds).
    """
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
        path = next(line[3:] for line in lines if line.startswith("0::"))
        fields = (root / "sys/fs/cgroup" / path.lstrip("/") / "cpu.max").read_text().split()
        quota, period = fields[0], int(fields[1])
    except (OSError, StopIteration, IndexError, ValueError):
        return None
    if quota == "max" or not quota.isdigit() or period <= 0:
        return None
    return max(1, -(-int(quota) // period))


def usable_cores() -> int:
    """The CPUs this process may run on (its affinity mask, and a cgroup v2 quota), at
    least 1."""
    cores = len(affinity.allowed_cpus()) or os.cpu_count() or 1
    quota = cpu_quota()
    return min(cores, quota) if quota else cores


def _cores(n: int) -> str:
    return f"{n} core" if n == 1 else f"{n} cores"


def _workers(n: int) -> str:
    return f"{n} worker" if n == 1 else f"{n} workers"


def plan(settings: Settings, requested: int | None, cores: int) -> Plan:
    """The workers to run for ``settings`` and ``--workers`` (``None``: the default) on a
    host where ``cores`` CPUs are usable. ``ConfigError`` for a count that would give each
    process its own rate-limit counters."""
    if requested is not None and requested < 1:
        raise ConfigError("--workers", f"must be at least 1, got {requested}")
    if not settings.redis_url:
        if requested is not None and requested > 1:
            raise ConfigError(
                "--workers",
                f"{requested} workers need IDV_REDIS_URL: without it each process keeps its own "
                "rate-limit counters, and a caller would get every budget once per process",
            )
        idle = cores - 1
        reason = (
            "in-process rate limits need one process; "
            "set IDV_REDIS_URL, with PostgreSQL, for one worker per core"
        )
        if idle:
            return Plan(1, f"idv: 1 worker on 1 of {_cores(cores)}, {idle} idle ({reason})")
        return Plan(1, f"idv: 1 worker on 1 core ({reason})")
    if requested is not None:
        workers, why = requested, "--workers"
    elif settings.is_sqlite and cores > SQLITE_MOST:
        workers = SQLITE_MOST
        why = "SQLite writes one transaction at a time; use PostgreSQL to use every core"
    else:
        workers, why = cores, "one per core"
    shared = "rate limits shared through Redis"
    used = min(workers, cores)
    idle = cores - used
    where = f"on {used} of {_cores(cores)}" + (f", {idle} idle" if idle else "")
    if workers > cores:
        where = f"on {_cores(cores)}"
    return Plan(workers, f"idv: {_workers(workers)} {where} ({why}; {shared})")


def share_argon2(settings: Settings, workers: int, env: Mapping[str, str]) -> Settings:
    """``settings`` with the default argon2 slots split between ``workers`` processes.

    ``IDV_ARGON2_CONCURRENCY`` is per process, and its default (half the cores: argon2 releases
    the GIL, the other half serves everything else) was meant for the host. One worker per
    core would otherwise run cores x cores/2 hashes of 19 MiB at once (16 cores: 128, 2.4 GiB).
    A value set in the environment is kept as it is (README: "per process").
    """
    if workers <= 1 or env.get("IDV_ARGON2_CONCURRENCY"):
        return settings
    return replace(settings, argon2_concurrency=max(1, settings.argon2_concurrency // workers))
