"""The Lendly portal's server side through Flask's test client, against a real ``idv serve``
(issue 21, "The demo portal"): a mistyped TOTP activation code keeps the set-up, forms are
checked on the server before the step-up assertion is spent, a missing factor leads to the
security settings, failed proofs and the SMS limit say what happened. The browser tests
(test_portal_browser.py) cover layout, JavaScript and the Chinese pages."""

from __future__ import annotations

import base64
import re
import time
from html import unescape

import pyotp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from idv_client import messages as idv_text
from tests.kit.browser import once

pytestmark = [pytest.mark.slow, once]  # a real idv serve per test; UI, not storage
PIN = "739184"


def body(response) -> str:
    """The page as the person reads its text (entities such as &#39; decoded)."""
    return unescape(response.get_data(as_text=True))


def flashes(html: str) -> list[str]:
    """The flash messages of a page, as the person reads them."""
    found = re.findall(r'<p class="flash [a-z]+"[^>]*>([^<]*)</p>', html)
    return [unescape(m) for m in found if m.strip()]


class Visitor:
    """One browser session on the portal (cookies kept), English pages."""

    def __init__(self, app, server, phone):
        self.http = app.test_client()
        self.server = server
        self.phone = phone
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.device_id: str | None = None

    def get(self, path: str):
        return self.http.get(path, headers={"Accept-Language": "en"}, follow_redirects=True)

    def post(self, path: str, data=None, json=None):
        return self.http.post(
            path, data=data, json=json, headers={"Accept-Language": "en"}, follow_redirects=True
        )

    def prove_sms(self):
        self.post("/verify/challenge", {"factor": "sms"})
        return self.post(
            "/verify/prove", {"factor": "sms", "code": self.server.last_sms_code(self.phone)}
        )

    def prove_pin(self, pin: str = PIN):
        return self.post("/verify/prove", {"factor": "knowledge", "secret": pin})

    def prove_device(self):
        """What portal.js does: sign the challenge's UTF-8 bytes, DER, base64url."""
        challenge = self.http.post("/verify/challenge", json={"factor": "device"}).get_json()
        der = self.key.sign(challenge["challenge"].encode(), ec.ECDSA(hashes.SHA256()))
        signature = base64.urlsafe_b64encode(der).rstrip(b"=").decode()
        body = {"factor": "device", "factor_id": self.device_id, "signature": signature}
        return self.get(self.http.post("/verify/prove", json=body).get_json()["redirect"])

    def sign_up_with_pin(self):
        page = self.post("/signup", {"phone": self.phone})
        assert "Confirm it's you" in body(page)
        page = self.prove_sms()
        assert page.request.path == "/security"
        page = self.post("/security/pin", {"pin": PIN, "pin_confirm": PIN})
        assert "Saved." in flashes(body(page))
        return page

    def unlock(self):
        self.post("/security/unlock")
        self.prove_pin()
        page = self.prove_sms()
        assert "Changes unlocked: you may make one change now." in flashes(body(page))

    def bind_device(self):
        self.unlock()
        pem = (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )
        answer = self.http.post("/security/device", json={"public_key": pem, "label": "test"})
        assert answer.status_code == 200, body(answer)
        self.device_id = answer.get_json()["factor_id"]

    def step_up(self, action: str):
        """PIN + this device for a sensitive action; returns the action page with the form."""
        page = self.post(f"/step-up/{action}")
        assert "Confirm it's you" in body(page), body(page)
        self.prove_pin()
        page = self.prove_device()
        assert 'name="idv_assertion"' in body(page), body(page)
        return page


@pytest.fixture
def app(idv_server):
    from examples.loan_portal.app import create_app

    key = idv_server.api_key("lendly", "verify", "carrier")
    app = create_app(idv_server.url, key, carrier_key=key, sms_file=idv_server.sms_file)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def visitor(app, idv_server, phone):
    return Visitor(app, idv_server, phone)


def wrong_totp(secret: str) -> str:
    """A 6-digit code that matches no step within RFC 6238 §5.2's one step of drift."""
    totp = pyotp.TOTP(secret)
    near = {totp.at(time.time() + d * 30) for d in (-2, -1, 0, 1, 2)}
    return next(c for c in (f"{n:06d}" for n in range(100000, 100010)) if c not in near)


