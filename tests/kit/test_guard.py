"""The relying party's guard: ``AssertionVerifier`` and ``require_step_up`` enforce what they
advertise (issue 21, items 1-5): ``acr`` and ``max_age`` (RFC 9470 §3), a subject that cannot be
found (401 ``no_subject``, never a 500), idv out of reach (503, not a new step-up), a JWKS cache
that expires (``Cache-Control: max-age``) and one leeway for ``iat``, ``nbf`` and ``exp``.

idv's JWKS is served by an ``httpx.MockTransport`` here so each case is exact; the real stack is
in the tests at the end (a real ``idv serve``)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import flask
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from idv_client import AssertionInvalid, AssertionVerifier, IdvClient, JwksUnavailable
from idv_client.flask import init_app, require_step_up
from idv_client.verifier import cache_ttl
from tests.e2e.conftest import free_port
from tests.http.flow import PIN
from tests.kit.test_client import device_step_up, with_device

AUD = "cl_shop"


class FakeIdv:
    """idv's JWKS endpoint: its keys, its ``Cache-Control``, and whether it answers at all."""

    def __init__(self) -> None:
        self.keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self.cache_control: str | None = "public, max-age=300"
        self.up = True
        self.fetches = 0
        self.add_key("k1")

    def add_key(self, kid: str) -> None:
        self.keys[kid] = ec.generate_private_key(ec.SECP256R1())

    def handler(self, request: httpx.Request) -> httpx.Response:
        if not self.up:
            raise httpx.ConnectError("refused", request=request)
        self.fetches += 1
        entries = []
        for kid, key in self.keys.items():
            jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
            entries.append({**jwk, "kid": kid, "alg": "ES256", "use": "sig"})
        headers = {"Cache-Control": self.cache_control} if self.cache_control else {}
        return httpx.Response(200, json={"keys": entries}, headers=headers)

    def token(self, kid: str = "k1", **claims: Any) -> str:
        now = int(time.time())
        body = {
            "iss": "idv", "aud": AUD, "sub": "alice", "action": "payment_password_reset",
            "acr": "aal2", "amr": ["otp", "pin"], "auth_time": now, "iat": now,
            "exp": now + 300, "jti": f"vf_{time.monotonic_ns()}",
        }  # fmt: skip
        body.update(claims)
        body = {k: v for k, v in body.items() if v is not None}
        headers = {"kid": kid, "typ": "idv-assertion+jwt"}
        return jwt.encode(body, self.keys[kid], "ES256", headers=headers)


@pytest.fixture
def fake() -> FakeIdv:
    return FakeIdv()


@pytest.fixture
def clock() -> list[float]:
    return [1000.0]


@pytest.fixture
def verifier(fake: FakeIdv, clock: list[float]) -> AssertionVerifier:
    http = httpx.Client(transport=httpx.MockTransport(fake.handler))
    return AssertionVerifier("http://idv.test", AUD, http=http, monotonic=lambda: clock[0])


def reason(verifier: AssertionVerifier, token: str, **kw: Any) -> str:
    with pytest.raises(AssertionInvalid) as e:
        verifier.verify(token, **{"subject": "alice", "action": "payment_password_reset", **kw})
    return e.value.reason


# -- 1. acr and max_age ----------------------------------------------------------------------------
def test_acr_is_enforced_in_order_and_unknown_values_fail_closed(fake, verifier):
    ok: Callable[..., dict[str, Any]] = lambda tok, **kw: verifier.verify(  # noqa: E731
        tok, subject="alice", action="payment_password_reset", **kw
    )
    # RFC 9470 §3 / API.md: aal1 < aal2 < aal3; a stronger assertion passes a weaker requirement.
    assert reason(verifier, fake.token(acr="aal1", amr=["otp"]), acr="aal2") == "insufficient_acr"
    assert reason(verifier, fake.token(acr="aal2"), acr="aal3") == "insufficient_acr"
    assert ok(fake.token(acr="aal2"), acr="aal2")["acr"] == "aal2"
    assert ok(fake.token(acr="aal3"), acr="aal2")["acr"] == "aal3"
    assert ok(fake.token(acr="aal2"), acr="aal1")["acr"] == "aal2"
    # Unknown or missing acr in the token never satisfies a requirement.
    for odd in ("aal9", "AAL2", "", ["aal2"], 2, None):
        assert reason(verifier, fake.token(acr=odd), acr="aal1") == "insufficient_acr", odd
    # Without a requirement the claim is not judged (the caller asked for nothing).
    assert ok(fake.token(acr="aal1"))["acr"] == "aal1"
    # An unknown requirement is a programming error, refused before any token is trusted.
    with pytest.raises(ValueError):
        ok(fake.token(), acr="aal4")


