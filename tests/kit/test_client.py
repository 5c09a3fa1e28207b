"""``idv_client`` against a real ``idv serve`` process: every method, every error class and the
verifier's refusals (RFC 8725), the Flask decorator (RFC 9470)."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime, timedelta

import flask
import httpx
import jwt
import pyotp
import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric import ec

import idv_client
from idv_client import (
    AssertionInvalid,
    AssertionVerifier,
    FactorNotAllowed,
    Forbidden,
    IdvClient,
    InvalidCode,
    InvalidRequest,
    NotFound,
    NotPending,
    PayloadTooLarge,
    RateLimited,
    StepUpRequired,
    TransportError,
    Unauthorized,
    UnknownAction,
    WeakSecret,
)
from idv_client.flask import init_app, require_step_up
from tests.e2e.conftest import free_port
from tests.http.flow import PIN, Device

pytestmark = pytest.mark.slow


@pytest.fixture
def idv(idv_server):
    with IdvClient(idv_server.url, idv_server.api_key("shop", "verify")) as c:
        yield c


@pytest.fixture
def carrier(idv_server):
    with IdvClient(idv_server.url, idv_server.api_key("carrier", "carrier")) as c:
        yield c


def device_step_up(idv: IdvClient, dev: Device, subject: str, action: str) -> str:
    """One verification satisfied by the device alone; returns the assertion."""
    v = idv.start_verification(subject, action)
    assert ["device"] in v.options, v
    ch = idv.send_challenge(v.verification_id, "device")
    assert ch.challenge and ch.factor == "device"
    proof = idv.prove(
        v.verification_id, "device", factor_id=dev.factor_id, signature=dev.sign(ch.challenge)
    )
    assert proof.accepted and proof.status == "satisfied" and proof.assertion, proof
    return proof.assertion


def with_device(idv: IdvClient, subject: str, phone: str) -> Device:
    """A subject whose first strong factor is an ES256 device key (needs no assertion)."""
    assert idv.put_subject(subject, phone).created
    dev = Device.new("ES256")
    enrolled = idv.enroll_device(subject, dev.public_pem(), "ES256", label="phone")
    assert (enrolled.type, enrolled.status, enrolled.label) == ("device", "active", "phone")
    dev.factor_id = enrolled.factor_id
    return dev


# -- every method --------------------------------------------------------------------------------
def test_whoami_subjects_and_errors_of_tenancy(idv_server, idv, carrier, phone):
    me = idv.whoami()
    assert me.scopes == ["verify"] and me.client_id and me.name == "shop"

    created = idv.put_subject("alice", phone)
    assert created.created and created.subject_id == "alice"
    assert created.phone.startswith("+86 139****") and phone not in str(created.raw)
    again = idv.put_subject("alice", phone)
    assert not again.created and again.phone == created.phone

    with IdvClient(idv_server.url, "not-a-key") as bad, pytest.raises(Unauthorized) as e:
        bad.whoami()
    assert e.value.code == "unauthorized" and e.value.status == 401
    with pytest.raises(Forbidden):
        carrier.put_subject("mallory", phone)
    with pytest.raises(Forbidden):
        idv.report_carrier_event(phone, "sim_swap", datetime.now(UTC))
    with pytest.raises(InvalidRequest) as e:
        idv.put_subject("bob", "13800138000")  # not E.164
    assert e.value.code == "invalid_request" and e.value.message
    with pytest.raises(PayloadTooLarge):
        idv.put_subject("bob", "+" + "1" * 1_100_000)

    # Another tenant's subjects answer 404.
    other = IdvClient(idv_server.url, idv_server.api_key("other", "verify"))
    with other, pytest.raises(NotFound):
        other.list_factors("alice")
    # A person's data on request (PIPL art. 45): the masked phone, never another tenant's.
    held = idv.export_subject("alice")
    assert held["subject_id"] == "alice" and held["phone"]["masked"] == created.phone
    stranger = IdvClient(idv_server.url, idv_server.api_key("other2", "verify"))
    with stranger, pytest.raises(NotFound):
        stranger.export_subject("alice")

    idv.delete_subject("alice")
    with pytest.raises(NotFound) as e:
        idv.list_factors("alice")
    assert isinstance(e.value, idv_client.IdvError) and e.value.code == "not_found"


def test_factors_verifications_and_carrier_events(idv_server, idv, carrier, phone):
    dev = with_device(idv, "alice", phone)

    # A second factor needs an enroll_factor step-up (API.md); without a PIN any one factor does.
    with pytest.raises(StepUpRequired) as e:
        idv.enroll_totp("alice")
    assert e.value.code == "step_up_required" and e.value.status == 403
    totp = idv.enroll_totp("alice", assertion=device_step_up(idv, dev, "alice", "enroll_factor"))
    assert totp.status == "pending" and totp.secret and totp.otpauth_uri.startswith("otpauth://")
    with pytest.raises(InvalidCode):
        idv.activate_factor("alice", totp.factor_id, "000000")
    code = pyotp.TOTP(totp.secret).now()
    assert idv.activate_factor("alice", totp.factor_id, code).status == "active"

    with pytest.raises(WeakSecret):
        idv.enroll_knowledge(
            "alice", "123456", assertion=device_step_up(idv, dev, "alice", "enroll_factor")
        )
    pin = idv.enroll_knowledge(
        "alice", PIN, assertion=device_step_up(idv, dev, "alice", "enroll_factor")
    )
    assert pin.type == "knowledge" and pin.status == "active" and pin.secret is None

    factors = idv.list_factors("alice")
    assert {f.type for f in factors} >= {"device", "totp", "knowledge"}
    assert all(f.created_at and f.status == "active" for f in factors if f.type != "sms")

    # A sensitive action: device + PIN.
    v = idv.start_verification(
        "alice", "payment_password_reset", context={"ip": "203.0.113.7", "user_agent": "pytest"}
    )
    assert v.status == "pending" and v.pending and v.action == "payment_password_reset"
    assert ["device", "knowledge"] in v.options and "sms" not in v.factors and v.expires_at
    with pytest.raises(FactorNotAllowed):
        idv.send_challenge(v.verification_id, "sms")
    with pytest.raises(InvalidRequest):
        idv.send_challenge(v.verification_id, "totp")  # only sms and device have challenges
    wrong = idv.prove(v.verification_id, "knowledge", secret="wrong-pin-000")
    assert not wrong.accepted and wrong.status == "pending" and wrong.assertion is None
    first = idv.prove(v.verification_id, "knowledge", secret=PIN)
    assert first.accepted and first.satisfied == ["knowledge"] and first.assertion is None
    ch = idv.send_challenge(v.verification_id, "device")
    done = idv.prove(
        v.verification_id, "device", factor_id=dev.factor_id, signature=dev.sign(ch.challenge)
    )
    assert done.status == "satisfied" and done.assertion
    assert set(done.satisfied) == {"device", "knowledge"}
    got = idv.get_verification(v.verification_id)
    assert got.status == "satisfied" and "assertion" not in got.raw
    with pytest.raises(NotPending) as e:
        idv.prove(v.verification_id, "knowledge", secret=PIN)
    assert e.value.status == 409

    with pytest.raises(UnknownAction):
        idv.start_verification("alice", "launch_rockets")
    with pytest.raises(NotFound):
        idv.start_verification("nobody", "login")
    with pytest.raises(NotFound):
        idv.get_verification("vf_nope")

    # Removing a factor needs the step-up too (device + PIN once a PIN exists).
    with pytest.raises(StepUpRequired):
        idv.remove_factor("alice", totp.factor_id)
    v = idv.start_verification("alice", "enroll_factor")
    idv.prove(v.verification_id, "knowledge", secret=PIN)
    ch = idv.send_challenge(v.verification_id, "device")
    proof = idv.prove(
        v.verification_id, "device", factor_id=dev.factor_id, signature=dev.sign(ch.challenge)
    )
    idv.remove_factor("alice", totp.factor_id, assertion=proof.assertion)
    assert totp.factor_id not in {f.factor_id for f in idv.list_factors("alice")}

    # SMS login works, then a SIM swap takes SMS away and holds the payment-password reset (T1).
    v = idv.start_verification("alice", "login")
    assert ["sms"] in v.options
    sent = idv.send_challenge(v.verification_id, "sms")
    assert sent.sent_to and sent.sent_to.startswith("+86 139****")
    proof = idv.prove(v.verification_id, "sms", code=idv_server.last_sms_code(phone))
    assert proof.status == "satisfied" and proof.assertion

    at = datetime.now(UTC) - timedelta(hours=2)
    assert carrier.report_carrier_event(phone, "sim_swap", at).recorded is True
    assert carrier.report_carrier_event(phone, "sim_swap", at).recorded is False  # same event
    with pytest.raises(InvalidRequest):
        carrier.report_carrier_event(phone, "sim_swap", datetime.now(UTC) + timedelta(hours=1))
    login = idv.start_verification("alice", "login")
    assert "sms" not in login.factors and "recent_sim_change" in login.reasons
    held = idv.start_verification("alice", "payment_password_reset")
    assert held.status == "denied" and held.options == [] and "recent_sim_change" in held.reasons
    # held_until: the end of the 7-day hold after the swap (policies/default.toml), on GET too.
    assert isinstance(held.held_until, datetime)
    assert abs(held.held_until - (at + timedelta(days=7))) < timedelta(seconds=5)
    assert idv.get_verification(held.verification_id).held_until == held.held_until
    assert login.held_until is None  # SMS ruled out, but login itself is not held
    with pytest.raises(NotPending):
        idv.send_challenge(held.verification_id, "device")


def test_rate_limited_carries_retry_after(idv_server, idv, phone):
    idv.put_subject("alice", phone)
    with pytest.raises(RateLimited) as e:
        for _ in range(10):  # sms_sends: 5 per 10 minutes per phone (ASVS 6.6.3)
            v = idv.start_verification("alice", "login")
            idv.send_challenge(v.verification_id, "sms")
    assert e.value.code == "rate_limited" and e.value.status == 429
    assert 1 <= e.value.retry_after <= 600


def test_locked_after_failed_proofs(idv_server, idv, phone):
    idv.put_subject("alice", phone)
    v = idv.start_verification("alice", "login")
    idv.send_challenge(v.verification_id, "sms")
    statuses = [idv.prove(v.verification_id, "sms", code="000000").status for _ in range(5)]
    assert statuses[-1] == "locked" and set(statuses[:-1]) == {"pending"}
    with pytest.raises(NotPending):
        idv.prove(v.verification_id, "sms", code="000000")


# -- transport: timeouts and retries only where safe -----------------------------------------------
def test_transport_error_when_idv_is_down():
    c = IdvClient(f"http://127.0.0.1:{free_port()}", "k", timeout=0.5, backoff=0)
    with c, pytest.raises(TransportError) as e:
        c.whoami()
    assert e.value.code == "transport_error" and e.value.status is None


def test_retries_get_and_unsent_requests_only():
    calls: list[str] = []
    keys: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.method)
        keys.append(request.headers.get("Idempotency-Key"))
        if request.method == "PUT" and len(calls) == 1:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(503, json={"error": "service_unavailable", "message": "db"})

    c = IdvClient("http://idv.test", "k", transport=httpx.MockTransport(handler), backoff=0)
    with pytest.raises(idv_client.ServerError):
        c.get_verification("vf_1")
    assert calls == ["GET", "GET", "GET"]  # GET: retried on 503
    calls.clear()
    keys.clear()
    with pytest.raises(idv_client.ServerError):
        c.prove("vf_1", "totp", code="123456")
    # A POST is retried only with its Idempotency-Key, the same on every attempt (API.md), so
    # idv answers a repeat with the first answer and does nothing twice.
    assert calls == ["POST", "POST", "POST"] and keys[0] and len(set(keys)) == 1
    calls.clear()
    keys.clear()
    with pytest.raises(idv_client.ServerError):
        c.put_subject("a", "+8613800138000")
    assert calls == ["PUT", "PUT"]  # connect error: nothing was sent, so once more (not on 503)
    assert keys == [None, None]  # only POSTs carry an Idempotency-Key


# -- the verifier ----------------------------------------------------------------------------------
def _tamper(token: str) -> str:
    head, payload, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "mallory"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{head}.{forged}.{sig}"


def test_verifier_accepts_and_refuses(idv_server, idv, phone):
    dev = with_device(idv, "alice", phone)
    audience = idv.whoami().client_id
    verifier = AssertionVerifier(idv_server.url, audience)
    token = device_step_up(idv, dev, "alice", "login")

    claims = verifier.verify(token, subject="alice", action="login")
    assert claims["sub"] == "alice" and claims["aud"] == audience and claims["iss"] == "idv"
    assert claims["amr"] and claims["exp"] - claims["iat"] <= 300 and claims["jti"]

    def reason(tok: str, v: AssertionVerifier = verifier, **kw: str) -> str:
        with pytest.raises(AssertionInvalid) as e:
            v.verify(tok, **{"subject": "alice", "action": "login", **kw})
        return e.value.reason

    assert reason(_tamper(token), subject="mallory") == "bad_signature"
    head, body, sig = token.split(".")
    assert reason(f"{head}.{body}.{sig[:-4]}AAAA") == "bad_signature"
    assert reason("not-a-jwt") == "malformed"
    assert reason(token, subject="bob") == "wrong_subject"
    assert reason(token, action="payment_password_reset") == "wrong_action"
    assert reason(token, v=AssertionVerifier(idv_server.url, "someone-else")) == "wrong_audience"
    assert reason(token, v=AssertionVerifier(idv_server.url, audience, issuer="x")) == (
        "wrong_issuer"
    )
    assert reason(token, v=AssertionVerifier(idv_server.url, audience, algorithms=["EdDSA"])) == (
        "bad_algorithm"
    )

    # Tokens idv did not sign: explicit typ (RFC 8725 §3.11), no "none", unknown kid.
    own = ec.generate_private_key(ec.SECP256R1())
    now = int(time.time())
    forged_claims = {
        "iss": "idv", "aud": audience, "sub": "alice", "action": "login",
        "iat": now, "exp": now + 60, "jti": "x",
    }  # fmt: skip
    kid = jwt.get_unverified_header(token)["kid"]
    assert reason(jwt.encode(forged_claims, own, "ES256", headers={"kid": kid})) == "bad_typ"
    none = jwt.encode(forged_claims, None, "none", headers={"kid": kid, "typ": "idv-assertion+jwt"})
    assert reason(none) == "bad_algorithm"
    forged = jwt.encode(
        forged_claims, own, "ES256", headers={"kid": kid, "typ": "idv-assertion+jwt"}
    )
    assert reason(forged) == "bad_signature"

    # Expired: the test process travels past exp and the default 30 s leeway (time-machine moves
    # this process's clock only).
    with time_machine.travel(datetime.fromtimestamp(claims["exp"] + 31, UTC)):
        assert reason(token) == "expired"

    # Single use.
    fresh = device_step_up(idv, dev, "alice", "login")
    verifier.verify(fresh, subject="alice", action="login", consume=True)
    assert reason(fresh, consume=True) == "replayed"
    verifier.verify(fresh, subject="alice", action="login")  # not consuming: still valid


@pytest.mark.skipif(not os.environ.get("IDV_TEST_REDIS_URL"), reason="IDV_TEST_REDIS_URL unset")
def test_verifier_replay_store_in_redis(idv_server, idv, phone):
    dev = with_device(idv, "alice", phone)
    url = os.environ["IDV_TEST_REDIS_URL"]
    aud = idv.whoami().client_id
    one, two = (
        AssertionVerifier(idv_server.url, aud, replay_store=url),
        AssertionVerifier(idv_server.url, aud, replay_store=url),
    )
    token = device_step_up(idv, dev, "alice", "login")
    one.verify(token, subject="alice", action="login", consume=True)
    with pytest.raises(AssertionInvalid) as e:
        two.verify(token, subject="alice", action="login", consume=True)
    assert e.value.reason == "replayed"


def test_unknown_kid_refetches_once_a_minute_and_follows_rotation(idv_server, idv, phone):
    dev = with_device(idv, "alice", phone)
    clock = [1000.0]
    verifier = AssertionVerifier(idv_server.url, idv.whoami().client_id, monotonic=lambda: clock[0])
    old = device_step_up(idv, dev, "alice", "login")
    verifier.verify(old, subject="alice", action="login")
    assert verifier.jwks_fetches == 1

    rotated = idv_server.idv("keys", "rotate-signing")
    assert rotated.returncode == 0, rotated.stderr
    idv_server.restart()  # instances load the key ring at start (idv keys rotate-signing --help)
    new = device_step_up(idv, dev, "alice", "login")
    assert jwt.get_unverified_header(new)["kid"] != jwt.get_unverified_header(old)["kid"]
    verifier.verify(new, subject="alice", action="login")  # unknown kid: one refetch
    assert verifier.jwks_fetches == 2
    verifier.verify(old, subject="alice", action="login")  # the previous key stays published
    assert verifier.jwks_fetches == 2

    # Garbage kids cannot make the verifier hammer idv: at most one refetch a minute.
    head = base64.urlsafe_b64encode(
        json.dumps({"alg": "ES256", "typ": "idv-assertion+jwt", "kid": "nope"}).encode()
    ).rstrip(b"=")
    bogus = head.decode() + "." + new.split(".", 1)[1]
    clock[0] += 30
    with pytest.raises(AssertionInvalid) as e:
        verifier.verify(bogus, subject="alice", action="login")
    assert e.value.reason == "unknown_kid" and verifier.jwks_fetches == 2
    clock[0] += 31
    with pytest.raises(AssertionInvalid):
        verifier.verify(bogus, subject="alice", action="login")
    assert verifier.jwks_fetches == 3


# -- the Flask decorator (RFC 9470) ----------------------------------------------------------------
def test_require_step_up_decorator(idv_server, idv, phone):
    dev = with_device(idv, "alice", phone)
    app = flask.Flask("relying_party")
    init_app(app, AssertionVerifier(idv_server.url, idv.whoami().client_id))

    @app.post("/users/<uid>/loan")
    @require_step_up("login", subject="uid", acr="aal1")  # one factor yields aal1 (API.md)
    def loan(uid: str):
        return {"ok": True, "amr": flask.g.idv_assertion["amr"]}

    http = app.test_client()
    r = http.post("/users/alice/loan")
    assert r.status_code == 401 and r.json["action"] == "login"
    challenge = r.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_user_authentication"')
    assert 'acr_values="aal1"' in challenge

    token = device_step_up(idv, dev, "alice", "login")
    assert http.post("/users/bob/loan", headers={"X-Idv-Assertion": token}).status_code == 401
    ok = http.post("/users/alice/loan", headers={"X-Idv-Assertion": token})
    assert ok.status_code == 200 and ok.json["ok"]
    replay = http.post("/users/alice/loan", data={"idv_assertion": token})
    assert replay.status_code == 401 and replay.json["reason"] == "replayed"
