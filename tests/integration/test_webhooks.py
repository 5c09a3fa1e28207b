"""Sensitive events reach the tenant's webhook from a durable outbox, signed, with retries
(T1: the user is told on a channel the thief does not hold; ASVS 6.3.6)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from service.context import ServiceContext
from service.usecases import notify


class Receiver:
    """A tenant's webhook endpoint on 127.0.0.1 that can be switched down and up."""

    def __init__(self) -> None:
        self.events: list[tuple[dict, dict]] = []
        self.down = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.down:
                    self.send_response(503)
                    self.end_headers()
                    return
                receiver.events.append((dict(self.headers), json.loads(body)))
                receiver.raw = body
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_factor_change_is_pushed_signed(user, ctx, http, auth, receiver):
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    secret = notify.register(ctx, client_id, receiver.url)
    user.add_totp()
    assert notify.deliver_due(ctx) == (1, 0)
    headers, body = receiver.events[0]
    assert body["type"] == "factor.added" and body["subject_id"] == "alice"
    assert body["detail"] == {"type": "totp"} and body["event_id"] == headers["Idv-Event-Id"]
    # The tenant checks the signature over "<t>.<body>" with its secret.
    t, v1 = (part.split("=", 1)[1] for part in headers["Idv-Signature"].split(","))
    expected = hmac.new(secret.encode(), f"{t}.".encode() + receiver.raw, hashlib.sha256)
    assert hmac.compare_digest(v1, expected.hexdigest())
    assert "13800138000" not in receiver.raw.decode()
    assert notify.deliver_due(ctx) == (0, 0)  # delivered once


def test_receiver_down_then_up_loses_nothing(user, ctx, http, auth, receiver, settings):
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    notify.register(ctx, client_id, receiver.url)
    receiver.down = True
    user.add_totp()
    assert notify.deliver_due(ctx) == (0, 1)
    assert notify.deliver_due(ctx) == (0, 0)  # backing off: not due yet
    receiver.down = False
    user.advance(11)  # first back-off is 10 s
    # A restarted process (a new context) delivers what the old one left pending.
    restarted = ServiceContext.build(settings)
    assert notify.deliver_due(restarted) == (1, 0)
    assert [e[1]["type"] for e in receiver.events] == ["factor.added"]
    restarted.engine.dispose()


def test_sim_swap_reaches_every_tenant_with_that_phone(
    user, ctx, http, auth, other_auth, carrier_auth, receiver
):
    client_a = http.get("/v1/client", headers=auth).json["client_id"]
    client_b = http.get("/v1/client", headers=other_auth).json["client_id"]
    http.put("/v1/subjects/bob", json={"phone": "+8613800138000"}, headers=other_auth)
    for client_id in (client_a, client_b):
        notify.register(ctx, client_id, receiver.url)
    r = http.post(
        "/v1/carrier-events",
        headers=carrier_auth,
        json={"phone": "+8613800138000", "type": "sim_swap", "occurred_at": "2026-01-01T00:00:00Z"},
    )
    assert r.status_code == 202
    notify.deliver_due(ctx)
    got = sorted((e[1]["type"], e[1]["subject_id"]) for e in receiver.events)
    assert got == [("carrier.sim_swap", "alice"), ("carrier.sim_swap", "bob")]


def test_backoff_grows_and_caps():
    assert [notify.backoff(n).total_seconds() for n in range(4)] == [10, 20, 40, 80]
    assert notify.backoff(30).total_seconds() == 3600


def test_one_tenants_trickling_endpoint_holds_no_other_tenants_events(
    user, ctx, http, auth, other_auth, receiver, trickler, monkeypatch
):
    """One thread per process delivers every tenant's events in turn. An endpoint that
    trickles its answer a byte at a time held that thread for the whole answer whatever the
    timeout (18.5 s with 5 s); the timeout is now the whole exchange's."""
    monkeypatch.setattr(notify, "TIMEOUT_SECONDS", 0.5)
    slow = http.get("/v1/client", headers=auth).json["client_id"]
    fine = http.get("/v1/client", headers=other_auth).json["client_id"]
    notify.register(ctx, slow, trickler.url)
    notify.register(ctx, fine, receiver.url)
    user.add_totp()  # tenant-a's event, for the trickling endpoint
    assert http.put("/v1/subjects/bob", json={"phone": "+8613900139000"}, headers=other_auth)
    assert (
        http.post("/v1/subjects/bob/factors", json={"type": "totp"}, headers=other_auth).status_code
        == 201
    )
    started = time.monotonic()
    assert notify.deliver_due(ctx) == (1, 1)
    assert time.monotonic() - started < 3.0  # the trickled answer alone takes ~16 s
    assert [body["subject_id"] for _, body in receiver.events] == ["bob"]
    assert trickler.requests == 1


def test_a_failing_endpoints_backlog_waits_and_other_tenants_go_first(
    ctx, http, auth, other_auth, receiver, trickler, monkeypatch
):
    """A pass delivers the 50 oldest due events. A tenant whose endpoint hangs, with a backlog,
    cost one timeout per queued event in every pass (50 x 5 s) and, oldest first, filled
    every pass ahead of the other tenants. Now its first failure holds its whole queue back
    for the back-off, and the next pass reaches the others."""
    from sqlalchemy import select

    from service.storage.tables import webhook_outbox

    monkeypatch.setattr(notify, "TIMEOUT_SECONDS", 0.5)
    slow = http.get("/v1/client", headers=auth).json["client_id"]
    fine = http.get("/v1/client", headers=other_auth).json["client_id"]
    notify.register(ctx, slow, trickler.url)
    notify.register(ctx, fine, receiver.url)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        for i in range(60):
            notify.event(conn, slow, f"s{i}", "factor.added", now)
    with ctx.engine.begin() as conn:
        notify.event(conn, fine, "bob", "factor.added", ctx.clock())
    started = time.monotonic()
    assert notify.deliver_due(ctx) == (0, 1)  # the 50 oldest are the slow tenant's
    assert notify.deliver_due(ctx) == (1, 0)  # its queue waits: the other tenant's turn
    assert time.monotonic() - started < 3.0
    assert trickler.requests == 1
    assert [body["subject_id"] for _, body in receiver.events] == ["bob"]
    with ctx.engine.connect() as conn:
        rows = conn.execute(
            select(webhook_outbox.c.attempts).where(webhook_outbox.c.client_id == slow)
        ).scalars()
        assert sorted(rows) == [0] * 59 + [1]  # one attempt, 59 held back, none dropped
