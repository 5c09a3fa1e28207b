"""The typed SDK (issue 21, items 6-9): one exception class per error code of API.md and
``Retry-After`` as RFC 9110 reads it, no secret in any ``repr`` or log line, the parts of the
contract the service is still growing (recovery codes, attestations, cancel, admin erase,
``attempts_left``, ``ready_at``) read as API.md describes them and tolerated when absent,
``Idempotency-Key`` retries, ``from_env`` and ``AsyncIdvClient``.

Answers idv does not give yet come from an ``httpx.MockTransport`` shaped like API.md; what the
service already does runs against a real ``idv serve`` (marked slow)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pyotp
import pytest

import idv_client
from idv_client import (
    AsyncIdvClient,
    Conflict,
    EnrolledFactor,
    IdempotencyConflict,
    IdvClient,
    IdvError,
    NotPending,
    ProofResult,
    RateLimited,
    RequestTimeout,
    ServerError,
    ServiceUnavailable,
    TransportError,
    parse_retry_after,
)
from idv_client.models import parse_time
from tests.http.flow import PIN
from tests.kit.test_client import device_step_up, with_device

KEY = "idv_live_0123456789abcdefSECRETKEY"
Handler = Callable[[httpx.Request], httpx.Response]


def mock(handler: Handler, **kw: Any) -> IdvClient:
    return IdvClient(
        "http://idv.test", KEY, transport=httpx.MockTransport(handler), backoff=0, **kw
    )


def answer(status: int, body: Any = None, **headers: str) -> Handler:
    return lambda request: httpx.Response(status, json=body, headers=headers)


# -- 7. one class per error code, Retry-After ------------------------------------------------------
CODES = {
    ("invalid_request", 400): idv_client.InvalidRequest,
    ("unknown_action", 400): idv_client.UnknownAction,
    ("unauthorized", 401): idv_client.Unauthorized,
    ("forbidden", 403): idv_client.Forbidden,
    ("step_up_required", 403): idv_client.StepUpRequired,
    ("not_found", 404): idv_client.NotFound,
    ("request_timeout", 408): RequestTimeout,
    ("not_pending", 409): NotPending,
    ("conflict", 409): Conflict,
    ("payload_too_large", 413): idv_client.PayloadTooLarge,
    ("invalid_code", 422): idv_client.InvalidCode,
    ("weak_secret", 422): idv_client.WeakSecret,
    ("factor_not_allowed", 422): idv_client.FactorNotAllowed,
    ("idempotency_conflict", 422): IdempotencyConflict,
    ("rate_limited", 429): RateLimited,
    ("service_unavailable", 503): ServiceUnavailable,
}


@pytest.mark.parametrize(("code", "status"), list(CODES))
def test_each_error_code_has_its_class(code, status):
    c = mock(answer(status, {"error": code, "message": "m"}), retries=0)
    with pytest.raises(IdvError) as e:
        c.get_verification("vf_1")
    assert type(e.value) is CODES[(code, status)]
    assert (e.value.code, e.value.status, e.value.message) == (code, status, "m")
    # Every class is distinct: one code, one class (API.md, Errors).
    assert len(set(CODES.values())) == len(CODES)


def test_status_alone_picks_a_neutral_class():
    # A proxy's 409 or 408 without a body is not "not pending", and 503 is unavailable.
    for status, cls in ((409, Conflict), (408, RequestTimeout), (503, ServiceUnavailable)):
        c = mock(lambda r, s=status: httpx.Response(s, text="<html>proxy</html>"), retries=0)
        with pytest.raises(cls):
            c.whoami()
    with pytest.raises(ServerError):
        mock(answer(500, {"error": "server_error", "message": "x"})).whoami()
    assert issubclass(ServiceUnavailable, ServerError)
    # A 200 that is not idv's JSON (a captive portal, a proxy's page) is not a result.
    with pytest.raises(ServerError):
        mock(lambda r: httpx.Response(200, text="<html>login</html>")).whoami()


def test_retry_after_per_rfc9110():
    now = datetime(2026, 12, 7, 4, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120", now) == 120
    assert parse_retry_after(" 0 ", now) == 0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=90), usegmt=True), now) == 90
    assert parse_retry_after("Mon, 07 Dec 2026 03:00:00 GMT", now) == 0  # in the past
    assert parse_retry_after(None, now) is None
    for junk in ("", "soon", "-5", "1.5", "٣"):
        assert parse_retry_after(junk, now) is None, junk

    def limited(value: str | None) -> int | None:
        headers = {"Retry-After": value} if value is not None else {}
        c = mock(answer(429, {"error": "rate_limited", "message": "slow"}, **headers))
        with pytest.raises(RateLimited) as e:
            c.prove_sms("vf_1", "123456")
        return e.value.retry_after

    assert limited("42") == 42
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=600), usegmt=True)
    assert 595 <= limited(later) <= 600
    assert limited(None) is None  # no advice is not "one second"


# -- 9. Idempotency-Key, retries -------------------------------------------------------------------
def test_timed_out_post_is_retried_with_the_same_idempotency_key(caplog):
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.headers.get("Idempotency-Key")))
        if len(seen) == 1:
            raise httpx.ReadTimeout("slow", request=request)  # it may have reached idv
        if len(seen) == 2:
            return httpx.Response(409, json={"error": "conflict", "message": "still running"})
        return httpx.Response(
            201,
            json={
                "verification_id": "vf_1", "status": "pending", "action": "login",
                "options": [["sms"]], "reasons": [], "expires_at": "2026-12-07T04:10:00Z",
            },
        )  # fmt: skip

    c = mock(handler)
    with caplog.at_level(logging.DEBUG, logger="idv_client"):
        v = c.start_verification("alice", "login")
    assert v.status == "pending" and v.expires_at == datetime(2026, 12, 7, 4, 10, tzinfo=UTC)
    keys = {k for _, k in seen}
    assert len(seen) == 3 and len(keys) == 1 and None not in keys
    retries = [r for r in caplog.records if r.name == "idv_client" and "retry" in r.message]
    assert len(retries) == 2 and "/v1/verifications" in retries[0].message

    # A new call gets a new key.
    seen.clear()
    c.start_verification("alice", "login")
    assert seen[0][1] and seen[0][1] not in keys


def test_put_and_delete_are_not_resent_once_they_may_have_arrived():
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        raise httpx.ReadTimeout("slow", request=request)

    c = mock(handler)
    with pytest.raises(TransportError):
        c.put_subject("alice", "+8613800138000")
    with pytest.raises(TransportError):
        c.delete_subject("alice")
    assert calls == ["PUT", "DELETE"]


def test_a_long_retry_after_is_left_to_the_caller():
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(
            503,
            json={"error": "service_unavailable", "message": "db"},
            headers={"Retry-After": "60"},
        )

    with pytest.raises(ServiceUnavailable) as e:
        mock(handler).whoami()
    assert calls == [1] and e.value.retry_after == 60


# -- 6. no secret in a repr or a log line ----------------------------------------------------------
def test_reprs_hide_secrets():
    enrolled = EnrolledFactor.from_json(
        {
            "factor_id": "f1", "type": "totp", "status": "pending", "secret": "JBSWY3DPEHPK3PXP",
            "otpauth_uri": "otpauth://totp/x?secret=JBSWY3DPEHPK3PXP", "qr_svg": "<svg/>",
        }
    )  # fmt: skip
    codes = EnrolledFactor.from_json(
        {"factor_id": "f2", "type": "recovery_code", "status": "active", "codes": ["abcd-efgh"]}
    )
    proof = ProofResult.from_json(
        {"verification_id": "vf", "status": "satisfied", "accepted": True, "assertion": "eyJ.x.y"}
    )
    c = IdvClient("http://idv.test", KEY)
    ac = AsyncIdvClient("http://idv.test", KEY)
    texts = [repr(enrolled), str(enrolled), repr(codes), repr(proof), repr(c), repr(ac)]
    for text in texts:
        for secret in ("JBSWY3DPEHPK3PXP", "abcd-efgh", "eyJ.x.y", KEY, "otpauth://"):
            assert secret not in text, text
    assert enrolled.secret == "JBSWY3DPEHPK3PXP" and codes.codes == ["abcd-efgh"]  # still there
    err = idv_client.InvalidCode("wrong", status=422)
    assert "InvalidCode" in repr(err) and KEY not in repr(err)
    c.close()
    asyncio.run(ac.aclose())


@pytest.mark.slow
def test_no_secret_in_any_log_line_of_a_real_flow(idv_server, phone, caplog):
    key = idv_server.api_key("shop", "verify")
    with caplog.at_level(logging.DEBUG), IdvClient(idv_server.url, key) as idv:
        idv.put_subject("alice", phone)
        totp = idv.enroll_totp("alice", label="138****8000")
        code = pyotp.TOTP(totp.secret).now()
        idv.activate_factor("alice", totp.factor_id, code)
        v = idv.start_verification("alice", "login")
        wrong = idv.prove_totp(v.verification_id, "000000")
        assert not wrong.accepted
        idv.send_challenge(v.verification_id, "sms")
        proof = idv.prove_sms(v.verification_id, idv_server.last_sms_code(phone))
        assert proof.assertion
        with pytest.raises(idv_client.InvalidRequest):
            idv.put_subject("bob", "13800138000x")
        logged = (
            "\n".join(f"{r.getMessage()} {r.args!r} {r.exc_text or ''}" for r in caplog.records)
            + repr(totp)
            + repr(proof)
            + repr(idv)
        )
        assert any(r.name == "idv_client" for r in caplog.records)
        for secret in (
            totp.secret,
            code,
            proof.assertion,
            key,
            phone,
            idv_server.last_sms_code(phone),
        ):
            assert secret not in logged


# -- 8. the contract as the service grows it -------------------------------------------------------
class Contract:
    """A fake idv answering recovery, attestation and erase routes as API.md describes them."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        body = json.loads(request.content) if request.content else None
        if path.endswith("/factors") and method == "POST":
            return httpx.Response(
                201,
                json={"factor_id": "rc_1", "type": "recovery_code", "status": "active",
                      "codes": [f"code-{i:02d}" for i in range(10)]},
            )  # fmt: skip
        if path.endswith("/factors"):
            return httpx.Response(
                200,
                json={"factors": [
                    {"factor_id": "rc_1", "type": "recovery_code", "status": "active",
                     "created_at": "2026-12-07T04:00:00Z", "label": None, "remaining": 9},
                    {"factor_id": "t_1", "type": "totp", "status": "suspended",
                     "created_at": "2026-12-01T00:00:00+00:00", "label": "138****8000"},
                ]},
            )  # fmt: skip
        if path.endswith("/proofs"):
            waiting = body["factor"] == "knowledge"
            return httpx.Response(
                200,
                json={"verification_id": "vf_1", "status": "waiting" if waiting else "pending",
                      "accepted": True, "satisfied": [body["factor"]], "assertion": None,
                      "attempts_left": 4,
                      **({"ready_at": "2026-12-10T04:00:00Z"} if waiting else {})},
            )  # fmt: skip
        if path.endswith("/cancel"):
            return httpx.Response(200, json={"status": "cancelled"})
        if method == "DELETE":
            return httpx.Response(204)
        return httpx.Response(404, json={"error": "not_found", "message": "no"})


