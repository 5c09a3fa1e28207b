"""Faults against a real ``idv serve``: kill -9 under load, Redis and the database going away.

A dependency that is down answers 503 with the JSON error body, quickly, never a hang or a
500; the service recovers by itself when it comes back. A crash loses nothing acknowledged.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, func, select

from tests.e2e.conftest import IDV, free_port

pytestmark = pytest.mark.slow
QUICK = 3.0  # seconds: "quickly" (Redis timeout 0.5 s, one retry; the pool's connect timeout)


class Proxy:
    """A TCP forwarder to ``target`` that the test can cut and restore (a dependency going
    down and coming back, without touching the shared PostgreSQL or Redis)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.port = target, free_port()
        self._conns: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.up()

    def up(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def down(self) -> None:
        """Refuse new connections and reset the open ones."""
        if self._listener is not None:
            # shutdown() wakes the thread blocked in accept() (close() alone does not on Linux).
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        for conn in self._conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass
        self._conns.clear()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.close()


def _serve(env: dict[str, str], log: Path, *extra: str) -> tuple[str, subprocess.Popen]:
    port = free_port()
    handle = open(log, "a")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [*IDV, "serve", "--host", "127.0.0.1", "--port", str(port), *extra],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: kill -9 reaches master and workers
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    pytest.fail(f"idv serve did not start:\n{log.read_text()}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _key(env: dict[str, str], *scopes: str) -> dict[str, str]:
    args = ["clients", "create", "faults"]
    for scope in scopes:
        args += ["--scope", scope]
    out = subprocess.run([*IDV, *args], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}


@pytest.fixture
def env(tmp_path: Path, database_url: str) -> Iterator[dict[str, str]]:
    """The environment of one idv: its own data dir and the test database; no Redis."""
    values = {
        **os.environ,
        "IDV_DATA_DIR": str(tmp_path / "data"),
        "IDV_DATABASE_URL": database_url,
        "IDV_SMS_SENDER": f"file:{tmp_path / 'sms.jsonl'}",
    }
    values.pop("IDV_REDIS_URL", None)
    yield values


def _assert_503(response: httpx.Response, elapsed: float) -> None:
    assert response.status_code == 503, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"] == "service_unavailable", response.text
    assert elapsed < QUICK, elapsed


def _timed(fn, *args, **kwargs) -> tuple[httpx.Response, float]:  # type: ignore[no-untyped-def]
    t0 = time.monotonic()
    r = fn(*args, **kwargs)
    return r, time.monotonic() - t0


# -- crash safety ------------------------------------------------------------------------------
def test_kill_9_under_load_loses_nothing_acknowledged(env: dict[str, str], tmp_path: Path) -> None:
    """kill -9 of master and workers during enrolments and carrier events: after a restart every
    acknowledged subject, factor and event is there and ``idv audit verify`` exits 0."""
    url, proc = _serve(env, tmp_path / "serve.log")
    verify, carrier = _key(env, "verify"), _key(env, "carrier")
    acked_subjects: list[str] = []
    acked_events: list[str] = []
    stop = threading.Event()

    def enrol(n: int) -> None:
        with httpx.Client(base_url=url, timeout=5) as http:
            for i in range(400):
                if stop.is_set():
                    return
                sid = f"w{n}-{i}"
                try:
                    r = http.put(
                        f"/v1/subjects/{sid}", json={"phone": f"+861380{n}{i:06d}"}, headers=verify
                    )
                    if r.status_code != 201:
                        continue
                    r = http.post(
                        f"/v1/subjects/{sid}/factors", json={"type": "totp"}, headers=verify
                    )
                    if r.status_code == 201:
                        acked_subjects.append(sid)
                except httpx.HTTPError:
                    return

    def events(n: int) -> None:
        with httpx.Client(base_url=url, timeout=5) as http:
            for i in range(400):
                if stop.is_set():
                    return
                at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - i - 1))
                body = {"phone": f"+861390{n}{i:06d}", "type": "sim_swap", "occurred_at": at}
                try:
                    if (
                        http.post("/v1/carrier-events", json=body, headers=carrier).status_code
                        == 202
                    ):
                        acked_events.append(body["phone"])
                except httpx.HTTPError:
                    return

    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(enrol, 1), pool.submit(enrol, 2), pool.submit(events, 3)]
        time.sleep(2.0)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        stop.set()
        for f in futures:
            f.result()
    assert acked_subjects and acked_events, "no load was acknowledged before the kill"

    url, proc = _serve(env, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=url, timeout=5) as http:
            for sid in acked_subjects:
                r = http.get(f"/v1/subjects/{sid}/factors", headers=verify)
                assert r.status_code == 200 and [f["type"] for f in r.json()["factors"]] == [
                    "totp"
                ], (sid, r.text)
        from service.storage.tables import carrier_events

        engine = create_engine(env["IDV_DATABASE_URL"])
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(carrier_events)).scalar_one()
        engine.dispose()
        assert stored >= len(acked_events)
        out = subprocess.run(
            [*IDV, "audit", "verify"], env=env, capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stdout + out.stderr
    finally:
        _stop(proc)


# -- Redis away --------------------------------------------------------------------------------
def test_redis_unreachable_is_a_quick_503(env: dict[str, str], tmp_path: Path) -> None:
    """IDV_REDIS_URL at a closed port: every limited request is 503 JSON at once; /healthz 200."""
    key_env = dict(env)
    verify = _key(key_env, "verify")
    env = {**env, "IDV_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    url, proc = _serve(env, tmp_path / "serve.log", "--workers", "1")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/healthz").status_code == 200
            r, elapsed = _timed(
                http.put, "/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=verify
            )
            _assert_503(r, elapsed)
            r, elapsed = _timed(
                http.post,
                "/v1/verifications/vf_x/proofs",
                json={"factor": "totp", "code": "123456"},
                headers=verify,
            )
            _assert_503(r, elapsed)
    finally:
        _stop(proc)


def _redis_proxy(env: dict[str, str], redis_url: str) -> tuple[Proxy, dict[str, str]]:
    from urllib.parse import urlsplit

    target = urlsplit(redis_url)
    proxy = Proxy((target.hostname or "127.0.0.1", target.port or 6379))
    return proxy, {**env, "IDV_REDIS_URL": f"redis://127.0.0.1:{proxy.port}{target.path or '/0'}"}


needs_redis = pytest.mark.skipif(
    not os.environ.get("IDV_TEST_REDIS_URL"), reason="needs IDV_TEST_REDIS_URL"
)


@needs_redis
def test_redis_going_away_and_back(env: dict[str, str], tmp_path: Path, redis_url: str) -> None:
    """Redis cut mid-run: 503 JSON quickly, /healthz still 200; back by itself once it returns."""
    proxy, env = _redis_proxy(env, redis_url)
    verify = _key(env, "verify")
    url, proc = _serve(env, tmp_path / "serve.log", "--workers", "1")
    body = {"subject_id": "alice", "action": "login"}
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            phone = {"phone": "+8613800138000"}
            assert http.put("/v1/subjects/alice", json=phone, headers=verify).status_code == 201
            proxy.down()
            for _ in range(3):
                r, elapsed = _timed(http.post, "/v1/verifications", json=body, headers=verify)
                _assert_503(r, elapsed)
            assert http.get("/healthz").status_code == 200
            proxy.up()
            r = http.post("/v1/verifications", json=body, headers=verify)
            assert r.status_code == 201, r.text
    finally:
        _stop(proc)
        proxy.down()


@needs_redis
def test_readyz_fails_while_redis_is_down(
    env: dict[str, str], tmp_path: Path, redis_url: str
) -> None:
    """With IDV_REDIS_URL set and Redis away, /readyz is 503 JSON (quickly)."""
    proxy, env = _redis_proxy(env, redis_url)
    url, proc = _serve(env, tmp_path / "serve.log", "--workers", "1")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            proxy.down()
            r, elapsed = _timed(http.get, "/readyz")
            _assert_503(r, elapsed)
    finally:
        _stop(proc)
        proxy.down()


# -- the database away -------------------------------------------------------------------------
@pytest.mark.skipif(
    not os.environ.get("IDV_TEST_DATABASE_URL"), reason="needs IDV_TEST_DATABASE_URL (PostgreSQL)"
)
def test_database_going_away_and_back(
    env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    """PostgreSQL cut mid-run: 503 JSON quickly and /readyz 503, never a hang or a 500;
    back by itself once the database returns."""
    from sqlalchemy.engine import make_url

    real = make_url(database_url)
    proxy = Proxy((real.host or "127.0.0.1", real.port or 5432))
    env = {
        **env,
        "IDV_DATABASE_URL": real.set(port=proxy.port).render_as_string(hide_password=False),
    }
    verify = _key(env, "verify")
    url, proc = _serve(env, tmp_path / "serve.log")
    try:
        with httpx.Client(base_url=url, timeout=30) as http:
            assert (
                http.put(
                    "/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=verify
                ).status_code
                == 201
            )
            proxy.down()
            for _ in range(3):  # pooled connections were reset: each request must still be 503
                r, elapsed = _timed(
                    http.post,
                    "/v1/verifications",
                    json={"subject_id": "alice", "action": "login"},
                    headers=verify,
                )
                _assert_503(r, elapsed)
            r, elapsed = _timed(http.get, "/readyz")
            _assert_503(r, elapsed)
            assert http.get("/healthz").status_code == 200
            proxy.up()
            deadline = time.monotonic() + 10
            while http.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline, "did not recover"
                time.sleep(0.2)
            r = http.post(
                "/v1/verifications", json={"subject_id": "alice", "action": "login"}, headers=verify
            )
            assert r.status_code == 201, r.text
    finally:
        _stop(proc)
        proxy.down()
