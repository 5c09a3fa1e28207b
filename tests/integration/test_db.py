"""Engine behaviour the hot path relies on: SQLite reads beside the one writer connection, and
PostgreSQL connections pinged only after sitting idle."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import text

from service.storage import db
from service.storage.db import read_only


def test_sqlite_reads_do_not_queue_behind_a_write_transaction(database_url: str) -> None:
    """The writer engine has one connection; an API-key lookup must not wait for it."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO carrier_events (phone_hash, type, occurred_at, "
                    "received_at) VALUES ('h', 'sim_swap', '2026-11-23 10:00:00.000000', "
                    "'2026-11-23 10:00:00.000000')"
                )
            )
        seen: list[int] = []
        with engine.begin() as writer:  # holds the only writer connection (BEGIN IMMEDIATE)
            writer.execute(text("DELETE FROM carrier_events"))

            def read() -> None:
                with read_only(engine) as conn:
                    seen.append(conn.execute(text("SELECT count(*) FROM carrier_events")).scalar())

            reader = threading.Thread(target=read)
            reader.start()
            reader.join(5)
            assert not reader.is_alive(), "the read waited for the write transaction"
        assert seen == [1]  # it saw the last committed state, not the uncommitted delete
        with read_only(engine) as conn, pytest.raises(Exception, match="(?i)readonly"):
            conn.execute(text("DELETE FROM carrier_events"))  # the reader cannot write
    finally:
        db.dispose(engine)


def test_postgresql_pings_a_connection_only_after_it_sat_idle(database_url: str) -> None:
    """No ping per checkout (a round trip per request); an idle connection whose server
    process died is replaced at checkout instead of failing the request."""
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    engine = db.make_engine(database_url, pool_size=1, max_overflow=0)
    pings: list[object] = []
    real_ping = engine.dialect.do_ping

    def counting_ping(dbapi_conn: object) -> bool:
        pings.append(dbapi_conn)
        return real_ping(dbapi_conn)

    engine.dialect.do_ping = counting_ping  # type: ignore[method-assign]
    try:
        with engine.connect() as conn:
            first_pid = conn.execute(text("SELECT pg_backend_pid()")).scalar()
        for _ in range(3):
            with engine.connect() as conn:  # checked out again at once: no ping
                assert conn.execute(text("SELECT pg_backend_pid()")).scalar() == first_pid
        assert pings == []

        killer = db.make_engine(database_url)
        with killer.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": first_pid})
        killer.dispose()
        time.sleep(db.IDLE_PING_SECONDS + 0.2)
        with engine.connect() as conn:  # idle long enough: pinged, found dead, replaced
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar() != first_pid
        assert len(pings) == 1  # the dead connection failed its ping; the new one is fresh
    finally:
        engine.dispose()


def test_fifo_lock_hands_over_in_arrival_order_and_never_to_a_latecomer():
    lock = db.FifoLock()
    assert lock.acquire(timeout=1)
    order: list[int] = []
    threads = []
    for i in range(4):
        t = threading.Thread(target=lambda i=i: (lock.acquire(timeout=10), order.append(i)))
        t.start()
        threads.append(t)
        _wait_until(lambda i=i: len(lock._waiters) == i + 1)
    lock.release()
    # The lock went to waiter 0, not back to us although this thread is the one running.
    assert lock.acquire(timeout=0.05) is False
    for i in range(len(threads)):
        _wait_until(lambda i=i: len(order) == i + 1)  # waiter i holds it now: pass it on
        lock.release()
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3]
    assert lock.acquire(timeout=0)  # the last release freed it
    lock.release()


def test_fifo_lock_timeout_leaves_no_waiter_behind():
    lock = db.FifoLock()
    assert lock.acquire(timeout=1)
    got: list[bool] = []
    t = threading.Thread(target=lambda: got.append(lock.acquire(timeout=0.05)))
    t.start()
    t.join(5)
    assert got == [False]
    lock.release()
    assert lock.acquire(timeout=0)  # free: the timed-out thread is not handed the lock
    lock.release()


