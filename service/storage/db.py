"""Engine creation and schema migrations: SQLite (WAL, foreign keys) and PostgreSQL (psycopg 3)."""

from __future__ import annotations

import collections
import logging
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.pool import Pool, QueuePool

from service.storage.lean import run_plain

log = logging.getLogger("idv.storage")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


class FifoLock:
    """A lock that passes from holder to waiter in arrival order (``threading.Lock`` does not).

    ``release()`` hands the lock straight to the longest-waiting thread, so a thread that
    arrives later cannot take it first. With ``threading.Lock`` or a ``Condition`` it can: the
    releasing thread, or any other running one, takes the lock again before the woken waiter is
    scheduled, and under a steady load some waiters lose that race many times in a row.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._held = False
        self._waiters: collections.deque[threading.Lock] = collections.deque()

    def acquire(self, timeout: float) -> bool:
        """Take the lock, waiting at most ``timeout`` seconds; False if it did not come."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Lock()
            turn.acquire()
            self._waiters.append(turn)
        if turn.acquire(timeout=timeout):  # released by release(): the lock is ours now
            return True
        with self._mutex:
            try:
                self._waiters.remove(turn)
            except ValueError:  # handed to us between the timeout and here: ours after all
                return True
        return False

    def waiting(self) -> int:
        """How many threads are queued for the lock now."""
        return len(self._waiters)

    def release(self) -> None:
        """Hand the lock to the longest waiter, or free it."""
        with self._mutex:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._held = False


class FairWriterPool(Pool):
    """SQLite's one writer connection, handed to waiting threads first come, first served.

    ``QueuePool`` queues threads on a ``Condition``: when the writer comes back, the waiter it
    wakes must still win the pool's mutex against threads that are running, and on a busy
    worker (its request threads on one CPU, ``service.affinity``) the running thread usually
    wins. Some requests then waited for the writer again and again: TOTP proofs at 16
    connections had a p50 of 11 ms and a p99 of 48 ms. Taken through a ``FifoLock``, the
    writer goes to threads in the order they asked: p99 22 ms at the same throughput
    (bench/RESULTS.md).

    The pool holds exactly one connection record, and the ``FifoLock`` is the whole queue: a
    ``QueuePool`` of one behind the lock (as before) took a second mutex and condition at each
    checkout and check-in for nothing (issue 24). An invalidated record reconnects at its next
    checkout, as in any SQLAlchemy pool.
    """

    def __init__(
        self,
        creator: Any,
        pool_size: int = 1,
        max_overflow: int = 0,
        timeout: float = 30.0,
        **kw: Any,
    ) -> None:
        if pool_size != 1 or max_overflow != 0:
            raise ValueError("SQLite's writer pool holds exactly one connection")
        super().__init__(creator, **kw)
        self._timeout = timeout
        self._turn = FifoLock()
        self._record: Any = None

    def waiting(self) -> int:
        """How many threads are queued for the writer now."""
        return self._turn.waiting()

    def _do_get(self) -> Any:
        if not self._turn.acquire(self._timeout):
            raise PoolTimeout(f"the SQLite writer was busy for {self._timeout:g} s")
        try:
            if self._record is None:
                self._record = self._create_connection()
            return self._record
        except BaseException:
            self._turn.release()
            raise

    def _do_return_conn(self, record: Any) -> None:
        try:
            if record is not self._record:  # disposed of while it was out: close it now
                record.close()
        finally:
            self._turn.release()

    def dispose(self) -> None:
        """Close the connection, or, while a thread is using it, once that thread is done with
        it (as ``QueuePool`` closes only the connections it holds). The next checkout opens
        a new one."""
        record, self._record = self._record, None
        if record is not None and self._turn.acquire(0):
            try:
                record.close()
            finally:
                self._turn.release()

    def recreate(self) -> FairWriterPool:
        return self.__class__(
            self._creator,
            timeout=self._timeout,
            recycle=self._recycle,
            echo=self.echo,
            logging_name=self._orig_logging_name,
            reset_on_return=self._reset_on_return,
            pre_ping=self._pre_ping,
            _dispatch=self.dispatch,
            dialect=self._dialect,
        )

    def status(self) -> str:
        return f"FairWriterPool: {self.waiting()} waiting"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """Create the engine; on SQLite turn on WAL, foreign keys, a busy timeout and
    ``BEGIN IMMEDIATE`` so concurrent writers queue instead of failing."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            _owner_only(Path(parsed.database))
        # One connection per process: threads queue on the pool (a fast wake-up, in arrival
        # order) instead of sleeping in SQLite's busy handler, which made tail latency long.
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            poolclass=FairWriterPool,
            pool_size=1,
            max_overflow=0,
            pool_timeout=30,
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            # Deleted rows are overwritten with zeros, not left in free pages (an erased
            # subject must not be readable in the file: PIPL art. 47, issue 23).
            cur.execute("PRAGMA secure_delete=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            options = conn.get_execution_options()
            # idv_joined: a Connection joined to a lean.LeanTransaction, whose BEGIN IMMEDIATE
            # already opened the transaction.
            if not options.get("idv_read_only") and not options.get("idv_joined"):
                run_plain(conn, "BEGIN IMMEDIATE")  # every write: on the cursor, not execute()

        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", 5)
    kwargs.setdefault("connect_args", {"connect_timeout": 5})
    engine = create_engine(url, **kwargs)
    _ping_idle_connections(engine)
    return engine


IDLE_PING_SECONDS = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a pooled connection at checkout only when it sat idle for a while.

    SQLAlchemy's ``pool_pre_ping`` pings at *every* checkout: a database round trip per
    request, twice per proof. A connection in constant use proves itself with every statement,
    and when one fails with a disconnect SQLAlchemy invalidates the whole pool; what pre-ping
    is for is the connection that sat idle while the database restarted. So ping those only.
    A failed ping raises ``DisconnectionError``, and the pool replaces the connection (its
    documented pessimistic-disconnect hook).
    """

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idv_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idv_idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure means: use another connection
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