def test_max_age_against_auth_time(fake, verifier):
    now = int(time.time())
    old = fake.token(auth_time=now - 400, iat=now - 10, exp=now + 290)
    assert reason(verifier, old, max_age=300) == "too_old"
    # Within max_age plus the leeway: fine; and no max_age asked: not judged.
    verifier.verify(
        fake.token(auth_time=now - 320), subject="alice", action="payment_password_reset",
        max_age=300,
    )  # fmt: skip
    verifier.verify(old, subject="alice", action="payment_password_reset")
    assert reason(verifier, fake.token(auth_time=None), max_age=300) == "missing_claim"
    assert reason(verifier, fake.token(auth_time=now + 120), max_age=300) == "not_yet_valid"


def _app(verifier: AssertionVerifier, **guard: Any) -> flask.Flask:
    app = flask.Flask("rp")
    app.secret_key = "test-only"
    init_app(app, verifier)

    @app.post("/login-as/<uid>")
    def login_as(uid: str) -> dict[str, bool]:
        flask.session["user_id"] = uid
        return {"ok": True}

    # The README's snippet, word for word: session["user_id"] raises KeyError when signed out.
    @app.post("/payment-password")
    @require_step_up(
        "payment_password_reset", subject=lambda **_: flask.session["user_id"], **guard
    )
    def reset_payment_password() -> dict[str, Any]:
        return {"ok": True, "amr": flask.g.idv_assertion["amr"]}

    return app


def test_decorator_answers_rfc9470_for_a_weak_or_old_assertion(fake, verifier):
    http = _app(verifier).test_client()
    http.post("/login-as/alice")
    weak = http.post("/payment-password", headers={"X-Idv-Assertion": fake.token(acr="aal1")})
    assert weak.status_code == 401 and weak.json["reason"] == "insufficient_acr"
    challenge = weak.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer error="insufficient_user_authentication"')
    assert 'acr_values="aal2"' in challenge and "max_age=300" in challenge
    now = int(time.time())
    stale = fake.token(auth_time=now - 400, iat=now - 5, exp=now + 200)
    old = http.post("/payment-password", headers={"X-Idv-Assertion": stale})
    assert old.status_code == 401 and old.json["reason"] == "too_old"
    assert "max_age=300" in old.headers["WWW-Authenticate"]
    good = http.post("/payment-password", headers={"X-Idv-Assertion": fake.token()})
    assert good.status_code == 200 and good.json["amr"] == ["otp", "pin"]

    strict = _app(verifier, acr="aal3", max_age=60).test_client()
    strict.post("/login-as/alice")
    r = strict.post("/payment-password", headers={"X-Idv-Assertion": fake.token()})
    assert r.status_code == 401 and r.json["reason"] == "insufficient_acr"
    assert 'acr_values="aal3"' in r.headers["WWW-Authenticate"]
    assert "max_age=60" in r.headers["WWW-Authenticate"]
    with pytest.raises(ValueError):
        require_step_up("login", subject="uid", acr="aal-2")  # type: ignore[arg-type]


