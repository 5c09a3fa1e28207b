"""Shared fixtures: a fresh database per test on SQLite (default) or PostgreSQL.

``IDV_TEST_DATABASE_URL`` selects PostgreSQL (tables truncated between tests);
``IDV_TEST_REDIS_URL`` selects Redis for rate limits and replay caches.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from service.app import create_app
from service.context import ServiceContext
from service.crypto.keyring import KeyRing, write_key_file
from service.settings import Settings, packaged_policy_file
from service.storage.db import dispose, make_engine, upgrade
from service.storage.tables import metadata
from service.usecases.clients import create_client


def _worker_services() -> None:
    """Under pytest-xdist (``-n``), give worker ``gwN`` (N > 0) its own PostgreSQL database
    (``<db>_gwN``, created on first use) and its own Redis databases (two numbers below the
    configured ones per worker), so one worker's TRUNCATE or FLUSHDB never reaches another's
    test. Worker ``gw0`` and a run without xdist use the configured URLs as they are."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker.removeprefix("gw") or 0)
    if n == 0:
        return
    pg = os.environ.get("IDV_TEST_DATABASE_URL")
    if pg:
        url = make_url(pg)
        name = f"{url.database}_gw{n}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        os.environ["IDV_TEST_DATABASE_URL"] = url.set(database=name).render_as_string(
            hide_password=False
        )
    for var, default in (
        ("IDV_TEST_REDIS_URL", None),
        ("IDV_TEST_RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379/14"),
    ):
        value = os.environ.get(var, default)
        if value:
            base, _, db = value.rpartition("/")
            os.environ[var] = f"{base}/{int(db or 0) - 2 * n}"


_worker_services()
PG_URL = os.environ.get("IDV_TEST_DATABASE_URL")
REDIS_URL = os.environ.get("IDV_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One key ring for the session (key generation is not what we test here)."""
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    write_key_file(path, KeyRing.generate())
    return path


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path | None:
    """A migrated SQLite file copied for every test (or PostgreSQL migrated once)."""
    if PG_URL:
        engine = make_engine(PG_URL)
        with engine.begin() as conn:
            metadata.drop_all(conn)
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        upgrade(engine)
        engine.dispose()
        return None
    path = tmp_path_factory.mktemp("template") / "idv.db"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def database_url(tmp_path: Path, template_db: Path | None) -> Iterator[str]:
    """A clean database for one test."""
    if PG_URL:
        yield PG_URL
        engine = make_engine(PG_URL)
        names = ", ".join(t.name for t in reversed(metadata.sorted_tables))
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        engine.dispose()
        return
    assert template_db is not None
    db = tmp_path / "idv.db"
    shutil.copy(template_db, db)
    yield f"sqlite:///{db}"


@pytest.fixture
def redis_url() -> str | None:
    """The test Redis database, emptied before each test (counters must not leak between tests)."""
    if REDIS_URL:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        client.flushdb()
        client.close()
    return REDIS_URL


@pytest.fixture
def settings(tmp_path: Path, database_url: str, key_file: Path, redis_url: str | None) -> Settings:
    """Settings for one test: cheap argon2 parameters, an SMS file sink under tmp_path."""
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        key_file=key_file,
        redis_url=redis_url,
        policy_file=packaged_policy_file(),
        sms_sender=f"file:{tmp_path / 'sms.jsonl'}",
        argon2_time_cost=1,
        argon2_memory_kib=1024,
    )


@pytest.fixture
def ctx(settings: Settings) -> Iterator[ServiceContext]:
    """The wired service."""
    context = ServiceContext.build(settings)
    yield context
    dispose(context.engine)


@pytest.fixture
def app(ctx: ServiceContext):  # type: ignore[no-untyped-def]
    """The Flask app over ``ctx``."""
    application = create_app(context=ctx)
    application.config["TESTING"] = True
    return application


@pytest.fixture
def http(app):  # type: ignore[no-untyped-def]
    """Flask's test client."""
    return app.test_client()


@pytest.fixture
def api_key(ctx: ServiceContext) -> str:
    """A key with the ``verify`` scope."""
    return create_client(ctx, "tenant-a", ["verify"])[1]


@pytest.fixture
def auth(api_key: str) -> dict[str, str]:
    """Authorization header for ``api_key``."""
    return {"Authorization": f"Bearer {api_key}"}


@pytest.fixture
def other_auth(ctx: ServiceContext) -> dict[str, str]:
    """Authorization header of a second tenant."""
    return {"Authorization": f"Bearer {create_client(ctx, 'tenant-b', ['verify'])[1]}"}


@pytest.fixture
def clock():  # type: ignore[no-untyped-def]
    """A ticking clock the test can move on (time-machine), shared by server and test."""
    import time_machine

    with time_machine.travel(datetime.now(UTC), tick=True) as traveller:
        yield traveller


@pytest.fixture
def user(http, auth, settings, clock):  # type: ignore[no-untyped-def]
    """A subject ``alice`` with a phone (its SMS factor) and nothing else yet."""
    from tests.http.flow import User

    u = User(http, auth, sms_file=Path(settings.sms_sender.split(":", 1)[1]), clock=clock)
    assert u.put().status_code == 201
    return u


@pytest.fixture
def carrier_auth(ctx: ServiceContext) -> dict[str, str]:
    """Authorization header of a carrier feed (scope ``carrier``)."""
    return {"Authorization": f"Bearer {create_client(ctx, 'carrier', ['carrier'])[1]}"}


class Trickler:
    """An HTTP peer on 127.0.0.1 that reads a request, then answers ``200`` with a body one
    byte every ``interval`` seconds: no socket timeout ever fires, yet the answer takes as
    long as it likes (a slow or hostile SMS gateway, webhook endpoint or carrier)."""

    def __init__(self, interval: float = 0.2) -> None:
        import socket
        import threading

        self.interval = interval
        self.answer = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b"x" * 40
        self.requests = 0
        self._stop = threading.Event()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn) -> None:  # type: ignore[no-untyped-def]
        with conn:
            try:
                conn.recv(65536)
                self.requests += 1
                for i in range(len(self.answer)):
                    if self._stop.wait(self.interval):
                        return
                    conn.sendall(self.answer[i : i + 1])
            except OSError:
                return  # the client hung up: what a deadline does

    def close(self) -> None:
        self._stop.set()
        self._sock.close()


@pytest.fixture
def trickler() -> Iterator[Trickler]:
    """A peer whose answer trickles in for ~16 s (see ``Trickler``)."""
    peer = Trickler()
    yield peer
    peer.close()
