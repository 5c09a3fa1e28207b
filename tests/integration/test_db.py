"""Engine behaviour the hot path relies on: SQLite reads beside the one writer connection, and
PostgreSQL connections pinged only after sitting idle."""

from __future__ import annotations

import threading
import time

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