_READERS: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_READERS_LOCK = threading.Lock()
READER_POOL_SIZE = 8


def _reader(engine: Engine) -> Engine:
    """SQLite: a second engine on the same file for autocommit reads, several connections.

    The writer engine has one connection (see ``make_engine``); a read that queued for it would
    wait behind every write transaction of the process. In WAL mode readers never block the
    writer nor wait for it, so single-statement reads (the API-key lookup of every request)
    get their own small pool.
    """
    with _READERS_LOCK:
        reader = _READERS.get(engine)
        if reader is None:
            reader = create_engine(
                engine.url,
                connect_args={"timeout": 30, "check_same_thread": False},
                poolclass=QueuePool,
                pool_size=READER_POOL_SIZE,
                max_overflow=0,
                pool_timeout=30,
            )

            @event.listens_for(reader, "connect")
            def _on_connect(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.isolation_level = None  # autocommit: each statement its own snapshot
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA busy_timeout=30000")
                cur.execute("PRAGMA query_only=ON")
                cur.close()

            _READERS[engine] = reader
        return reader


def _owner_only(path: Path) -> None:
    """Create the SQLite file 0600 (like the key file), or take group and other bits off one.

    The database holds encrypted phones, factor secrets and the audit trail: no other local
    user may read it (PIPL art. 51 access control). SQLite gives the ``-wal`` and ``-shm`` files
    the mode of the database file (``robust_open`` in its unix VFS), so they follow; any that
    exist from an older start are tightened here too.
    """
    if not path.exists():
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    for file in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if file.stat().st_mode & 0o077:
                file.chmod(0o600)
        except FileNotFoundError:
            continue


def sqlite_file(engine: Engine) -> bool:
    """Whether ``engine`` is SQLite on a file (not PostgreSQL, not in memory)."""
    return engine.dialect.name == "sqlite" and engine.url.database not in (None, "", ":memory:")


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """A connection for one consistent single-statement read, without BEGIN/COMMIT."""
    if sqlite_file(engine):
        with _reader(engine).connect() as conn:  # the driver autocommits: we issue no BEGIN
            yield conn
    elif engine.dialect.name == "sqlite":
        with engine.connect() as conn:
            yield conn.execution_options(idv_read_only=True)
    else:
        with engine.connect() as conn:
            yield conn.execution_options(isolation_level="AUTOCOMMIT")


def dispose(engine: Engine) -> None:
    """Close every pooled connection of ``engine`` (and of its SQLite reader)."""
    reader = _READERS.pop(engine, None)
    if reader is not None:
        reader.dispose()
    engine.dispose()


def alembic_config(engine: Engine) -> Config:
    """An Alembic config pointing at the packaged migrations, bound to ``engine``."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    command.upgrade(alembic_config(engine), "head")


def ping(engine: Engine) -> None:
    """Raise if the database cannot be reached."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


class Checkpointer:
    """SQLite: WAL checkpoints mostly on a background thread, not in a request's COMMIT.

    SQLite checkpoints (copies the WAL into the database file, fsyncing both) in the COMMIT that
    finds the WAL at 1,000 pages or more, on the committing connection. In idv that is the
    process's one writer connection, so every request waits while it copies and syncs: about
    6 ms four times a second under a proof load, and 90-170 ms when the disk is slow
    (bench/RESULTS.md). With this thread (``idv serve`` starts one per worker):

    - its own connection runs a PASSIVE checkpoint every ``interval`` seconds: PASSIVE never
      waits for or blocks the writer, and readers keep reading;
    - the writer's own checkpoint moves to ``wal_pages`` (4,000). Under continuous writes a
      PASSIVE checkpoint never catches up (there is always a newer frame), and SQLite starts the
      WAL over only after a checkpoint that copied every frame; the writer's checkpoint does
      that, and finds only the frames of the last ``interval`` left to copy. It is also the
      backstop if this thread falls behind or dies.
    """

    def __init__(self, engine: Engine, interval: float = 0.1, wal_pages: int = 4_000) -> None:
        self.engine, self.interval, self.wal_pages = engine, interval, wal_pages
        self.passes = 0
        self.largest_wal = 0  # frames: the longest WAL a pass saw
        self._own: sqlite3.Connection | None = None  # the thread's own connection
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idv-checkpoints", daemon=True)

    def start(self) -> bool:
        """Move the writer's checkpoints and start the thread; False for PostgreSQL and
        in-memory SQLite (no WAL to mind)."""
        if not sqlite_file(self.engine):
            return False
        pragma = f"PRAGMA wal_autocheckpoint={int(self.wal_pages)}"

        @event.listens_for(self.engine, "connect")
        def _writer_pages(dbapi_conn: Any, _record: Any) -> None:  # a writer made later
            dbapi_conn.execute(pragma)

        with self.engine.connect() as conn:  # the writer that exists now
            _driver(conn).execute(pragma)
        self._thread.start()
        return True

    def stop(self) -> None:
        """Stop after the current pass and wait for the thread."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if not self._thread.is_alive():  # passes run without the thread leave a connection
            self._close_own()

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                try:
                    self.run_once()
                except Exception:  # noqa: BLE001 - keep checkpointing after a hiccup
                    log.exception("WAL checkpoint pass failed")
        finally:
            self._close_own()

    def _close_own(self) -> None:
        if self._own is not None:
            self._own.close()
            self._own = None

    def run_once(self) -> int:
        """One pass (what the thread does every ``interval``); returns the WAL's length in
        frames as this pass found it."""
        if self._own is None:
            self._own = sqlite3.connect(
                self.engine.url.database or "", isolation_level=None, check_same_thread=False
            )
        row = self._own.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        frames = int(row[1])  # (busy, frames in the WAL, frames copied)
        self.passes += 1
        self.largest_wal = max(self.largest_wal, frames)
        return frames


def scrub_wal(engine: Engine) -> None:
    """SQLite: copy the WAL into the database and truncate it, so the frames that held an
    erased subject's rows are gone from the WAL file too (issue 23). Best effort: a reader
    that holds its snapshot longer than the busy timeout leaves them to the next writes."""
    if not sqlite_file(engine):
        return
    with engine.connect() as conn:
        _driver(conn).execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()


def _driver(conn: Connection) -> Any:
    """The sqlite3 connection under a SQLAlchemy connection."""
    return conn.connection.driver_connection
