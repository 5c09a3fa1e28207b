"""Telling tenants about sensitive events, so they can warn the user on a channel the thief does
not hold (T1; NIST SP 800-63B-4: notify after authenticator changes; ASVS 6.3.4/6.3.6).

Events go into a durable outbox in the same transaction as the change; ``deliver_due`` POSTs
them with an HMAC-SHA256 signature, retrying with exponential back-off.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, select

from service import outbound
from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import InvalidRequest
from service.storage import outbox
from service.storage.tables import subjects

log = logging.getLogger("idv.webhooks")

MAX_BACKOFF = timedelta(hours=1)
LEASE = timedelta(seconds=30)
TIMEOUT_SECONDS = 5.0


def register(ctx: ServiceContext, client_id: str, url: str) -> str:
    """Register a tenant's endpoint; returns the signing secret (shown once)."""
    try:
        outbound.check_url(url)
    except ValueError:
        raise InvalidRequest("the webhook URL must be an absolute http(s) URL") from None
    secret = "whsec_" + secrets.token_urlsafe(32)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        outbox.set_endpoint(
            conn, client_id, url, ctx.keys.encrypt(secret, f"webhook:{client_id}"), now
        )
    return secret


def event(
    conn: Connection, client_id: str, subject_id: str, kind: str, now: datetime, **detail: Any
) -> None:
    """Queue a sensitive event about one subject for its tenant."""
    outbox.enqueue(
        conn,
        client_id,
        kind,
        {"occurred_at": rfc3339(now), "subject_id": subject_id, "detail": detail},
        now,
    )


def names_erased_subject(payload: dict[str, Any]) -> bool:
    """Whether an event is the desk's erasure alert: it must name the subject to the tenant
    (T3), and is the one row that outlives the erasure, until it is delivered."""
    detail = payload.get("detail")
    return isinstance(detail, dict) and detail.get("why") == "subject_erased"


def carrier_event(
    conn: Connection, phone_hash: str, kind: str, occurred_at: datetime, now: datetime
) -> None:
    """Tell every tenant with a subject on this phone about a SIM event (carrier events are
    global)."""
    rows = conn.execute(
        select(subjects.c.client_id, subjects.c.subject_id).where(
            subjects.c.phone_hash == phone_hash
        )
    )
    for client_id, subject_id in rows:
        outbox.enqueue(
            conn,
            client_id,
            f"carrier.{kind}",
            {"occurred_at": rfc3339(occurred_at), "subject_id": subject_id, "detail": {}},
            now,
        )


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``Idv-Signature`` value: ``t=<unix>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def backoff(attempts: int) -> timedelta:
    """Exponential back-off: 10 s, 20 s, 40 s ... capped at an hour."""
    return min(timedelta(seconds=10 * 2 ** max(0, attempts)), MAX_BACKOFF)


def deliver_due(ctx: ServiceContext, limit: int = 50) -> tuple[int, int]:
    """Deliver what is due; returns (delivered, failed). Safe to run on several instances."""
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        pending = outbox.due(conn, now, limit)
    ok = bad = 0
    down: set[str] = set()  # tenants whose endpoint failed in this pass
    for item in pending:
        if item.client_id in down:
            continue  # postponed with the failed one, below
        with ctx.engine.begin() as conn:
            if not outbox.claim(conn, item.id, now, LEASE):
                continue
            target = outbox.endpoint(conn, item.client_id)
        if target is None:
            continue
        url, secret_ct = target
        body = json.dumps(item.payload, separators=(",", ":")).encode()
        error = _post(
            url,
            ctx.keys.decrypt(secret_ct, f"webhook:{item.client_id}"),
            body,
            item.id,
            int(now.timestamp()),
        )
        with ctx.engine.begin() as conn:
            if error is None and names_erased_subject(item.payload):
                outbox.remove(conn, item.id)  # delivered; the erased subject stays nowhere
                ok += 1
            elif error is None:
                outbox.delivered(conn, item.id, ctx.clock())
                ok += 1
            else:
                retry_at = ctx.clock() + backoff(item.attempts)
                outbox.failed(conn, item.id, retry_at, error)
                # The tenant's other events wait as long: a failing endpoint costs one timeout
                # a pass, not one per queued event, and its backlog, oldest first, no longer
                # fills every pass ahead of the other tenants' events.
                outbox.postpone(conn, item.client_id, retry_at)
                down.add(item.client_id)
                bad += 1
    return ok, bad


def _post(url: str, secret: str, body: bytes, event_id: str, timestamp: int) -> str | None:
    """POST one event; None when delivered, else a short reason for the outbox. The deadline
    bounds the whole exchange (``service.outbound``): one tenant's slow endpoint must not
    hold every other tenant's events, which one thread per process delivers in turn."""
    headers = {
        "Content-Type": "application/json",
        "Idv-Event-Id": event_id,
        "Idv-Signature": signature(secret, timestamp, body),
    }
    try:
        answer = outbound.post(url, body, headers, timeout=TIMEOUT_SECONDS)
    except outbound.OutboundTimeout:
        return "timeout"
    except (outbound.OutboundError, ValueError) as exc:
        return str(exc) or type(exc).__name__
    return None if 200 <= answer.status < 300 else f"HTTP {answer.status}"


class Deliverer:
    """A daemon thread that delivers due webhooks every few seconds (one per process)."""

    def __init__(self, ctx: ServiceContext, interval: float = 2.0) -> None:
        self.ctx, self.interval = ctx, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="idv-webhooks", daemon=True)

    def start(self) -> None:
        """Start delivering."""
        self._thread.start()

    def stop(self) -> None:
        """Stop after the current pass."""
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                deliver_due(self.ctx)
            except Exception:  # noqa: BLE001 - keep delivering after a database hiccup
                log.exception("webhook delivery pass failed")