def _wait_until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (another thread's progress) for up to 5 s."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_sqlite_writer_goes_to_waiting_threads_in_order(database_url: str) -> None:
    """The one writer connection: a thread that asks again right after its commit queues behind
    the threads already waiting (QueuePool let it, or any running thread, win the race: some
    requests then waited many times over; bench/RESULTS.md)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    order: list[str] = []

    def write(name: str) -> None:
        with engine.begin() as conn:
            conn.execute(text("SELECT 1"))
            order.append(name)

    try:
        pool = engine.pool
        assert isinstance(pool, db.FairWriterPool)
        threads = []
        with engine.begin() as conn:  # this thread holds the writer
            conn.execute(text("SELECT 1"))
            for i in range(3):
                t = threading.Thread(target=write, args=(f"waiter {i}",))
                t.start()
                threads.append(t)
                _wait_until(lambda i=i: len(pool._turn._waiters) == i + 1)
        write("latecomer")  # the thread that just committed, straight back for more
        for t in threads:
            t.join(5)
        assert order == ["waiter 0", "waiter 1", "waiter 2", "latecomer"]
    finally:
        db.dispose(engine)


def test_sqlite_writer_busy_past_the_pool_timeout_is_a_pool_timeout(tmp_path) -> None:
    """The HTTP layer answers a pool timeout with 503; the fair pool keeps raising it, and a
    timed-out wait does not leave the writer stuck."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    engine = create_engine(
        f"sqlite:///{tmp_path / 't.db'}",
        poolclass=db.FairWriterPool,
        pool_size=1,
        max_overflow=0,
        pool_timeout=0.05,
        connect_args={"check_same_thread": False},
    )
    try:
        errors: list[BaseException] = []

        def second() -> None:
            try:
                with engine.connect():
                    pass
            except BaseException as exc:  # noqa: BLE001 - checked below
                errors.append(exc)

        with engine.connect():
            t = threading.Thread(target=second)
            t.start()
            t.join(5)
        assert len(errors) == 1 and isinstance(errors[0], PoolTimeout)
        with engine.connect() as conn:  # the writer is free again
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_a_decision_reads_the_latest_carrier_event_of_each_type_by_index(
    ctx, user, http, auth
) -> None:  # type: ignore[no-untyped-def]
    """Carrier events are global and never deleted: a number with 20,000 of them made every
    decision about its subjects read them all (88 ms a verification on SQLite, 101 ms on
    PostgreSQL, against ~1 ms). A decision needs the latest of each type; the snapshot now
    asks for exactly that, one index seek per type."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from service.storage import subjects
    from service.storage.subjects import _SNAPSHOT
    from service.storage.tables import carrier_events

    phone_hash = ctx.keys.lookup_hash("phone", "+8613800138000")
    base = datetime(2025, 1, 1, tzinfo=UTC)
    rows = [
        {"type": kind, "occurred_at": base + timedelta(minutes=i)}
        for i in range(3000)
        for kind in ("sim_swap", "sim_lost")
    ] + [{"type": "number_recycled", "occurred_at": base - timedelta(days=1)}]
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(carrier_events),
            [dict(row, phone_hash=phone_hash, received_at=base) for row in rows],
        )
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("ANALYZE carrier_events")
    with ctx.engine.connect() as conn:
        client_id = http.get("/v1/client", headers=auth).json["client_id"]
        subject = subjects.get(conn, client_id, "alice")
        snap = subjects.snapshot(conn, subject)
        assert snap.carrier == {
            "sim_swap": base + timedelta(minutes=2999),
            "sim_lost": base + timedelta(minutes=2999),
            "number_recycled": base - timedelta(days=1),
        }
        plan = _SNAPSHOT._plan(conn.dialect)
        params = {
            **plan.defaults,
            "pk": subject.pk,
            "phone_hash": phone_hash,
            "client_id": client_id,
        }
        args = [params[n] for n in plan.positional] if plan.positional else params
        if conn.dialect.name == "sqlite":
            lines = [
                r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + plan.sql, tuple(args))
            ]
            seeks = [line for line in lines if "carrier_events" in line]
            assert len(seeks) == 4 and all("(phone_hash=? AND type=?)" in s for s in seeks), lines
            # Whether the tenant can attest, and a recovery set's unused codes: index seeks too.
            assert [s for s in lines if "attestation_keys" in s] == [
                "SEARCH attestation_keys USING INDEX sqlite_autoindex_attestation_keys_1 "
                "(client_id=?)"
            ], lines
            assert not [s for s in lines if s.startswith("SCAN") and "CONSTANT ROW" not in s]
        else:  # max() of an index prefix: an index scan per type that stops at one row
            lines = [r[0] for r in conn.exec_driver_sql("EXPLAIN " + plan.sql, args)]
            seeks = [line for line in lines if "using uq_carrier_events_event" in line]
            assert len(seeks) == 4 and not [s for s in lines if "Seq Scan on carrier" in s], lines
            assert [s for s in lines if "Index Only Scan using pk_attestation_keys" in s], lines


def test_the_sqlite_file_and_its_wal_and_shm_are_created_0600(tmp_path) -> None:
    """The database holds encrypted phones, factor secrets and the audit trail: owner-only,
    like the key file, whatever the umask (PIPL art. 51 access control)."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        path = tmp_path / "data" / "idv.db"
        engine = db.make_engine(f"sqlite:///{path}")
        db.upgrade(engine)
        with engine.begin() as conn:  # a write: the -wal and -shm files exist now
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        names = [path, path.with_name("idv.db-wal"), path.with_name("idv.db-shm")]
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in names}
        db.dispose(engine)
    finally:
        os.umask(old)
    assert modes == {"idv.db": 0o600, "idv.db-wal": 0o600, "idv.db-shm": 0o600}


def test_an_existing_world_readable_sqlite_file_is_tightened_at_start(tmp_path) -> None:
    import stat

    path = tmp_path / "idv.db"
    path.touch(mode=0o644)
    path.chmod(0o644)
    engine = db.make_engine(f"sqlite:///{path}")
    db.dispose(engine)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_disposing_of_the_writer_pool_never_closes_a_connection_in_use(tmp_path) -> None:
    """``engine.dispose()`` (the CLI's commands end with it) while a transaction holds the
    writer: that transaction still commits, its connection closes once it is back, and the
    next transaction gets a new one."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'd.db'}")
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE t (x INTEGER)"))
        with engine.begin() as conn:
            first = conn.connection.dbapi_connection
            conn.execute(text("INSERT INTO t VALUES (1)"))
            engine.pool.dispose()
            conn.execute(text("INSERT INTO t VALUES (2)"))  # still open, still ours
        with pytest.raises(sqlite3.ProgrammingError):  # closed once it came back
            first.execute("SELECT 1")
        with engine.begin() as conn:
            assert conn.connection.dbapi_connection is not first
            assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
        engine.pool.dispose()  # idle: closed at once
    finally:
        db.dispose(engine)