# -- 2. no subject ---------------------------------------------------------------------------------
def test_no_subject_is_a_401_json_not_a_500(fake, verifier):
    http = _app(verifier).test_client()
    r = http.post("/payment-password", headers={"X-Idv-Assertion": fake.token()})
    assert r.status_code == 401 and r.is_json, r.data[:200]
    assert r.json["error"] == "no_subject" and r.json["action"] == "payment_password_reset"
    assert r.headers["WWW-Authenticate"].startswith("Bearer")

    app = flask.Flask("rp2")
    init_app(app, verifier)

    def broken() -> str:
        raise RuntimeError("the session store is down")

    @app.post("/a")
    @require_step_up("payment_password_reset", subject=broken)
    def a() -> str:
        return "reached"

    @app.post("/b")
    @require_step_up("payment_password_reset", subject=lambda: None)
    def b() -> str:
        return "reached"

    @app.post("/c/<uid>")
    @require_step_up("payment_password_reset", subject="missing_arg")
    def c(uid: str) -> str:
        return "reached"

    client = app.test_client()
    for path in ("/a", "/b", "/c/alice"):
        r = client.post(path, headers={"X-Idv-Assertion": fake.token()})
        assert (r.status_code, r.json["error"]) == (401, "no_subject"), path


# -- 3. idv out of reach ---------------------------------------------------------------------------
def test_jwks_unreachable_is_its_own_error_and_a_503(fake, verifier, clock):
    token = fake.token()
    fake.up = False
    with pytest.raises(JwksUnavailable) as e:
        verifier.verify(token, subject="alice", action="payment_password_reset")
    assert not isinstance(e.value, AssertionInvalid) and e.value.code == "jwks_unavailable"

    http = _app(verifier).test_client()
    http.post("/login-as/alice")
    r = http.post("/payment-password", headers={"X-Idv-Assertion": token})
    assert r.status_code == 503 and r.json["error"] == "service_unavailable"
    assert "WWW-Authenticate" not in r.headers and int(r.headers["Retry-After"]) >= 1

    # A failure is not retried on every request (retry_interval), then idv is asked again.
    assert fake.fetches == 0
    fake.up = True
    clock[0] += verifier.retry_interval
    assert verifier.verify(token, subject="alice", action="payment_password_reset")["sub"]
    assert fake.fetches == 1


def test_jwks_unreachable_on_a_closed_port():
    verifier = AssertionVerifier(f"http://127.0.0.1:{free_port()}", AUD, timeout=0.5)
    with pytest.raises(JwksUnavailable):
        verifier.verify(FakeIdv().token(), subject="alice", action="payment_password_reset")


def test_a_malformed_jwks_is_unavailable_not_invalid(verifier, fake):
    fake.handler = lambda request: httpx.Response(200, json={"nokeys": 1})  # type: ignore[method-assign]
    v = AssertionVerifier(
        "http://idv.test", AUD, http=httpx.Client(transport=httpx.MockTransport(fake.handler))
    )
    with pytest.raises(JwksUnavailable):
        v.verify(FakeIdv().token(), subject="alice", action="payment_password_reset")


# -- 4. the JWKS cache expires ---------------------------------------------------------------------
def test_jwks_cache_follows_max_age_so_a_dropped_key_stops_verifying(fake, verifier, clock):
    fake.cache_control = "public, max-age=120"
    token = fake.token()
    verifier.verify(token, subject="alice", action="payment_password_reset")
    clock[0] += 119
    verifier.verify(token, subject="alice", action="payment_password_reset")
    assert fake.fetches == 1  # fresh: served from the cache

    # idv drops k1 (rotated out, or compromised) and signs with k2.
    fake.keys.pop("k1")
    fake.add_key("k2")
    clock[0] += 2  # 121 s: the cached set is stale, fetched again
    assert reason(verifier, token) == "unknown_kid"
    assert fake.fetches == 2
    assert verifier.verify(fake.token("k2"), subject="alice", action="payment_password_reset")


def test_jwks_ttl_is_bounded_and_defaults_without_a_header(fake, verifier, clock):
    fake.cache_control = "no-store"  # 0 s would refetch on every token: min_ttl (30 s) holds
    token = fake.token()
    for _ in range(5):
        verifier.verify(token, subject="alice", action="payment_password_reset")
    assert fake.fetches == 1
    clock[0] += verifier.min_ttl
    verifier.verify(token, subject="alice", action="payment_password_reset")
    assert fake.fetches == 2

    fake.cache_control = None  # no header: DEFAULT_JWKS_TTL (300 s)
    clock[0] += verifier.min_ttl
    verifier.verify(token, subject="alice", action="payment_password_reset")
    assert fake.fetches == 3
    clock[0] += 299
    verifier.verify(token, subject="alice", action="payment_password_reset")
    assert fake.fetches == 3

    assert cache_ttl("public, max-age=300") == 300
    assert cache_ttl('max-age="60", must-revalidate') == 60
    assert cache_ttl("s-maxage=10") is None and cache_ttl(None) is None