def test_recovery_attestation_and_erase_methods_follow_api_md():
    contract = Contract()
    c = mock(contract)
    sheet = c.enroll_recovery_codes("alice", assertion="A1")
    assert sheet.type == "recovery_code" and len(sheet.codes or []) == 10
    factors = c.list_factors("alice")
    assert factors[0].remaining == 9 and factors[1].remaining is None
    assert factors[1].status == "suspended"
    assert parse_time(factors[1].created_at) == datetime(2026, 12, 1, tzinfo=UTC)

    waiting = c.prove_pin("vf_1", PIN)
    assert waiting.status == "waiting" and waiting.ready_at == datetime(2026, 12, 10, 4, tzinfo=UTC)
    assert waiting.attempts_left == 4
    assert c.prove_recovery_code("vf_1", "code-01").ready_at is None
    c.prove_attested("vf_1", "eyJhdHRlc3Q.x.y")
    cancelled = c.cancel_recovery("vf_1", "A2")
    assert cancelled.status == "cancelled" and cancelled.verification_id == "vf_1"
    c.delete_subject("alice", assertion="A3")
    c.delete_subject("bob")
    c.admin_erase_subject("carol/1", operator="desk-7", tenant="cl_shop")
    with pytest.raises(ValueError):
        c.admin_erase_subject("carol", operator="")

    sent = [
        (r.method, r.url.path, json.loads(r.content) if r.content else None)
        for r in contract.requests
    ]
    assert sent[0] == (
        "POST",
        "/v1/subjects/alice/factors",
        {"type": "recovery_code", "assertion": "A1"},
    )
    assert sent[2][2] == {"factor": "knowledge", "secret": PIN}
    assert sent[3][2] == {"factor": "recovery_code", "code": "code-01"}
    assert sent[4][2] == {"factor": "attested", "attestation": "eyJhdHRlc3Q.x.y"}
    assert sent[5] == ("POST", "/v1/verifications/vf_1/cancel", {"assertion": "A2"})
    assert sent[6] == ("DELETE", "/v1/subjects/alice", {"assertion": "A3"})
    assert sent[7] == ("DELETE", "/v1/subjects/bob", None)
    erase = contract.requests[8]
    assert (
        erase.url.raw_path == b"/v1/admin/subjects/carol%2F1?tenant=cl_shop"
        and erase.url.params["tenant"] == "cl_shop"
    )
    assert erase.headers["Idv-Operator"] == "desk-7"
    assert "Idempotency-Key" in contract.requests[0].headers
    assert "Idempotency-Key" not in erase.headers


