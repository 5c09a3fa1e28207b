"""Slow clients against a real ``idv serve`` (issue 20, item 5).

Ten connections sending one header line every 3 s held every request thread: ``/healthz`` timed
out for 25 s. ``IDV_CLIENT_TIMEOUT`` bounded each read, not the whole head, and a deadline that
still holds a thread for its length would not help either: the poller now collects a request's
head (and a ``Content-Length`` body) before any request thread sees it.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from bench.slow_clients import attack
from tests.e2e.conftest import running

pytestmark = pytest.mark.slow


def test_forty_dripping_clients_leave_the_service_answering(
    tmp_path: Path, database_url: str
) -> None:
    """The issue's bar: 40 connections dripping a header line every 2 s, reconnecting whenever
    dropped, while a normal caller gets each answer within 3 s at least 15 times in 20. The
    client timeout is 4 s here, so every dripper is dropped and comes back within the test."""
    with running(tmp_path, database_url, {"IDV_CLIENT_TIMEOUT": "4"}) as srv:
        outcome = attack(srv.url, drippers=40, period=2.0, tries=20, deadline=3.0, warmup=2.5)
        assert len(outcome.answered) >= 15, outcome.summary()
        assert outcome.reconnects >= 40, outcome.summary()  # dropped by the head's deadline
    log = (tmp_path / "serve.log").read_text()
    assert "closed a connection: its request head did not arrive within 4s" in log
    assert "Traceback" not in log


def test_a_head_past_64_kib_is_431_and_a_late_body_408(tmp_path: Path, database_url: str) -> None:
    """What the poller answers itself: a head that never ends (431, before any thread reads
    it) and a Content-Length body that does not arrive in time (the contract's 408)."""
    with running(tmp_path, database_url, {"IDV_CLIENT_TIMEOUT": "1"}) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\n" + b"X-A: b\r\n" * 9000)
            data = sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 431 ")
        assert b'"error":"invalid_request"' in data
        started = time.monotonic()
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/verifications HTTP/1.1\r\nHost: idv\r\nContent-Length: 100\r\n\r\n{"
            )
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        assert data.startswith(b"HTTP/1.1 408 ")
        assert b'"error":"request_timeout"' in data
        assert time.monotonic() - started < 5


def test_stalled_bodies_hold_no_request_thread(tmp_path: Path, database_url: str) -> None:
    """More stalled bodies of each framing than a worker has threads (8): the poller holds them
    and /healthz is answered at once (it waited for IDV_CLIENT_TIMEOUT per read before)."""
    with running(tmp_path, database_url) as srv:
        host, port = srv.url.removeprefix("http://").split(":")
        stalled = []
        for i in range(24):
            sock = socket.create_connection((host, int(port)), timeout=10)
            framing = (
                b"Transfer-Encoding: chunked\r\n\r\n5\r\n{"
                if i % 2
                else b"Content-Length: 9\r\n\r\n{"
            )
            sock.sendall(b"POST /v1/verifications HTTP/1.1\r\nHost: idv\r\n" + framing)
            stalled.append(sock)
        try:
            time.sleep(0.5)
            started = time.monotonic()
            with socket.create_connection((host, int(port)), timeout=10) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: idv\r\nConnection: close\r\n\r\n")
                assert sock.recv(100).startswith(b"HTTP/1.1 200 ")
            assert time.monotonic() - started < 1.5
        finally:
            for sock in stalled:
                sock.close()