def test_unknown_kid_refetch_is_rate_limited(fake, verifier, clock):
    verifier.verify(fake.token(), subject="alice", action="payment_password_reset")
    fake.add_key("bogus")
    bogus = fake.token("bogus")
    fake.keys.pop("bogus")  # a kid idv never published
    for _ in range(20):
        assert reason(verifier, bogus) == "unknown_kid"
    assert fake.fetches == 2  # one refetch for the first unknown kid, none for the flood
    clock[0] += verifier.refetch_interval
    assert reason(verifier, bogus) == "unknown_kid"
    assert fake.fetches == 3


# -- 5. leeway -------------------------------------------------------------------------------------
def test_default_leeway_30s_applies_alike_to_iat_nbf_exp(fake, verifier):
    assert verifier.leeway == 30
    now = int(time.time())
    ok = dict(subject="alice", action="payment_password_reset")
    # idv's clock 20 s ahead of ours: iat, nbf and auth_time in our future, within the leeway.
    verifier.verify(fake.token(iat=now + 20, nbf=now + 20, auth_time=now + 20), **ok)
    verifier.verify(fake.token(iat=now - 300, exp=now - 20), **ok)  # expired 20 s ago: skew
    assert reason(verifier, fake.token(iat=now + 40)) == "not_yet_valid"
    assert reason(verifier, fake.token(nbf=now + 40)) == "not_yet_valid"
    assert reason(verifier, fake.token(iat=now - 330, exp=now - 40)) == "expired"

    strict = AssertionVerifier(
        "http://idv.test", AUD, leeway=0,
        http=httpx.Client(transport=httpx.MockTransport(fake.handler)),
    )  # fmt: skip
    assert reason(strict, fake.token(iat=now + 20)) == "not_yet_valid"
    assert reason(strict, fake.token(iat=now - 300, exp=now - 1)) == "expired"
    with pytest.raises(ValueError):
        AssertionVerifier("http://idv.test", AUD, leeway=-1)


# -- the real stack --------------------------------------------------------------------------------
@pytest.mark.slow
def test_real_idv_one_factor_login_does_not_pass_an_aal2_guard(idv_server, phone):
    with IdvClient(idv_server.url, idv_server.api_key("shop", "verify")) as idv:
        dev = with_device(idv, "alice", phone)
        audience = idv.whoami().client_id
        login = device_step_up(idv, dev, "alice", "login")  # one factor: acr aal1
        # Two factors (device + PIN) for a sensitive action: aal2.
        enroll = device_step_up(idv, dev, "alice", "enroll_factor")
        assert idv.enroll_knowledge("alice", PIN, assertion=enroll).status == "active"
        v = idv.start_verification("alice", "payment_password_reset")
        assert idv.prove_pin(v.verification_id, PIN).accepted
        ch = idv.send_challenge(v.verification_id, "device")
        strong = idv.prove_device(v.verification_id, dev.factor_id, dev.sign(ch.challenge))
        assert strong.status == "satisfied" and strong.assertion

    verifier = AssertionVerifier(idv_server.url, audience)
    assert jwt.decode(login, options={"verify_signature": False})["acr"] == "aal1"
    app = flask.Flask("rp")
    init_app(app, verifier)

    @app.post("/users/<uid>/login-guarded")
    @require_step_up("login", subject="uid")  # default acr aal2
    def guarded(uid: str) -> dict[str, bool]:
        return {"ok": True}

    @app.post("/users/<uid>/payment-password")
    @require_step_up("payment_password_reset", subject="uid")
    def reset(uid: str) -> dict[str, bool]:
        return {"ok": True}

    http = app.test_client()
    r = http.post("/users/alice/login-guarded", headers={"X-Idv-Assertion": login})
    assert r.status_code == 401 and r.json["reason"] == "insufficient_acr"
    r = http.post("/users/alice/payment-password", headers={"X-Idv-Assertion": strong.assertion})
    assert r.status_code == 200 and r.json["ok"]