def test_absent_fields_do_not_crash():
    # An older idv: no attempts_left, ready_at, held_until or even expires_at.
    c = mock(answer(200, {"verification_id": "vf", "status": "pending", "accepted": False}))
    proof = c.prove_totp("vf", "123456")
    assert proof.attempts_left is None and proof.satisfied == [] and proof.ready_at is None
    v = mock(answer(200, {"verification_id": "vf", "status": "pending"})).get_verification("vf")
    assert v.expires_at is None and v.held_until is None and v.options == [] and v.reasons == []
    odd = mock(answer(200, {"verification_id": "vf", "status": "pending", "held_until": "soon"}))
    assert odd.get_verification("vf").held_until is None  # unreadable time: None, not a crash


# -- 9. from_env and the async client --------------------------------------------------------------
def test_from_env(monkeypatch):
    monkeypatch.setenv("IDV_URL", "http://idv.example:8080/")
    monkeypatch.setenv("IDV_API_KEY", KEY)
    c = IdvClient.from_env(timeout=2.0)
    assert c.base_url == "http://idv.example:8080" and KEY not in repr(c)
    assert isinstance(AsyncIdvClient.from_env(), AsyncIdvClient)
    monkeypatch.delenv("IDV_API_KEY")
    with pytest.raises(ValueError, match="IDV_API_KEY"):
        IdvClient.from_env()


