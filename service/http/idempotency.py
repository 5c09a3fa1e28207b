"""``Idempotency-Key`` on any POST (API.md, "Conveniences for callers"), for every route at once.

A caller whose POST timed out may send it again with the same key: within 24 hours the same
client, route and body (byte for byte) get the first answer again, status and body, and nothing
else happens (no second SMS, enrolment, webhook or audit entry). The same key with another
route or body is 422 ``idempotency_conflict``; a repeat while the first request still runs is
409 ``conflict``. Answers with 5xx, 409 or 429 are not kept: the caller may simply retry.
(draft-ietf-httpapi-idempotency-key-header: the key, its fingerprint and those errors.)

Stored: a keyed hash of the key and of the request, never either in clear (the body may hold a
PIN); the answer encrypted like every other secret (PIPL art. 51), bound to its row; the
subject the route names, so the record is erased with it (ON DELETE CASCADE, PIPL art. 47).
A POST without the header costs one header lookup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from flask import Flask, Response, g, request
from sqlalchemy.exc import SQLAlchemyError

from service.domain.errors import Conflict, IdempotencyConflict, InvalidRequest
from service.http.auth import caller, ctx
from service.http.body import raw_body
from service.storage import idempotency as store

log = logging.getLogger("idv.http")

HEADER = "Idempotency-Key"
KEY = re.compile(r"[!-~]{1,255}")  # 1-255 visible ASCII characters (API.md)
WINDOW = timedelta(hours=24)  # API.md: a repeat within 24 h gets the first answer
# A claim still "running" after this long belongs to a request that died (a killed worker):
# no request runs that long (gunicorn's timeout is 30 s), so a retry may take it over.
ABANDONED = timedelta(seconds=60)
NOT_KEPT = frozenset({409, 429})  # and every 5xx: the caller retries those as they are


@dataclass(frozen=True)
class _Claim:
    client_id: str
    key_hash: str
    token: str


def install(app: Flask) -> None:
    """Hook the key's claim before every POST and the keeping of its answer after it."""
    app.before_request(_before)
    app.after_request(_after)


def _before() -> Response | None:
    if request.method != "POST":
        return None
    key = request.headers.get(HEADER)
    if key is None or request.routing_exception is not None:
        return None
    return _claim(key)


def _claim(key: str) -> Response | None:
    """Claim ``key`` for this request, or answer for it: the first answer, 409 or 422."""
    client = caller(None)  # a bad API key is 401 before any claim
    if not KEY.fullmatch(key):
        raise InvalidRequest(f"{HEADER} must be 1 to 255 visible ASCII characters")
    service = ctx()
    key_hash = service.keys.lookup_hash("idempotency-key", key)
    fingerprint = hmac.new(
        service.keys.derived_key("idempotency-request"),
        request.method.encode() + b"\x00" + request.path.encode() + b"\x00" + raw_body(),
        hashlib.sha256,
    ).hexdigest()
    token = secrets.token_hex(16)
    now = service.clock()
    for _ in range(2):
        held = store.claim(service.engine, client.id, key_hash, fingerprint, token, now)
        if held is None:
            g.idv_idempotency = _Claim(client.id, key_hash, token)
            return None
        if held.id == 0:  # the row went (erased with its subject) between two statements
            continue
        expired = held.created_at <= now - WINDOW
        if not expired and held.request_hash != fingerprint:
            raise IdempotencyConflict(f"this {HEADER} was used with another request")
        if not expired and held.status == "done" and held.response_ct is not None:
            return _replay(
                service.keys.decrypt(held.response_ct, store.answer_context(client.id, key_hash))
            )
        abandoned = held.status == "running" and held.created_at <= now - ABANDONED
        if (expired or abandoned) and store.take_over(
            service.engine, client.id, key_hash, held, fingerprint, token, now
        ):
            g.idv_idempotency = _Claim(client.id, key_hash, token)
            return None
        break
    raise Conflict(f"a request with this {HEADER} is still running; retry shortly")


def _replay(stored: str) -> Response:
    kept = json.loads(stored)
    response = Response(kept["body"], status=kept["status"], mimetype=kept["mimetype"])
    response.headers["Idempotent-Replayed"] = "true"
    return response


def _after(response: Response) -> Response:
    claim: _Claim | None = g.pop("idv_idempotency", None)
    if claim is None:
        return response
    status = response.status_code
    service = ctx()
    try:
        with service.engine.begin() as conn:
            if status >= 500 or status in NOT_KEPT:
                store.release(conn, claim.client_id, claim.key_hash, claim.token)
                return response
            subject_id, verification_id = _named_subject()
            subject = store.subject_pk(conn, claim.client_id, subject_id, verification_id)
            if subject is None and (subject_id or verification_id) and status < 300:
                # The subject was erased while this ran: keep nothing about it.
                store.release(conn, claim.client_id, claim.key_hash, claim.token)
                return response
            kept = json.dumps(
                {
                    "status": status,
                    "mimetype": response.mimetype,
                    "body": response.get_data(as_text=True),
                }
            )
            ciphertext = service.keys.encrypt(
                kept, store.answer_context(claim.client_id, claim.key_hash)
            )
            store.complete(conn, claim.client_id, claim.key_hash, claim.token, ciphertext, subject)
    except SQLAlchemyError as exc:
        # The answer stands; the claim stays "running" and a retry may take it over later.
        log.warning("could not keep the answer of an Idempotency-Key: %s", type(exc).__name__)
    return response


def _named_subject() -> tuple[str | None, str | None]:
    """The subject id or verification id this request names (path, or the body's
    ``subject_id`` for ``POST /v1/verifications``)."""
    args = request.view_args or {}
    if "subject_id" in args or "verification_id" in args:
        return args.get("subject_id"), args.get("verification_id")
    try:
        body = json.loads(raw_body())
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    named = body.get("subject_id") if isinstance(body, dict) else None
    return (named if isinstance(named, str) else None), None
