"""``service.http.server``: the contract's body for gunicorn's own errors, and the socket
timeouts that bound a silent client (the served behaviour is in tests/e2e/test_raw_http.py)."""

from __future__ import annotations

import json
import socket
import struct
import time

import pytest

from service.http.server import error_page, set_client_timeout


@pytest.mark.parametrize(
    ("line", "status", "code"),
    [
        (b"HTTP/1.1 400 Bad Request", 400, "invalid_request"),
        (b"HTTP/1.1 414 URI Too Long", 414, "invalid_request"),
        (b"HTTP/1.1 431 Request Header Fields Too Large", 431, "invalid_request"),
        (b"HTTP/1.1 403 Forbidden", 403, "forbidden"),
        # an unknown Transfer-Encoding: bad input is 4xx by the contract (RFC 9112 says 501)
        (b"HTTP/1.1 501 Bad Request", 400, "invalid_request"),
        (b"HTTP/1.1 500 Internal Server Error", 500, "server_error"),
    ],
)
def test_error_page_is_the_contracts_json_with_gunicorns_status(
    line: bytes, status: int, code: str
) -> None:
    page = error_page(line)
    assert page is not None
    head, _, body = page.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].split()[1] == str(status)
    assert "Content-Type: application/json" in lines and "Connection: close" in lines
    assert f"Content-Length: {len(body)}" in lines
    assert json.loads(body)["error"] == code
    assert int(lines[0].split()[1]) == status


@pytest.mark.parametrize("line", [b"", b"garbage", b"HTTP/1.1 abc Nope"])
def test_error_page_sends_nothing_for_what_is_not_a_status_line(line: bytes) -> None:
    assert error_page(line) is None


def test_a_listeners_timeout_reaches_the_sockets_it_accepts_and_bounds_their_reads() -> None:
    """What ``Worker`` relies on: SO_RCVTIMEO set on the listener is inherited by accepted
    sockets, survives gunicorn's ``setblocking(True)``, and fails a read that waits longer."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        set_client_timeout(listener, 0.3)
        with socket.create_connection(listener.getsockname()):
            accepted, _ = listener.accept()
            with accepted:
                accepted.setblocking(False)
                accepted.setblocking(True)
                seconds, micros = struct.unpack(
                    "ll", accepted.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, 16)
                )
                assert seconds + micros / 1e6 == pytest.approx(0.3)
                started = time.monotonic()
                with pytest.raises(BlockingIOError):
                    accepted.recv(10)
                assert 0.2 < time.monotonic() - started < 5