def test_async_client_retries_like_the_blocking_one():
    seen: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get("Idempotency-Key"))
        if len(seen) == 1:
            return httpx.Response(503, json={"error": "service_unavailable", "message": "db"})
        return httpx.Response(
            200,
            json={
                "verification_id": "vf",
                "status": "pending",
                "accepted": False,
                "attempts_left": 3,
            },
        )

    async def run() -> ProofResult:
        transport = httpx.MockTransport(handler)
        async with AsyncIdvClient("http://idv.test", KEY, transport=transport, backoff=0) as c:
            return await c.prove_totp("vf", "123456")

    proof = asyncio.run(run())
    assert proof.attempts_left == 3 and len(seen) == 2 and seen[0] == seen[1] is not None


def test_both_clients_have_the_same_surface():
    public = lambda cls: {n for n in vars(cls) if not n.startswith("_")}  # noqa: E731
    assert public(IdvClient) - {"close"} == public(AsyncIdvClient) - {"aclose"}


@pytest.mark.slow
def test_async_client_against_real_idv(idv_server, phone):
    key = idv_server.api_key("shop", "verify")

    async def flow() -> None:
        async with AsyncIdvClient(idv_server.url, key) as idv:
            assert (await idv.whoami()).client_id
            assert (await idv.put_subject("alice", phone)).created
            v = await idv.start_verification("alice", "login")
            assert isinstance(v.expires_at, datetime) and v.expires_at > datetime.now(UTC)
            ch = await idv.send_challenge(v.verification_id, "sms")
            assert isinstance(ch.expires_at, datetime)
            proof = await idv.prove_sms(v.verification_id, idv_server.last_sms_code(phone))
            assert proof.status == "satisfied" and proof.assertion
            with pytest.raises(NotPending):
                await idv.prove_sms(v.verification_id, "000000")

    asyncio.run(flow())


@pytest.mark.slow
def test_typed_helpers_against_real_idv(idv_server, phone):
    with IdvClient(idv_server.url, idv_server.api_key("shop", "verify")) as idv:
        dev = with_device(idv, "alice", phone)
        totp = idv.enroll_totp(
            "alice", assertion=device_step_up(idv, dev, "alice", "enroll_factor")
        )
        idv.activate_factor("alice", totp.factor_id, pyotp.TOTP(totp.secret).now())
        idv.enroll_knowledge(
            "alice", PIN, assertion=device_step_up(idv, dev, "alice", "enroll_factor")
        )
        factors = idv.list_factors("alice")
        assert all(isinstance(parse_time(f.created_at), datetime) for f in factors)

        v = idv.start_verification("alice", "payment_password_reset")
        assert ["totp", "knowledge"] in v.options
        wrong = idv.prove_pin(v.verification_id, "wrong-pin-000")
        assert not wrong.accepted
        # attempts_left where idv sends it (API.md), else None: never a crash, never a guess.
        assert wrong.attempts_left is None or wrong.attempts_left == 4
        assert idv.prove_pin(v.verification_id, PIN).accepted
        # The activation used this step's code (one use, ever): the next step's, within the
        # one step of drift RFC 6238 §5.2 allows.
        code = pyotp.TOTP(totp.secret).at(time.time() + 30)
        done = idv.prove_totp(v.verification_id, code)
        assert done.status == "satisfied" and done.assertion
        assert set(done.satisfied) == {"totp", "knowledge"}

        v = idv.start_verification("alice", "login")
        ch = idv.send_challenge(v.verification_id, "device")
        assert idv.prove_device(v.verification_id, dev.factor_id, dev.sign(ch.challenge)).assertion
