"""Hostile HTTP below Flask: raw bytes on a socket to a real ``idv serve``.

Found by sending malformed and stalled requests to the server (issue 6, hostile input):

- gunicorn answered requests it could not parse with an HTML page (API.md: every error is
  ``{"error": CODE, "message": TEXT}``);
- an authenticated request with a malformed chunked body was a 500 with a traceback;
- a chunked body over 1 MiB was cut at the limit and parsed as if whole (400 "not valid JSON"
  instead of 413);
- a client that went silent mid-request held a request thread with no time limit, so a few
  stalled connections (one worker's 8 threads) stopped the service for everyone;
- a connection that sent nothing held a thread for 5 s (12 of them held /healthz for 4.8 s);
- an unknown Transfer-Encoding was gunicorn's 501 (the contract: 4xx for bad input; found by
  the property test at the end).

``service.http.server`` and ``service.http.body`` mend these; each case below failed before.
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import Server, running

H = b"Host: idv\r\n"


def exchange(url: str, raw: bytes, timeout: float = 10) -> bytes:
    """Send ``raw`` on a new connection; everything the server sends until it closes."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(raw)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def answer(data: bytes) -> tuple[int, dict[str, str], dict]:
    """Status, headers (lower-case names) and JSON body of one HTTP/1.1 response."""
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, json.loads(body)


