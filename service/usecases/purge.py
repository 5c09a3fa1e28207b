"""The retention purge (issue 23; API.md "Retention"): nothing kept longer than its purpose.

Every kind is removed in batches of ``BATCH`` rows, each batch one short transaction (a
select of the next keys by an index on the time the record stopped mattering, and one delete
by those keys), so on SQLite the writer is held a few milliseconds at a time and a proof
waiting for it waits no longer than one batch. On PostgreSQL one instance purges at a time
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

from sqlalchemy import ColumnElement, Connection, Table, and_, delete, exists, func, or_, select
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
# Inside ``idv serve`` the purge sleeps this many times as long as its last batch took (at
# least ``pause``): it holds the writer (SQLite) or its row locks at most a tenth of the time,
# so a proof waits for at most one short batch and the proof rate stays above 90 %.
DUTY_FACTOR = 9
# The shortest rest between two batches inside ``idv serve`` (seconds).
PAUSE = 0.01
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


def _key_of(sweep: _Sweep) -> Any:
    columns = [sweep.table.c[name] for name in sweep.keys]
    return columns[0] if len(columns) == 1 else tuple_(*columns)


def _sweep_batch(conn: Connection, sweep: _Sweep, batch: int) -> int:
    """Remove up to ``batch`` rows of one sweep in the caller's transaction."""
    columns = [sweep.table.c[name] for name in sweep.keys]
    found = conn.execute(select(*columns).where(sweep.when).limit(batch)).all()
    if not found:
        return 0
    key = _key_of(sweep)
    values = [row[0] for row in found] if len(columns) == 1 else [tuple(row) for row in found]
    conn.execute(delete(sweep.table).where(key.in_(values)))
    return len(found)


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
) -> dict[str, int] | None:
    """Remove what is past its retention; return the rows removed (or, with ``dry_run``, that
    would be) per kind, or None when another instance is purging. When ``stop`` is set the
    purge ends after its current batch (``idv serve`` shutting down), with what it removed."""
    stop = stop or threading.Event()
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
                count = _repeat(
                    ctx, lambda conn, s=sweep: _sweep_batch(conn, s, batch), pause, stop
                )
            removed[sweep.kind] = removed.get(sweep.kind, 0) + count
        removed["audit"] = _purge_audit(ctx, retention, now, dry_run, batch, pause, stop)
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


def _repeat(
    ctx: ServiceContext,
    step: Callable[[Connection], int],
    pause: float,
    stop: threading.Event,
) -> int:
    """Run ``step`` in its own short transaction until it removes nothing or ``stop`` is set."""
    total = 0
    while not stop.is_set():
        started = time.perf_counter()
        with ctx.engine.begin() as conn:
            done = step(conn)
        total += done
        if not done:
            return total
        if pause:  # let the hot path's writers in between batches
            stop.wait(max(pause, DUTY_FACTOR * (time.perf_counter() - started)))
    return total


def _purge_audit(
    ctx: ServiceContext,
    retention: Retention,
    now: datetime,
    dry_run: bool,
    batch: int,
    pause: float,
    stop: threading.Event,
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
            lambda conn, w=writer: prune_batch(conn, w, cutoff, keys[profile], profile, now, batch),
            pause,
            stop,
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
