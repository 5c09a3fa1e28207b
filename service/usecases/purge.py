"""The retention purge (issue 23; API.md "Retention"): nothing kept longer than its purpose.

Every kind is removed in batches, each batch one short transaction (one DELETE of the rows a
subquery picks by an index on the time the record stopped mattering). On SQLite a batch holds
the one writer, and a proof that needs it waits for the batch: a batch is sized to hold it
about ``SQLITE_BUDGET`` at most, and inside ``idv serve`` the purge rests between batches and
stands back for ``YIELD_REST`` after a batch a request had to wait for, so it takes the writer
when the hot path leaves it free. On PostgreSQL one instance purges at a time
(``pg_try_advisory_lock``); the others skip their turn.

Replay records are never removed while what they guard is alive, whatever ``IDV_RETENTION``
says (``service.domain.retention``): a TOTP step until its ±1 window is over, a used assertion
until its ``exp``, an attestation ``jti`` until ``iat`` + 360 s. Carrier events are kept at
least as long as the longest window of the policy, and the latest of each type per phone
always (the recycled-number and SIM-change rules compare against it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Table,
    and_,
    delete,
    exists,
    func,
    literal_column,
    or_,
    select,
)
from sqlalchemy import text as sql_text
from sqlalchemy.sql import tuple_

from service.context import ServiceContext
from service.domain.policy_file import Policy
from service.domain.retention import ATTESTATION_JTI_ALIVE, TOTP_ALIVE, Retention
from service.storage import audit
from service.storage.audit_prune import old_writers, prune_batch
from service.storage.erasures import KEPT as ERASED_PHONES_KEPT
from service.storage.tables import (
    attestation_jtis,
    audit_log,
    carrier_events,
    challenges,
    erased_phones,
    idempotency_keys,
    totp_used_steps,
    used_assertions,
    verifications,
    webhook_outbox,
)

log = logging.getLogger("idv.purge")

BATCH = 250
# SQLite has one writer, and a proof that needs it while a batch holds it waits for the whole
# batch. Issue 23 allows "a few milliseconds at a time": a batch's size halves after a batch
# that held the writer longer than this (not below ``MIN_BATCH``: a transaction's fixed cost,
# about 0.25 ms, would dominate) and grows by a quarter, up to ``BATCH``, after one that took
# less than half. How *often* a proof waits is ``YIELD_REST``'s job (bench/RESULTS.md).
SQLITE_BUDGET = 0.002
SQLITE_FIRST_BATCH = 100
MIN_BATCH = 16
# Inside ``idv serve`` the purge sleeps this many times as long as its last batch took (at
# least ``pause``): it holds the writer (SQLite) or its row locks at most a tenth of the time,
# so a proof waits for at most one short batch and the proof rate stays above 90 %.
DUTY_FACTOR = 9
# The shortest rest between two batches inside ``idv serve`` (seconds).
PAUSE = 0.01
# The rest after a batch that made a request wait for SQLite's writer: the purge backs off while
# the hot path is busy, so at most a few requests a second ever wait for a batch (p99 stays put
# while they are fewer than one in a hundred) and it runs at full pace when the service is idle.
YIELD_REST = 0.25
# Undelivered webhooks are retried for at least this long before the purge takes them.
UNDELIVERED_KEPT = timedelta(days=30)
# The advisory lock's key on PostgreSQL: "idv-purge" in ASCII, as a bigint.
ADVISORY_KEY = 0x6964762D7075
AUDIT_MAC_PURPOSE = "audit-mac"


@dataclass(frozen=True)
class _Sweep:
    """One table's removable rows: its key columns and the condition that marks them old."""

    kind: str
    table: Table
    keys: tuple[str, ...]
    when: ColumnElement[bool]


def longest_window(policy: Policy) -> timedelta:
    """The longest signal window of any action (how far back a decision looks)."""
    windows = [timedelta(0)]
    for rule in policy.actions.values():
        for value in (
            rule.sms_blocked_after_sim_change,
            rule.hold_after_sim_change,
            rule.cooling_off,
            rule.delay,
        ):
            if value is not None:
                windows.append(value)
    return max(windows)