GET = b"GET /healthz HTTP/1.1\r\n" + H
POST = b"POST /v1/verifications HTTP/1.1\r\n" + H
PROTOCOL_ERRORS = [
    ("request line over 8190 bytes", b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n" + H + b"\r\n", 414),
    ("a header over the limit", GET + b"X-A: " + b"a" * 10000 + b"\r\n\r\n", 431),
    ("too many headers", GET + b"".join(b"X-%d: a\r\n" % i for i in range(200)) + b"\r\n", 431),
    ("NUL in the method", b"G\x00T /healthz HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("path not UTF-8", b"GET /v1/subjects/\xff\xfe HTTP/1.1\r\n" + H + b"\r\n", 400),
    ("unknown HTTP version", b"GET /healthz HTTP/9.9\r\n" + H + b"\r\n", 400),
    ("Content-Length not a number",  POST + b"Content-Length: abc\r\n\r\n{}", 400),
    ("two Content-Lengths", POST + b"Content-Length: 2\r\nContent-Length: 7\r\n\r\n{}", 400),
    ("chunked and length", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n", 400),
    ("bare LF line ends", b"GET /healthz HTTP/1.1\nHost: idv\n\n", 400),
    ("obsolete header folding", GET + b" folded: x\r\n\r\n", 400),
    ("a space in a header name", GET + b"Bad Header: x\r\n\r\n", 400),
    ("an unknown transfer coding", POST + b"Transfer-Encoding: foo\r\n\r\n", 400),  # not 501
    ("an expectation nobody meets", POST + b"Expect: teapot\r\nContent-Length: 2\r\n\r\n{}", 417),
]  # fmt: skip


def test_requests_gunicorn_cannot_parse_get_the_contracts_json_error(server: Server) -> None:
    for case, raw, status in PROTOCOL_ERRORS:
        got, headers, body = answer(exchange(server.url, raw))
        assert got == status, case
        assert headers["content-type"] == "application/json", case
        assert headers["connection"] == "close", case
        assert body["error"] == "invalid_request", case
        assert body["message"] and "<" not in body["message"], case
        assert "aaaa" not in body["message"], case  # the request is never echoed back
    assert httpx.get(server.url + "/healthz").status_code == 200


@pytest.fixture
def key(server: Server) -> bytes:
    return server.api_key().encode()


def _post(key: bytes, extra: bytes) -> bytes:
    return (
        b"POST /v1/verifications HTTP/1.1\r\n" + H + b"Authorization: Bearer " + key + b"\r\n"
        b"Content-Type: application/json\r\nConnection: close\r\n" + extra
    )


MALFORMED_CHUNKS = [
    ("bad size", b"zz\r\n{}\r\n0\r\n\r\n"),  # not a hexadecimal size
    ("bad extension", b"2;x=\x01\r\n{}\r\n0\r\n\r\n"),  # a control byte in an extension
    ("missing terminator", b"2\r\n{}XX0\r\n\r\n"),  # no CRLF after the chunk's data
]


def test_a_malformed_chunked_body_is_400_not_500(server: Server, key: bytes) -> None:
    for case, chunks in MALFORMED_CHUNKS:
        raw = _post(key, b"Transfer-Encoding: chunked\r\n\r\n" + chunks)
        status, _, body = answer(exchange(server.url, raw))
        assert (status, body["error"]) == (400, "invalid_request"), case
        assert body["message"] == "the chunked request body is malformed", case
    assert "Traceback" not in (server.data_dir.parent / "serve.log").read_text()


def test_a_chunked_body_over_1_mib_is_413_not_cut_short(server: Server, key: bytes) -> None:
    mib = b"a" * (1 << 20)
    chunks = b"100000\r\n" + mib + b"\r\n" + b"100000\r\n" + mib + b"\r\n0\r\n\r\n"
    status, _, body = answer(
        exchange(server.url, _post(key, b"Transfer-Encoding: chunked\r\n\r\n" + chunks))
    )
    assert (status, body["error"]) == (413, "payload_too_large")
    # A small chunked body is still read whole and validated like any other.
    small = b'{"subject_id": "nobody", "action": "login"}'
    raw = _post(
        key, b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(small), small)
    )
    status, _, body = answer(exchange(server.url, raw))
    assert (status, body["error"]) == (404, "not_found")


def test_silent_clients_are_dropped_and_never_stop_the_service(
    tmp_path: Path, database_url: str
) -> None:
    """More stalled connections than one worker has threads (8): half stop inside their
    headers, half after their headers, inside a body they announced. Before the fix the
    service answered nobody until those clients went away; now each is dropped after
    ``IDV_CLIENT_TIMEOUT`` of silence and everyone else is served meanwhile."""
    with running(tmp_path, database_url, {"IDV_CLIENT_TIMEOUT": "1"}) as srv:
        key = srv.api_key().encode()
        host, port = srv.url.removeprefix("http://").split(":")
        stalled = []
        for i in range(12):
            sock = socket.create_connection((host, int(port)), timeout=30)
            if i % 2:
                sock.sendall(_post(key, b"Content-Length: 100\r\n\r\n{"))  # body never ends
            else:
                sock.sendall(b"POST /v1/verifications HTTP/1.1\r\n" + H)  # headers never end
            stalled.append(sock)
        started = time.monotonic()
        assert httpx.get(srv.url + "/healthz", timeout=20).status_code == 200
        assert time.monotonic() - started < 10
        for i, sock in enumerate(stalled):
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
            sock.close()
            if i % 2:  # inside the body: the contract's 408, then the connection closes
                status, headers, body = answer(data)
                assert (status, body["error"]) == (408, "request_timeout")
            else:  # inside the headers: nothing to answer yet, the connection is closed
                assert data == b""
        assert time.monotonic() - started < 20
        log = (tmp_path / "serve.log").read_text()
        # Both wait on the poller now, never on a request thread (issue 20, item 5).
        assert "closed a connection: its request head did not arrive within 1s" in log
        assert "its request body did not arrive in time (1s and 64 KiB/s)" in log
        assert "Traceback" not in log
        # and the service serves a whole request normally afterwards
        assert httpx.get(srv.url + "/healthz").status_code == 200


def test_connections_that_send_nothing_take_no_request_thread(server: Server) -> None:
    """gunicorn lets a new connection's thread wait up to 5 s for its first bytes: 12
    connections that sent nothing (more than one worker's 8 threads) held every request for
    5 s. Now they wait in the poller, and the poller closes them after the keep-alive time."""
    host, port = server.url.removeprefix("http://").split(":")
    idle = [socket.create_connection((host, int(port)), timeout=30) for _ in range(12)]
    try:
        time.sleep(0.2)  # every one accepted and handed to the worker
        started = time.monotonic()
        assert httpx.get(server.url + "/healthz", timeout=20).status_code == 200
        assert time.monotonic() - started < 1.5
        for sock in idle:  # closed by the server, without an answer, after the keep-alive time
            assert sock.recv(100) == b""
        assert time.monotonic() - started < 15
    finally:
        for sock in idle:
            sock.close()


def _mutated_requests() -> st.SearchStrategy[bytes]:
    """Well-formed requests of idv's own shapes, then bytes flipped, cut, doubled or inserted
    anywhere: request line, headers, chunk framing and body alike."""
    body = st.sampled_from(
        [b'{"subject_id": "alice", "action": "login"}', b'{"factor": "totp", "code": "123456"}']
    )
    head = st.sampled_from(
        [
            b"POST /v1/verifications HTTP/1.1\r\n",
            b"PUT /v1/subjects/alice HTTP/1.1\r\n",
            b"POST /v1/verifications/vf_x/proofs HTTP/1.1\r\n",
            b"GET /v1/subjects/alice HTTP/1.1\r\n",
            b"GET /healthz HTTP/1.1\r\n",
        ]
    )
    framing = st.sampled_from(["length", "chunked"])

    @st.composite
    def build(draw: st.DrawFn) -> bytes:
        data = draw(body)
        raw = draw(head) + H + b"Authorization: Bearer KEY\r\nContent-Type: application/json\r\n"
        if draw(framing) == "length":
            raw += b"Content-Length: %d\r\n\r\n" % len(data) + data
        else:
            raw += b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(data), data)
        buf = bytearray(raw)
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(buf)))
            kind = draw(st.sampled_from(["flip", "cut", "insert", "double"]))
            if kind == "flip" and at < len(buf):
                buf[at] = draw(st.integers(0, 255))
            elif kind == "cut":
                del buf[at : at + draw(st.integers(1, 16))]
            elif kind == "insert":
                buf[at:at] = draw(st.binary(min_size=1, max_size=24))
            elif kind == "double":
                buf[at:at] = buf[max(0, at - 8) : at]
        return bytes(buf)

    return build()


@settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=_mutated_requests())
def test_any_mangled_request_gets_json_or_a_closed_connection_never_html_or_5xx(
    server: Server, key: bytes, raw: bytes
) -> None:
    """Whatever the bytes, idv answers with the contract's JSON (4xx, or a success) or closes the
    connection; never an HTML page, never a 5xx. The client closes its side after sending, so
    a cut request ends at once instead of waiting out IDV_CLIENT_TIMEOUT."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=15) as sock:
        sock.sendall(raw.replace(b"Bearer KEY", b"Bearer " + key))
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    # a request the mutation split in two may get two answers: check each
    for response in [b"HTTP/1.1 " + r for r in data.split(b"HTTP/1.1 ")[1:]]:
        status = int(response[9:12])
        assert status < 500, response[:300]
        head, _, payload = response.partition(b"\r\n\r\n")
        if status == 100 or not payload:  # 100 Continue, or a HEAD-like empty answer
            continue
        assert b"content-type: application/json" in head.lower(), response[:300]
        json.loads(payload.split(b"\nHTTP/1.1 ")[0])
    assert b"<html" not in data.lower()
    log = (server.data_dir.parent / "serve.log").read_text()
    assert "Traceback" not in log, log[-3000:]
