"""SQLite WAL checkpoints on a background thread (``storage.db.Checkpointer``, started by
``idv serve``): request commits no longer copy and fsync the WAL on the one writer connection
every request waits for, the WAL stays short under continuous writes, and every committed row
stays."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Engine, text

from service.storage import db
from service.storage.db import Checkpointer


@pytest.fixture
def engine(database_url: str):  # type: ignore[no-untyped-def]
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only: PostgreSQL has no WAL for idv to mind")
    engine = db.make_engine(database_url)
    db.upgrade(engine)
    yield engine
    db.dispose(engine)


def _write(engine: Engine, n: int) -> None:
    """``n`` write transactions of one carrier event each (the shape of a request's commit)."""
    for i in range(n):
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO carrier_events (phone_hash, type, occurred_at, received_at) "
                    "VALUES (:h, 'sim_swap', '2026-11-23 10:00:00.000000', "
                    "'2026-11-23 10:00:00.000000')"
                ),
                {"h": f"h{i:06d}"},
            )


def _rows_in_database_file(engine: Engine) -> int:
    """Rows the database file itself holds, ignoring the WAL (``immutable=1`` reads the file
    only): what checkpoints have copied so far."""
    path = Path(engine.url.database or "")
    with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as raw:
        return int(raw.execute("SELECT count(*) FROM carrier_events").fetchone()[0])


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM carrier_events")).scalar_one())


def test_commits_leave_checkpoints_to_the_thread(engine: Engine) -> None:
    checkpointer = Checkpointer(engine, interval=3600)  # the thread never gets to a pass
    assert checkpointer.start()
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 4000

        _write(engine, 600)  # past SQLite's default 1,000-page checkpoint, short of 4,000
        assert _rows_in_database_file(engine) == 0  # no COMMIT copied the WAL

        frames = checkpointer.run_once()  # what the thread does every 0.1 s
        assert frames >= 1000
        assert _rows_in_database_file(engine) == 600
        assert _count(engine) == 600
    finally:
        checkpointer.stop()


def test_without_it_a_commit_checkpoints(engine: Engine) -> None:
    """The control: SQLite's default, which the checkpointer takes off the writer."""
    _write(engine, 600)
    assert _rows_in_database_file(engine) > 0


def test_the_wal_stays_short_under_continuous_writes(engine: Engine) -> None:
    """Writes that never pause: background PASSIVE checkpoints alone would never let the WAL
    start over; the writer's own checkpoint at ``wal_pages`` does."""
    checkpointer = Checkpointer(engine, interval=0.005, wal_pages=200)
    assert checkpointer.start()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            _write(engine, 1500)  # several thousand WAL frames in all
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    try:
        thread = threading.Thread(target=writer)
        thread.start()
        thread.join(120)
        assert not thread.is_alive() and not errors, errors
        checkpointer.run_once()
    finally:
        checkpointer.stop()
    assert checkpointer.passes >= 1
    assert checkpointer.largest_wal <= 500
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA integrity_check").scalar() == "ok"
    assert _count(engine) == 1500


def test_not_for_postgresql(database_url: str) -> None:
    if not database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL only")
    engine = db.make_engine(database_url)
    try:
        assert not Checkpointer(engine).start()
    finally:
        db.dispose(engine)
