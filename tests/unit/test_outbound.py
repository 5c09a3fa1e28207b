"""Outbound POSTs under one deadline (``service.outbound``): what the SMS gateway, the
tenants' webhooks and CAMARA go through."""

from __future__ import annotations

import base64
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service import outbound


class _Peer:
    """A well-behaved HTTP server whose answer each test sets."""

    def __init__(self) -> None:
        self.status, self.body, self.headers = 200, b"{}", {"X-Kind": "peer"}
        self.seen: list[tuple[str, bytes, str]] = []
        self.proxy_auth: list[str | None] = []
        peer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # type: ignore[no-untyped-def]
                pass

            def do_CONNECT(self) -> None:  # as a proxy asked for a tunnel: refuse it
                peer.seen.append((self.path, b"", "CONNECT"))
                peer.proxy_auth.append(self.headers["Proxy-Authorization"])
                self.send_response(502)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self) -> None:
                peer.proxy_auth.append(self.headers["Proxy-Authorization"])
                data = self.rfile.read(int(self.headers["Content-Length"]))
                peer.seen.append((self.path, data, self.headers["Content-Type"]))
                self.send_response(peer.status)
                for name, value in peer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(peer.body)))
                self.end_headers()
                self.wfile.write(peer.body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/in?x=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def peer() -> Iterator[_Peer]:
    server = _Peer()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_post_sends_once_and_reads_status_headers_and_body(peer):
    answer = outbound.post(
        peer.url, b'{"a":1}', {"Content-Type": "application/json"}, timeout=2, max_body=100
    )
    assert (answer.status, answer.body, answer.headers["x-kind"]) == (200, b"{}", "peer")
    assert peer.seen == [("/in?x=1", b'{"a":1}', "application/json")]


def test_without_max_body_the_body_is_not_read(peer):
    peer.body = b"y" * 10_000
    assert outbound.post(peer.url, b"", {}, timeout=2).body == b""


def test_a_body_over_the_limit_is_an_error_not_a_truncated_answer(peer):
    peer.body = b"y" * 101
    with pytest.raises(outbound.OutboundError, match="too large"):
        outbound.post(peer.url, b"", {}, timeout=2, max_body=100)


def test_a_redirect_is_answered_not_followed(peer):
    peer.status, peer.headers = 302, {"Location": peer.url + "/elsewhere"}
    assert outbound.post(peer.url, b"", {}, timeout=2).status == 302
    assert [path for path, _, _ in peer.seen] == ["/in?x=1"]


def test_a_refused_connection_is_an_error_naming_no_url(peer):
    url = peer.url
    peer.server.shutdown()
    peer.server.server_close()
    with pytest.raises(outbound.OutboundError) as info:
        outbound.post(url, b"", {}, timeout=2)
    assert "127.0.0.1" not in str(info.value)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://h/", "http://", "h/x"])
def test_only_absolute_http_urls(url):
    with pytest.raises(ValueError):
        outbound.post(url, b"", {}, timeout=1)


def test_a_trickled_answer_is_cut_at_the_deadline(trickler):
    """Each byte comes well inside the socket timeout; the deadline is the exchange's."""
    started = time.monotonic()
    with pytest.raises(outbound.OutboundTimeout):
        outbound.post(trickler.url, b"{}", {}, timeout=0.5, max_body=100)
    elapsed = time.monotonic() - started
    assert trickler.requests == 1
    assert elapsed < 2.0, elapsed  # the whole answer takes ~16 s


def test_http_proxy_from_the_environment_gets_the_absolute_url(peer, monkeypatch):
    """urllib (what the SMS and webhook senders used before) honours HTTP(S)_PROXY and
    NO_PROXY; a deployment whose egress goes through a proxy keeps working."""
    proxy = peer.url.split("/in")[0].replace("http://", "http://ops:s%3Acret@")
    monkeypatch.setenv("HTTP_PROXY", proxy)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert outbound.post("http://gateway.invalid/sms?a=1", b"{}", {}, timeout=2).status == 200
    assert [path for path, _, _ in peer.seen] == ["http://gateway.invalid/sms?a=1"]
    assert peer.proxy_auth == ["Basic " + base64.b64encode(b"ops:s:cret").decode()]


def test_https_goes_through_a_connect_tunnel_and_no_proxy_is_honoured(peer, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", peer.url.split("/in")[0])
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    with pytest.raises(outbound.OutboundError):  # this proxy refuses the tunnel
        outbound.post("https://gateway.invalid:8443/sms", b"{}", {}, timeout=2)
    assert peer.seen == [("gateway.invalid:8443", b"", "CONNECT")]
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    assert outbound.post(peer.url, b"{}", {}, timeout=2).status == 200  # straight to the peer