def _sweeps(retention: Retention, policy: Policy, now: datetime) -> list[_Sweep]:
    """What each kind removes at ``now``."""
    replay = retention["replay"]
    later = carrier_events.alias("later")
    carrier_cut = now - max(retention["carrier_events"], longest_window(policy))
    return [
        _Sweep(
            "verifications",
            verifications,
            ("id",),
            and_(
                verifications.c.expires_at < now - retention["verifications"],
                or_(
                    verifications.c.completed_at.is_(None),
                    verifications.c.completed_at < now - retention["verifications"],
                ),
            ),
        ),
        _Sweep(
            "challenges",
            challenges,
            ("id",),
            challenges.c.expires_at < now - retention["challenges"],
        ),
        _Sweep(
            "replay",
            totp_used_steps,
            ("factor_id", "step"),
            totp_used_steps.c.used_at < now - TOTP_ALIVE - replay,
        ),
        _Sweep("replay", used_assertions, ("jti",), used_assertions.c.expires_at < now - replay),
        _Sweep(
            "replay",
            attestation_jtis,
            ("client_id", "jti"),
            attestation_jtis.c.used_at < now - ATTESTATION_JTI_ALIVE - replay,
        ),
        _Sweep(
            "webhooks",
            webhook_outbox,
            ("id",),
            or_(
                webhook_outbox.c.delivered_at < now - retention["webhooks"],
                and_(
                    webhook_outbox.c.delivered_at.is_(None),
                    webhook_outbox.c.created_at
                    < now - max(retention["webhooks"], UNDELIVERED_KEPT),
                ),
            ),
        ),
        _Sweep(
            "carrier_events",
            carrier_events,
            ("id",),
            and_(
                # Found by the time it was received (the index), kept by when it occurred.
                carrier_events.c.received_at < carrier_cut,
                carrier_events.c.occurred_at < carrier_cut,
                exists().where(
                    later.c.phone_hash == carrier_events.c.phone_hash,
                    later.c.type == carrier_events.c.type,
                    later.c.occurred_at > carrier_events.c.occurred_at,
                ),
            ),
        ),
        _Sweep(
            "idempotency",
            idempotency_keys,
            ("id",),
            idempotency_keys.c.created_at < now - retention["idempotency"],
        ),
        # Issue 19: an erased phone's keyed hash, 30 days (service.storage.erasures).
        _Sweep(
            "erased_phones",
            erased_phones,
            ("id",),
            erased_phones.c.erased_at <= now - ERASED_PHONES_KEPT,
        ),
    ]


def _sweep_batch(conn: Connection, sweep: _Sweep, batch: int) -> int:
    """Remove up to ``batch`` rows of one sweep in the caller's transaction: one DELETE of the
    rows a subquery picks through the sweep's index. The keys never come back to Python, so a
    batch is one statement of Python work (the GIL is shared with the request threads) and, on
    SQLite, a walk of the table's b-tree by ``rowid`` rather than a lookup by primary key."""
    if conn.dialect.name == "sqlite":
        key: Any = literal_column("rowid")
        picked = select(key)
    else:
        columns = [sweep.table.c[name] for name in sweep.keys]
        key = columns[0] if len(columns) == 1 else tuple_(*columns)
        picked = select(*columns)
    chosen = picked.select_from(sweep.table).where(sweep.when).limit(batch).correlate(None)
    return int(conn.execute(delete(sweep.table).where(key.in_(chosen))).rowcount)


def _count(conn: Connection, sweep: _Sweep) -> int:
    return int(
        conn.execute(select(func.count()).select_from(sweep.table).where(sweep.when)).scalar_one()
    )


