"""How the retention purge shares the database with the hot path (issue 23: it never blocks it).

On SQLite a batch holds the one writer, so a batch is sized to a time budget and the purge backs
off when a request had to wait for it; ``idv serve`` stops it after the current batch. Driven with
the real purge over the test's database (SQLite, or PostgreSQL where the budget is passed).
"""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import event, insert, select

from service.storage.tables import verifications
from service.usecases import purge as module
from service.usecases.purge import purge

DAY = 24 * 3600


def _old_verifications(user, ctx, count: int) -> None:
    """``count`` finished verifications of ``user``, past their 30 days once the clock moves."""
    vid = user.start("login").json["verification_id"]
    with ctx.engine.begin() as conn:
        row = conn.execute(select(verifications).where(verifications.c.id == vid)).one()._asdict()
        conn.execute(
            insert(verifications),
            [{**row, "id": f"vf_copy{i}", "status": "denied"} for i in range(count)],
        )
    user.advance(31 * DAY)


def _batches(ctx):
    """The rows each DELETE of verifications removed, and when it started (perf_counter)."""
    sizes: list[int] = []
    starts: list[float] = []

    def before(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if statement.startswith("DELETE FROM verifications"):
            starts.append(time.perf_counter())

    def after(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if statement.startswith("DELETE FROM verifications"):
            sizes.append(cursor.rowcount)

    event.listen(ctx.engine, "before_cursor_execute", before)
    event.listen(ctx.engine, "after_cursor_execute", after)
    return (
        sizes,
        starts,
        lambda: (
            event.remove(ctx.engine, "before_cursor_execute", before),
            event.remove(ctx.engine, "after_cursor_execute", after),
        ),
    )


def test_a_batch_halves_past_its_writer_budget_and_grows_back_under_it(user, ctx):
    _old_verifications(user, ctx, 300)
    sizes, _, done = _batches(ctx)
    try:
        removed = purge(ctx, budget=0.0)  # every batch takes longer than no time at all
    finally:
        done()
    assert removed is not None and removed["verifications"] == 301
    first = module.SQLITE_FIRST_BATCH
    assert sizes[:4] == [first, first // 2, first // 4, module.MIN_BATCH]
    assert set(sizes[3:-2]) == {module.MIN_BATCH}  # never below the floor (then the rest, 0)

    _old_verifications(user, ctx, 400)
    sizes, _, done = _batches(ctx)
    try:
        purge(ctx, budget=60.0)  # every batch well inside its budget: a quarter more each time
    finally:
        done()
    assert sizes[:3] == [first, first + first // 4, first + first // 4 + (first + first // 4) // 4]


def test_the_purge_rests_longer_after_a_request_waited_for_its_batch(user, ctx):
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's one writer (FairWriterPool); PostgreSQL locks rows")
    _old_verifications(user, ctx, 300)
    sizes, starts, done = _batches(ctx)
    requests: list[threading.Thread] = []

    def request() -> None:
        with ctx.engine.begin():
            pass

    def a_request_waits(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if statement.startswith("DELETE FROM verifications") and not requests:
            requests.append(threading.Thread(target=request))
            requests[0].start()
            deadline = time.monotonic() + 5
            while ctx.engine.pool.waiting() == 0 and time.monotonic() < deadline:
                time.sleep(0.001)  # the request is queued for the writer the batch holds

    event.listen(ctx.engine, "before_cursor_execute", a_request_waits)
    try:
        purge(ctx, pause=module.PAUSE, budget=60.0)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", a_request_waits)
        done()
        for request in requests:
            request.join(5)
    assert len(starts) >= 3, sizes
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= module.YIELD_REST  # it waited: the purge stood back
    assert all(gap < module.YIELD_REST for gap in gaps[1:])  # nobody waited: its usual pace


def test_a_stopped_purge_ends_after_its_current_batch(user, ctx):
    _old_verifications(user, ctx, 300)
    stop = threading.Event()

    def stop_now(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        if statement.startswith("DELETE FROM verifications"):
            stop.set()  # idv serve shutting down while this batch runs

    event.listen(ctx.engine, "after_cursor_execute", stop_now)
    try:
        removed = purge(ctx, stop=stop, budget=60.0)
    finally:
        event.remove(ctx.engine, "after_cursor_execute", stop_now)
    assert removed is not None and removed["verifications"] == module.SQLITE_FIRST_BATCH