def test_a_mistyped_totp_activation_code_keeps_the_set_up_and_the_next_code_works(visitor):
    visitor.sign_up_with_pin()
    visitor.unlock()
    page = visitor.post("/security/totp")
    assert page.request.path == "/security/totp"
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', body(page)).group(1)

    page = visitor.post("/security/totp/activate", {"code": wrong_totp(secret)})
    # Still the set-up: the same secret and QR code, the entry field, and what to do next.
    assert page.request.path == "/security/totp"
    assert secret in body(page) and 'id="qr"' in body(page) and 'id="activate-code"' in body(page)
    assert idv_text.failed_proof("totp", None, "en") in flashes(body(page))
    assert 'id="totp-continue"' in body(visitor.get("/security"))  # a way back to it

    page = visitor.post("/security/totp/activate", {"code": "12 34"})  # malformed: not sent to idv
    assert page.request.path == "/security/totp"
    assert "Enter the 6-digit code." in flashes(body(page))

    # The next code (here: the current one) activates it without a second unlock.
    page = visitor.post("/security/totp/activate", {"code": pyotp.TOTP(secret).now()})
    assert page.request.path == "/security"
    assert 'data-type="totp"' in body(page) and "Saved." in flashes(body(page))
    assert visitor.get("/security/totp").request.path == "/security"  # the set-up is gone


def test_a_new_pin_must_be_typed_twice_and_a_weak_one_keeps_the_unlock(visitor):
    visitor.post("/signup", {"phone": visitor.phone})
    visitor.prove_sms()
    # An authenticator app first (no step-up before the first strong factor), then the PIN,
    # which now needs an unlock (here by SMS: the subject has no PIN yet).
    page = visitor.post("/security/totp")
    secret = re.search(r'id="totp-secret"[^>]*>([A-Z2-7]+)<', body(page)).group(1)
    visitor.post("/security/totp/activate", {"code": pyotp.TOTP(secret).now()})
    visitor.post("/security/unlock")
    page = visitor.prove_sms()
    assert "Changes unlocked: you may make one change now." in flashes(body(page))

    page = visitor.post("/security/pin", {"pin": PIN, "pin_confirm": "739185"})
    assert "The two PINs differ. Type the same one twice." in flashes(body(page))
    page = visitor.post("/security/pin", {"pin": "12ab56", "pin_confirm": "12ab56"})
    assert "A PIN is 6 to 12 digits." in flashes(body(page))
    page = visitor.post("/security/pin", {"pin": "123456", "pin_confirm": "123456"})
    assert "That PIN is too easy to guess. Choose another." in flashes(body(page))
    # None of these spent the unlock: a good PIN goes through without a second step-up.
    page = visitor.post("/security/pin", {"pin": PIN, "pin_confirm": PIN})
    assert "Saved." in flashes(body(page)), flashes(body(page))
    assert 'data-type="knowledge"' in body(page)


def test_an_action_without_a_usable_factor_leads_to_security_settings(visitor):
    visitor.sign_up_with_pin()
    page = visitor.post("/step-up/loan_application")
    # SMS + PIN is never enough for money (T1): add a factor, no "held for your safety".
    assert page.request.path == "/security"
    assert "To apply for a loan you need your PIN and an authenticator app or this browser." in (
        " ".join(flashes(body(page)))
    )
    assert "held" not in body(page).lower()


def test_the_loan_amount_is_checked_on_the_server_before_the_assertion_is_spent(visitor):
    visitor.sign_up_with_pin()
    visitor.bind_device()
    page = visitor.step_up("loan_application")
    assertion = re.search(r'name="idv_assertion" value="([^"]+)"', body(page)).group(1)
    for bad in ("abc", "", "999", "50001", "1e5", "-2000", "9" * 40, "２００００x"):
        answer = visitor.http.post("/loan", data={"idv_assertion": assertion, "amount": bad})
        assert answer.status_code == 400, (bad, answer.status_code)
        assert "Enter an amount in whole yuan between ¥1,000 and ¥50,000." in body(answer)
        assert f'value="{assertion}"' in body(answer)  # the same assertion, still unspent
    done = visitor.http.post("/loan", data={"idv_assertion": assertion, "amount": "20,000"})
    assert done.status_code == 200
    assert "Your loan application for ¥20,000 has been submitted." in body(done)
    again = visitor.http.post("/loan", data={"idv_assertion": assertion, "amount": "20000"})
    assert again.status_code == 401  # now it is spent (single use)