@contextmanager
def _only_purger(ctx: ServiceContext) -> Iterator[bool]:
    """True when this process may purge now: on PostgreSQL it holds the advisory lock for the
    run on a connection of its own; elsewhere a process-wide lock."""
    if ctx.engine.dialect.name != "postgresql":
        with _local_lock(ctx) as held:
            yield held
        return
    with ctx.engine.connect() as conn:
        held = bool(
            conn.execute(sql_text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar()
        )
        conn.commit()
        try:
            yield held
        finally:
            if held:
                conn.execute(sql_text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                conn.commit()


_LOCAL = threading.Lock()


@contextmanager
def _local_lock(_ctx: ServiceContext) -> Iterator[bool]:
    held = _LOCAL.acquire(blocking=False)
    try:
        yield held
    finally:
        if held:
            _LOCAL.release()


def purge(
    ctx: ServiceContext,
    *,
    dry_run: bool = False,
    batch: int = BATCH,
    pause: float = 0.0,
    now: datetime | None = None,
    stop: threading.Event | None = None,
    budget: float | None = None,
) -> dict[str, int] | None:
    """Remove what is past its retention; return the rows removed (or, with ``dry_run``, that
    would be) per kind, or None when another instance is purging. When ``stop`` is set the
    purge ends after its current batch (``idv serve`` shutting down), with what it removed.
    ``budget``: the seconds a batch may hold the writer (default ``SQLITE_BUDGET`` on SQLite,
    none elsewhere: PostgreSQL locks rows, not the database)."""
    stop = stop or threading.Event()
    if budget is None and ctx.engine.dialect.name == "sqlite":
        budget = SQLITE_BUDGET
    pace = _Pace(batch, budget, pause, stop)
    now = now or ctx.clock()
    retention = ctx.settings.retention
    removed: dict[str, int] = {}
    with _only_purger(ctx) as held:
        if not held:
            return None
        for sweep in _sweeps(retention, ctx.policy, now):
            if dry_run:
                with ctx.engine.connect() as conn:
                    count = _count(conn, sweep)
            else:
                count = _repeat(ctx, lambda conn, size, s=sweep: _sweep_batch(conn, s, size), pace)
            removed[sweep.kind] = removed.get(sweep.kind, 0) + count
        removed["audit"] = _purge_audit(ctx, retention, now, dry_run, pace)
    if not dry_run and any(removed.values()):
        with ctx.engine.begin() as conn:
            audit.append(
                conn,
                event="retention.purged",
                outcome="ok",
                now=now,
                detail={"removed": removed, "retention": retention.describe()},
            )
    return removed


class _Pace:
    """The size of the next batch and the rest after it, learned from the batches so far."""

    def __init__(
        self, most: int, budget: float | None, pause: float, stop: threading.Event
    ) -> None:
        self.most, self.budget, self.pause, self.stop = most, budget, pause, stop
        self.size = most if budget is None else min(most, SQLITE_FIRST_BATCH)

    def took(self, rows: int, seconds: float, waited: bool) -> None:
        """A batch of ``rows`` held the writer ``seconds`` (and made a request wait for it, when
        ``waited``): size the next one, then rest."""
        if self.budget is not None:
            if seconds > self.budget:
                self.size = max(MIN_BATCH, self.size // 2)
            elif seconds < self.budget / 2 and rows == self.size:
                self.size = min(self.most, self.size + max(1, self.size // 4))
        if self.pause:  # let the hot path's writers in between batches
            rest = max(self.pause, DUTY_FACTOR * seconds)
            self.stop.wait(max(rest, YIELD_REST) if waited else rest)


def _writers_waiting(ctx: ServiceContext) -> int:
    """Requests queued for SQLite's one writer connection (``FairWriterPool``); 0 elsewhere."""
    waiting = getattr(ctx.engine.pool, "waiting", None)
    return int(waiting()) if waiting is not None else 0


def _repeat(ctx: ServiceContext, step: Callable[[Connection, int], int], pace: _Pace) -> int:
    """Run ``step`` in its own short transaction until it removes nothing or the purge is
    stopped."""
    total = 0
    while not pace.stop.is_set():
        started = time.perf_counter()
        with ctx.engine.begin() as conn:
            done = step(conn, pace.size)
            waited = _writers_waiting(ctx) > 0
        total += done
        if not done:
            return total
        pace.took(done, time.perf_counter() - started, waited)
    return total


def _purge_audit(
    ctx: ServiceContext,
    retention: Retention,
    now: datetime,
    dry_run: bool,
    pace: _Pace,
) -> int:
    """Prune each chain's entries older than the ``audit`` retention, checkpoint sealed."""
    cutoff = now - retention["audit"]
    with ctx.engine.connect() as conn:
        writers = old_writers(conn, cutoff)
        if dry_run:
            return int(
                conn.execute(
                    select(func.count()).select_from(audit_log).where(audit_log.c.at < cutoff)
                ).scalar_one()
            )
    keys = ctx.keys.derived_keys(AUDIT_MAC_PURPOSE)
    profile = ctx.settings.crypto_profile
    total = 0
    for writer in writers:
        total += _repeat(
            ctx,
            lambda conn, size, w=writer: prune_batch(
                conn, w, cutoff, keys[profile], profile, now, size
            ),
            pace,
        )
    return total


class Purger:
    """A daemon thread that purges every ``interval`` seconds inside ``idv serve``."""

    def __init__(self, ctx: ServiceContext, interval: float = 600.0, pause: float = PAUSE) -> None:
        self.ctx, self.interval, self.pause = ctx, interval, pause
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idv-purge", daemon=True)

    def start(self) -> None:
        """Start purging."""
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the current batch, and wait (at most ``timeout`` s) for it to end."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                removed = purge(self.ctx, pause=self.pause, stop=self._stop)
                if removed and any(removed.values()):
                    log.info("purged %s", removed)
            except Exception:  # noqa: BLE001 - keep purging after a database hiccup
                log.exception("retention purge failed")
