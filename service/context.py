"""What a running idv holds: settings, database, keys, policy and the factor machinery.

Built once by ``create_app`` (or the CLI); the use cases receive it explicitly.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import Engine

from service import affinity
from service.carrier.provider import CarrierProvider
from service.crypto.keyring import KeyRing, load_key_ring
from service.domain.clock import utcnow
from service.domain.errors import ConfigError, RateLimited
from service.domain.policy import Policy, load_policy
from service.factors import registry
from service.factors.knowledge import KnowledgeHasher
from service.factors.sms import SmsSender, sender_from_spec
from service.guessing import NIST_CONSECUTIVE_FAILURES, daily_guesses
from service.ratelimit import RateLimits
from service.settings import ARGON2_IDLE, Settings
from service.storage import audit
from service.storage.db import make_engine

T = TypeVar("T")


class Argon2Gate:
    """At most ``slots`` argon2 computations at once per process, on dedicated threads.

    A flood of PIN guesses must not starve TOTP and device proofs of server threads or CPU:

    - at most ``WAITING_PER_SLOT * slots`` more requests wait for a slot; any beyond that is
      answered 429 at once, before any other work, so PIN checks never hold more than
      ``ADMITTED_PER_SLOT * slots`` (4 with one slot) of a worker's server threads;
    - a waiting request that gets no slot within ``wait`` seconds is answered 429 too;
    - the argon2 threads run under Linux's ``SCHED_IDLE`` policy (``nice="idle"``, the
      default) or at nice ``nice``, so when CPUs are contended they yield;
    - each argon2 thread hashes at most ``duty`` percent of the time: after a hash it rests
      ``(100 - duty) / duty`` times as long before its next (``IDV_ARGON2_DUTY``, 50 by
      default: a flood's hashes take at most half a core per slot);
    - they run on the CPUs the process had when the gate was built, less the one of the request
      thread (pinned by ``idv serve``, see ``service.affinity``) that starts them, when there
      are others: hashing releases the GIL and belongs on the other cores.

    Hashing on a few dedicated threads also keeps argon2's 19 MiB blocks in their malloc arenas
    instead of one per server thread.
    """

    WAITING_PER_SLOT = 3
    ADMITTED_PER_SLOT = 1 + WAITING_PER_SLOT  # hashing + waiting

    def __init__(self, slots: int, wait: float = 0.5, nice: int | str = 0, duty: int = 100) -> None:
        self._slots = threading.BoundedSemaphore(slots)
        self._admitted = threading.BoundedSemaphore(self.ADMITTED_PER_SLOT * slots)
        self._wait = wait
        # Each argon2 thread rests (100 - duty) / duty of its last hash's time before the next.
        self._rest = (100 - duty) / duty
        self._local = threading.local()
        self._pool = ThreadPoolExecutor(
            max_workers=slots,
            thread_name_prefix="idv-argon2",
            initializer=_argon2_thread,
            initargs=(nice, affinity.allowed_cpus()),
        )

    # The gate's clock and sleep (a test replaces them).
    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)

    def _hash(self, fn: Callable[..., T], *args: Any) -> T:
        """On an argon2 thread: rest what is left of its rest, then hash.

        The rest bounds what argon2 takes of the host, not only of the CPU time other threads
        want (``SCHED_IDLE`` does that): each hash sweeps 19 MiB through the caches and memory
        bus that request threads share. bench/RESULTS.md: TOTP under a PIN flood kept a median
        71 % of its own rate at ``duty`` 100 and 82 % at 50, on the same host in the same hour.
        """
        local = self._local
        resting = getattr(local, "rest_until", 0.0) - self.monotonic()
        if resting > 0:
            self.sleep(resting)
        started = self.monotonic()
        try:
            return fn(*args)
        finally:
            ended = self.monotonic()
            local.rest_until = ended + (ended - started) * self._rest

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold one of the places (hashing or waiting) or get 429 at once.

        Taken *before* any other work of a request that will hash: a refused PIN check then
        costs no database work either.
        """
        if not self._admitted.acquire(blocking=False):
            raise RateLimited("too many PIN checks in progress; retry shortly", retry_after=1)
        try:
            yield
        finally:
            self._admitted.release()

    def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on an argon2 thread; 429 ``rate_limited`` if no slot frees up
        within ``wait`` (callers on a request path hold an ``admission`` around it)."""
        if not self._slots.acquire(timeout=self._wait):
            raise RateLimited("too many PIN checks in progress; retry shortly", retry_after=1)
        try:
            return self._pool.submit(self._hash, fn, *args).result()
        finally:
            self._slots.release()


def _argon2_thread(nice: int | str, cpus: frozenset[int]) -> None:
    """Set up an argon2 thread: the CPUs of ``cpus`` but its starter's, and its priority."""
    affinity.set_thread_cpus(affinity.away_from_requests(cpus))
    _lower_priority(nice)


def _lower_priority(nice: int | str) -> None:
    """Make the calling thread yield the CPU to request threads and everything else.

    ``"idle"`` (``IDV_ARGON2_NICE``'s default) puts the thread under Linux's ``SCHED_IDLE``
    policy (sched(7)): it runs only on CPU time no other thread wants, and any thread that wakes
    up preempts it at once, whatever process or scheduling group it belongs to. A nice value is
    weaker in two ways, both measured in ``bench/`` (TOTP under a PIN flood, PostgreSQL: 48-62 %
    of its own figure with nice 10, 71-90 % with ``SCHED_IDLE``):

    - nice orders threads only within one scheduling group (an autogroup, or a cgroup under
      systemd or a container runtime). PostgreSQL on the same host is in another group, so a
      nice-10 argon2 thread still took half of the CPU that the database's backends wanted;
    - a waking database backend, or a request thread, waited for the hash's time slice to end
      before it ran, at every one of a proof's round trips.

    Alone, argon2 still uses a whole core either way. Under a load that keeps every CPU busy,
    an idle-policy hash gets almost nothing and PIN checks slow down first: the order of
    sacrifice the gate is for (``bench/README.md``). A Linux thread id is a process id here.
    """
    if sys.platform != "linux":
        return
    tid = threading.get_native_id()
    if nice == ARGON2_IDLE:
        try:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
            return
        except (OSError, AttributeError):  # not permitted here: the weakest nice instead
            nice = 19
    if nice:
        with contextlib.suppress(OSError):  # not permitted somewhere: run at normal priority
            os.setpriority(
                os.PRIO_PROCESS, tid, max(int(nice), os.getpriority(os.PRIO_PROCESS, tid))
            )


@dataclass
class ServiceContext:
    """The wired service; one per process (per app in tests)."""

    settings: Settings
    engine: Engine
    keys: KeyRing
    policy: Policy
    hasher: KnowledgeHasher
    sms: SmsSender
    limits: RateLimits
    carrier: CarrierProvider | None = None
    clock: Callable[[], datetime] = utcnow
    # Bounded argon2 concurrency: a flood of PIN guesses cannot starve other proofs.
    argon2_slots: Argon2Gate = field(default_factory=lambda: Argon2Gate(1))
    # API keys this process verified, by the hash of the presented key: (client, stored hash).
    # Only the proof route reads it, and its first statement reads the client row again
    # (usecases.clients.recognise / confirm), so a revocation still ends a key at once.
    known_keys: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(cls, settings: Settings, *, create_keys: bool = True) -> ServiceContext:
        """Wire everything from settings: engine, key ring, policy, hasher, SMS sender."""
        keys = load_key_ring(
            settings.key_file,
            settings.keys_json,
            create=create_keys,
            profile=settings.crypto_profile,
        )
        audit.configure(keys.derived_keys("audit-mac"), settings.crypto_profile)
        policy = load_policy(settings.policy_file, factors=registry.CATALOG)
        limits = RateLimits(settings.redis_url, dict(settings.rate_limits))
        failure_limit = min(rules.failure_limit for rules in policy.actions.values())
        for name, rules in policy.actions.items():  # an action's own limits, too
            try:
                limits.check_sms_share(rules.limits)
            except ValueError as exc:
                raise ConfigError("IDV_POLICY_FILE", f"actions.{name}.limits: {exc}") from None
            guesses = daily_guesses(
                limits.limit_for("failed_proofs", rules.limits),
                limits.limit_for("subject_failures"),
                failure_limit,
            )
            if guesses >= NIST_CONSECUTIVE_FAILURES:
                raise ConfigError(
                    "IDV_POLICY_FILE",
                    f"actions.{name}: the limits allow {guesses} failed proofs a day; NIST SP "
                    f"800-63B-4 allows fewer than {NIST_CONSECUTIVE_FAILURES} in a row",
                )
        return cls(
            settings=settings,
            engine=make_engine(settings.database_url),
            keys=keys,
            policy=policy,
            hasher=KnowledgeHasher(
                time_cost=settings.argon2_time_cost,
                memory_cost_kib=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
            sms=sender_from_spec(settings.sms_sender),
            limits=limits,
            carrier=carrier_from_settings(settings),
            argon2_slots=Argon2Gate(
                settings.argon2_concurrency,
                nice=settings.argon2_nice,
                duty=settings.argon2_duty,
            ),
        )


def carrier_from_settings(settings: Settings) -> CarrierProvider | None:
    """The CAMARA pull provider when one is configured (none by default)."""
    if not settings.carrier_url:
        return None
    from service.carrier.camara import CamaraProvider

    assert settings.carrier_token_url and settings.carrier_client_id
    assert settings.carrier_client_secret
    return CamaraProvider(
        settings.carrier_url,
        settings.carrier_token_url,
        settings.carrier_client_id,
        settings.carrier_client_secret,
    )