def test_a_new_payment_password_needs_a_matching_confirmation(visitor):
    visitor.sign_up_with_pin()
    visitor.bind_device()
    page = visitor.step_up("payment_password_reset")
    assertion = re.search(r'name="idv_assertion" value="([^"]+)"', body(page)).group(1)
    form = {"idv_assertion": assertion, "payment_password": "258369"}
    mismatch = visitor.http.post(
        "/payment-password", data={**form, "payment_password_confirm": "258368"}
    )
    assert mismatch.status_code == 400
    assert "The two payment passwords differ." in body(mismatch)
    short = visitor.http.post(
        "/payment-password",
        data={**form, "payment_password": "2583", "payment_password_confirm": "2583"},
    )
    assert "A payment password is exactly 6 digits." in body(short)
    done = visitor.http.post(
        "/payment-password", data={**form, "payment_password_confirm": "258369"}
    )
    assert "Your payment password has been changed." in body(done)


def test_a_wrong_pin_names_the_pin_and_the_tries_left(visitor):
    visitor.sign_up_with_pin()
    visitor.bind_device()
    visitor.post("/step-up/loan_application")
    page = visitor.prove_pin("000000")
    said = flashes(body(page))
    # attempts_left (API.md) when idv sends it, else no count is promised.
    assert said in (
        [idv_text.failed_proof("knowledge", 4, "en")],
        [idv_text.failed_proof("knowledge", None, "en")],
    ), said
    page = visitor.post("/verify/prove", {"factor": "knowledge", "secret": ""})
    assert "Enter your PIN." in flashes(body(page))


def test_the_sms_limit_per_phone_is_not_a_busy_service(visitor):
    visitor.post("/signup", {"phone": visitor.phone})
    for _ in range(5):  # ratelimit.DEFAULTS sms_sends = 5/10minutes per phone (ASVS 6.6.3)
        page = visitor.post("/verify/challenge", {"factor": "sms"})
        assert any(m.startswith("Code sent to") for m in flashes(body(page)))
    page = visitor.post("/verify/challenge", {"factor": "sms"})
    said = " ".join(flashes(body(page)))
    assert "Too many codes were sent to this number. You can ask for a new one in" in said
    assert "busy" not in said and "idv" not in said
    zh = visitor.http.post(
        "/verify/challenge",
        data={"factor": "sms"},
        headers={"Accept-Language": "zh-CN"},
        follow_redirects=True,
    )
    assert "发送到该号码的验证码次数过多" in " ".join(flashes(body(zh)))


def test_a_device_binding_without_a_key_is_a_400_not_a_500(visitor):
    visitor.post("/signup", {"phone": visitor.phone})
    visitor.prove_sms()
    for body in ({}, {"public_key": 5}, [1, 2]):
        answer = visitor.http.post("/security/device", json=body)
        assert answer.status_code == 400, (body, answer.status_code)
        assert answer.get_json()["error"] == "invalid_request"


def test_idv_down_reads_as_try_later_never_a_500_or_a_raw_code(visitor, idv_server):
    visitor.post("/signup", {"phone": visitor.phone})
    visitor.prove_sms()
    idv_server.stop()
    page = visitor.get("/security")
    assert page.status_code == 200 and page.request.path == "/"
    said = flashes(body(page))
    assert said == ["We cannot check your identity right now. Try again in a few minutes."], said
    zh = visitor.http.get("/security", headers={"Accept-Language": "zh-CN"}, follow_redirects=True)
    assert flashes(body(zh)) == ["暂时无法验证身份，请几分钟后再试。"]


def test_the_failure_that_locks_the_check_says_so_and_ends_the_flow(visitor):
    visitor.sign_up_with_pin()
    visitor.bind_device()
    visitor.post("/step-up/loan_application")
    for _ in range(4):
        page = visitor.prove_pin("000000")
        assert page.request.path == "/verify"
    page = visitor.prove_pin("000000")  # policies/default.toml failure_limit = 5
    assert page.request.path == "/"
    assert flashes(body(page)) == [idv_text.failed_proof("knowledge", 0, "en", status="locked")]
    assert visitor.get("/verify").request.path == "/"  # the flow is over
