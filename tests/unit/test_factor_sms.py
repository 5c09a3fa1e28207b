"""SMS codes and senders: code shape, hashed binding, file and webhook delivery."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.factors import sms

KEY = b"k" * 32
CODE = "042917"


def test_constants_follow_nist_800_63b():
    assert sms.CODE_DIGITS >= 6
    assert sms.CODE_TTL_SECONDS <= 600


def test_new_code_is_six_ascii_digits_and_varies():
    codes = {sms.new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isascii() and c.isdigit() for c in codes)
    assert len(codes) > 150


def test_new_code_zero_pads(monkeypatch):
    monkeypatch.setattr(sms.secrets, "randbelow", lambda n: 42)
    assert sms.new_code() == "000042"


def test_digest_is_hex_sha256_and_does_not_contain_the_code():
    digest = sms.code_digest(KEY, "ver_1", CODE)
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert CODE not in digest


def test_code_matches_its_own_digest():
    digest = sms.code_digest(KEY, "ver_1", CODE)
    assert sms.code_matches(KEY, "ver_1", CODE, digest)


def test_code_is_bound_to_its_verification():
    # ASVS 6.6.2: a code issued for one request does not prove another
    digest = sms.code_digest(KEY, "ver_1", CODE)
    assert not sms.code_matches(KEY, "ver_2", CODE, digest)


def test_wrong_code_or_key_is_refused():
    digest = sms.code_digest(KEY, "ver_1", CODE)
    assert not sms.code_matches(KEY, "ver_1", "042918", digest)
    assert not sms.code_matches(b"other-key", "ver_1", CODE, digest)


@pytest.mark.parametrize(
    "code", ["", "42917", "0429170", "04291a", " 042917", "０４２９１７", None, 42917]
)
def test_malformed_codes_are_refused(code):
    digest = sms.code_digest(KEY, "ver_1", CODE)
    assert sms.code_matches(KEY, "ver_1", code, digest) is False


@given(code=st.text(max_size=10), digest=st.text(max_size=70))
def test_code_matches_never_raises(code, digest):
    assert sms.code_matches(KEY, "ver_1", code, digest) in (True, False)


def test_message_text_has_code_lifetime_and_warning():
    text = sms.message_text("123456")
    assert "123456" in text
    assert "5 minutes" in text
    assert "never share" in text.lower()


def test_null_sender_does_nothing():
    assert sms.NullSender().send("+8613800138000", CODE, "hi") is None


def test_file_sender_appends_one_json_line_per_message(tmp_path):
    path = tmp_path / "nested" / "dir" / "sms.jsonl"
    sender = sms.FileSender(str(path))
    sender.send("+8613800138000", CODE, sms.message_text(CODE))
    sender.send("+8613900139000", "111111", "second")
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 2
    first = json.loads(lines[0])
    assert first["to"] == "+8613800138000"
    assert first["code"] == CODE
    assert first["text"] == sms.message_text(CODE)
    assert first["sent_at"].endswith("Z")
    assert datetime.fromisoformat(first["sent_at"]).utcoffset().total_seconds() == 0
    assert json.loads(lines[1])["to"] == "+8613900139000"


def test_file_sender_is_safe_across_threads(tmp_path):
    path = tmp_path / "sms.jsonl"
    sender = sms.FileSender(str(path))

    def send_many(i: int) -> None:
        for _ in range(20):
            sender.send(f"+86{i}", CODE, "x" * 500)

    threads = [threading.Thread(target=send_many, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    lines = path.read_text("utf-8").splitlines()
    assert len(lines) == 160
    assert all(json.loads(line)["code"] == CODE for line in lines)


class _Gateway:
    """A tiny real HTTP server on 127.0.0.1 that records requests and answers as told."""

    def __init__(self) -> None:
        self.status = 200
        self.location: str | None = None
        self.stall = threading.Event()  # while unset and stalling, requests hang
        self.stalling = False
        self.requests: list[dict] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                gateway.requests.append(
                    {
                        "path": self.path,
                        "content_type": self.headers["Content-Type"],
                        "json": json.loads(body),
                    }
                )
                if gateway.stalling:
                    gateway.stall.wait(5)
                self.send_response(gateway.status)
                if gateway.location:
                    self.send_header("Location", gateway.location)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST

            def log_message(self, format, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def close(self) -> None:
        self.stall.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def gateway() -> Iterator[_Gateway]:
    server = _Gateway()
    server.thread.start()
    yield server
    server.close()


def test_webhook_sender_posts_json(gateway):
    sms.WebhookSender(gateway.url).send("+8613800138000", CODE, "text")
    assert gateway.requests == [
        {
            "path": "/sms",
            "content_type": "application/json",
            "json": {"to": "+8613800138000", "code": CODE, "text": "text"},
        }
    ]


def test_webhook_500_raises_delivery_error_without_the_code(gateway):
    gateway.status = 500
    with pytest.raises(sms.SmsDeliveryError) as info:
        sms.WebhookSender(gateway.url).send("+8613800138000", CODE, sms.message_text(CODE))
    assert "500" in str(info.value)
    assert CODE not in str(info.value)
    assert len(gateway.requests) == 1  # no retry


def test_webhook_redirect_is_not_followed(gateway):
    gateway.status, gateway.location = 302, gateway.url + "/elsewhere"
    with pytest.raises(sms.SmsDeliveryError):
        sms.WebhookSender(gateway.url).send("+8613800138000", CODE, "text")
    assert [r["path"] for r in gateway.requests] == ["/sms"]


def test_webhook_timeout_raises_delivery_error(gateway):
    gateway.stalling = True
    with pytest.raises(sms.SmsDeliveryError) as info:
        sms.WebhookSender(gateway.url, timeout=0.2).send("+8613800138000", CODE, "text")
    assert CODE not in str(info.value)
    assert len(gateway.requests) == 1


def test_webhook_unreachable_raises_delivery_error(gateway):
    url = gateway.url
    gateway.close()
    with pytest.raises(sms.SmsDeliveryError) as info:
        sms.WebhookSender(url, timeout=1).send("+8613800138000", CODE, "text")
    assert CODE not in str(info.value)


def test_webhook_sender_refuses_non_http_urls():
    for url in ("file:///etc/passwd", "ftp://example.com/", "http://", "example.com/sms"):
        with pytest.raises(ValueError):
            sms.WebhookSender(url)


def test_sender_from_spec(tmp_path):
    assert isinstance(sms.sender_from_spec(None), sms.NullSender)
    assert isinstance(sms.sender_from_spec(""), sms.NullSender)
    file_sender = sms.sender_from_spec(f"file:{tmp_path}/sms.jsonl")
    assert isinstance(file_sender, sms.FileSender)
    assert file_sender.path == f"{tmp_path}/sms.jsonl"
    webhook = sms.sender_from_spec("webhook:https://gateway.example/send?x=1")
    assert isinstance(webhook, sms.WebhookSender)
    assert webhook.url == "https://gateway.example/send?x=1"
    assert isinstance(sms.sender_from_spec("webhook:http://127.0.0.1:9/"), sms.WebhookSender)


@pytest.mark.parametrize(
    "spec",
    ["file:", "webhook:", "webhook:ftp://x/", "webhook:file:///tmp/x", "smtp:x", "sms.jsonl"],
)
def test_sender_from_spec_refuses_unknown_specs(spec):
    with pytest.raises(ValueError, match="IDV_SMS_SENDER|URL"):
        sms.sender_from_spec(spec)


def test_a_gateway_that_trickles_its_answer_is_cut_at_the_timeout(trickler):
    """A byte every 0.2 s never lets a 0.5 s socket timeout fire: this send took 19.5 s with
    a 1 s timeout, a request thread held all along."""
    started = time.monotonic()
    with pytest.raises(sms.SmsDeliveryError, match="timeout") as info:
        sms.WebhookSender(trickler.url, timeout=0.5).send("+8613800138000", CODE, "text")
    assert time.monotonic() - started < 2.0
    assert CODE not in str(info.value)
