"""A real ``idv serve`` process on a free port of 127.0.0.1."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

IDV = [sys.executable, "-m", "service.cli"]


def free_port() -> int:
    """An unused TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A running server and the environment it was started with."""

    url: str
    env: dict[str, str]
    data_dir: Path
    process: subprocess.Popen

    def idv(self, *args: str) -> subprocess.CompletedProcess:
        """Run an ``idv`` CLI command against the same database and keys."""
        return subprocess.run(
            [*IDV, *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def api_key(self, *scopes: str) -> str:
        """Create a client with the CLI and return its key (the last line of stdout)."""
        args = ["clients", "create", "e2e"]
        for scope in scopes or ("verify",):
            args += ["--scope", scope]
        out = self.idv(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]


def serve_env(tmp_path: Path, database_url: str) -> dict[str, str]:
    """The environment of a test server: its own data dir, an SMS file sink, Redis if set."""
    env = {
        **os.environ,
        "IDV_DATA_DIR": str(tmp_path / "data"),
        "IDV_DATABASE_URL": database_url,
        "IDV_SMS_SENDER": f"file:{tmp_path / 'sms.jsonl'}",
    }
    if os.environ.get("IDV_TEST_REDIS_URL"):
        env["IDV_REDIS_URL"] = os.environ["IDV_TEST_REDIS_URL"]
    return env


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, seconds: float = 30) -> None:
    """Poll ``/healthz`` until it answers 200; fail with the server log otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("idv serve did not start:\n" + log.read_text())
        time.sleep(0.1)


@contextmanager
def running(
    tmp_path: Path,
    database_url: str,
    extra_env: dict[str, str] | None = None,
    serve_args: tuple[str, ...] = (),
) -> Iterator[Server]:
    """``idv serve`` with its own data dir (and ``extra_env``, ``serve_args``) until the block
    ends."""
    port = free_port()
    env = {**serve_env(tmp_path, database_url), **(extra_env or {})}
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [*IDV, "serve", "--host", "127.0.0.1", "--port", str(port), *serve_args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, tmp_path / "serve.log")
    except BaseException:
        log.close()
        raise
    try:
        yield Server(url, env, tmp_path / "data", proc)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    """Start ``idv serve`` with its own data dir; stop it after the test."""
    with running(tmp_path, database_url) as srv:
        yield srv
