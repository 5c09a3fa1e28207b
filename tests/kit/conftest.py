"""A real ``idv serve`` process for the integration kit (the approach of tests/e2e/conftest.py),
plus clients of ``idv_client`` bound to it."""

from __future__ import annotations

import json
import random
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.conftest import IDV, free_port, serve_env, wait_healthy

pytest.importorskip("idv_client", reason="pip install -e ./client")


@dataclass
class KitServer:
    """A running ``idv serve`` that can be restarted on the same port (key rotation)."""

    url: str
    port: int
    env: dict[str, str]
    tmp: Path
    process: subprocess.Popen | None = None
    logs: list = field(default_factory=list)

    @property
    def sms_file(self) -> Path:
        return self.tmp / "sms.jsonl"

    def start(self) -> None:
        log_path = self.tmp / f"serve-{len(self.logs)}.log"
        log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.logs.append(log)
        self.process = subprocess.Popen(
            [*IDV, "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_healthy(self.url, self.process, log_path)

    def stop(self, *, graceful: bool = True) -> None:
        """SIGTERM (gunicorn's graceful stop: a kept-alive connection may linger up to 2 s for
        a request already on its way), or SIGQUIT (its immediate stop) when the test is over:
        every answer the test saw was committed before it was sent."""
        if self.process is not None:
            self.process.send_signal(signal.SIGTERM if graceful else signal.SIGQUIT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
            self.process = None
        for log in self.logs:
            log.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    def idv(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*IDV, *args], env=self.env, capture_output=True, text=True, timeout=60
        )

    def api_key(self, name: str, *scopes: str) -> str:
        args = ["clients", "create", name]
        for scope in scopes or ("verify",):
            args += ["--scope", scope]
        out = self.idv(*args)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip().splitlines()[-1]

    def last_sms_code(self, phone: str) -> str:
        lines = [json.loads(x) for x in self.sms_file.read_text().splitlines() if x.strip()]
        return [m for m in lines if m["to"] == phone][-1]["code"]


@pytest.fixture
def idv_server(tmp_path: Path, database_url: str) -> Iterator[KitServer]:
    """``idv serve`` on a free port with its own data dir and an SMS file sink."""
    port = free_port()
    env = serve_env(tmp_path, database_url)
    server = KitServer(f"http://127.0.0.1:{port}", port, env, tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop(graceful=False)


@pytest.fixture
def phone() -> str:
    """A fresh mainland mobile number per test (rate limits and carrier events are per phone)."""
    return f"+86139{random.randrange(10**8):08d}"
