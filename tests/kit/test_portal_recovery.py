"""Lendly's recovery pages through Flask's test client against a real ``idv serve`` (issue 19,
"Tell the person"; API.md, Recovery): what the browser tests (test_portal_recovery_browser.py)
leave out. PIN + a recovery code recovers and revokes the phone's device key at idv; the codes
are shown once and never travel in the session cookie; a weak new PIN spends nothing; an
unknown number is a 404 that says so."""

from __future__ import annotations

import re
import time

import pytest
from flask.sessions import SecureCookieSessionInterface

from idv_client import IdvClient
from service.settings import packaged_policy_file
from tests.e2e.conftest import free_port, serve_env
from tests.kit.browser import once
from tests.kit.conftest import KitServer
from tests.kit.test_portal import PIN, Visitor, body, flashes

pytestmark = [pytest.mark.slow, once]  # a real idv serve per test; UI, not storage


def portal_kit(idv_server, phone):
    """The portal (no demo branch: codes only) and a visitor, with idv's own view beside."""
    from examples.loan_portal.app import create_app

    key = idv_server.api_key("lendly", "verify", "carrier")
    app = create_app(idv_server.url, key, carrier_key=key, sms_file=idv_server.sms_file)
    app.config["TESTING"] = True
    with IdvClient(idv_server.url, key) as idv:
        yield app, Visitor(app, idv_server, phone), idv


@pytest.fixture
def kit(idv_server, phone):
    yield from portal_kit(idv_server, phone)


@pytest.fixture
def short_delay_kit(tmp_path, database_url, phone):
    """The same against an idv whose ``recover_delayed`` waits 2 s instead of 72 h."""
    policy = tmp_path / "policy.toml"
    text = packaged_policy_file().read_text()
    assert 'delay = "72h"' in text
    policy.write_text(text.replace('delay = "72h"', 'delay = "2s"'))
    port = free_port()
    env = serve_env(tmp_path, database_url) | {"IDV_POLICY_FILE": str(policy)}
    server = KitServer(f"http://127.0.0.1:{port}", port, env, tmp_path)
    server.start()
    try:
        yield from portal_kit(server, phone)
    finally:
        server.stop()


def session_of(app, visitor) -> dict:
    """The portal's session as the browser holds it (signed, not encrypted: readable); an
    empty one has no cookie."""
    cookie = visitor.http.get_cookie("session")
    if cookie is None:
        return {}
    return SecureCookieSessionInterface().get_signing_serializer(app).loads(cookie.value)


def set_up_codes(visitor) -> tuple[str, list[str]]:
    visitor.unlock()
    answer = visitor.http.post("/security/codes", headers={"Accept-Language": "en"})
    assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
    html = body(answer)
    codes = re.findall(r"<li><code>([0-9A-Z-]{19})</code></li>", html)
    assert len(codes) == 10, html
    assert "Keep them off your phone" in html
    return html, codes


def test_codes_are_shown_once_and_never_kept_by_the_portal(kit):
    app, visitor, idv = kit
    visitor.sign_up_with_pin()
    _, codes = set_up_codes(visitor)
    settings = body(visitor.get("/security"))
    assert "10 of 10 codes left" in settings
    assert not [c for c in codes if c in settings]
    assert not [c for c in codes if c in str(session_of(app, visitor))]


def test_lost_phone_pin_and_a_recovery_code_revokes_the_device_and_signs_the_person_in(kit):
    app, visitor, idv = kit
    visitor.sign_up_with_pin()
    _, codes = set_up_codes(visitor)
    visitor.bind_device()
    subject = session_of(app, visitor)["subject"]
    thief = app.test_client()  # the stolen phone, still signed in to the portal
    thief.set_cookie("session", visitor.http.get_cookie("session").value)
    assert thief.get("/security").status_code == 200
    visitor.post("/logout")

    page = visitor.post("/lost", {"phone": visitor.phone, "way": "now"})
    assert 'data-option="knowledge+recovery_code"' in body(page)
    visitor.prove_pin()
    page = visitor.post("/verify/prove", {"factor": "recovery_code", "recovery_code": codes[0]})
    assert page.request.path == "/recovered", flashes(body(page))
    assert "old phone no longer works" in body(page)
    assert session_of(app, visitor)["subject"] == subject
    # The stolen phone's signed-in tab is signed out (ASVS 5.0 7.4.3).
    answer = thief.get("/security")
    assert answer.status_code == 302 and answer.location.endswith("/login")
    # At idv: the browser key is revoked (never an option again), one code is spent.
    factors = {f.type: f for f in idv.list_factors(subject) if f.status != "revoked"}
    assert "device" not in factors and factors["recovery_code"].remaining == 9
    # The one-hour window: the PIN alone unlocks a change.
    page = visitor.post("/security/unlock")
    assert 'data-option="knowledge"' in body(page)
    page = visitor.prove_pin()
    assert "Changes unlocked: you may make one change now." in flashes(body(page))


def test_a_weak_new_pin_keeps_the_reset_and_a_good_one_replaces_the_pin(kit):
    app, visitor, idv = kit
    visitor.sign_up_with_pin()
    _, codes = set_up_codes(visitor)
    visitor.bind_device()
    visitor.post("/logout")

    page = visitor.post("/forgot-pin", {"phone": visitor.phone})
    assert 'data-option="device+recovery_code"' in body(page)
    visitor.post("/verify/prove", {"factor": "recovery_code", "recovery_code": codes[1].lower()})
    page = visitor.prove_device()
    assert page.request.path == "/forgot-pin/new", flashes(body(page))
    page = visitor.post("/forgot-pin/new", {"pin": "123456", "pin_confirm": "123456"})
    assert page.status_code == 400
    assert "That PIN is too easy to guess. Choose another." in flashes(body(page))
    page = visitor.post("/forgot-pin/new", {"pin": "582047", "pin_confirm": "582047"})
    assert page.request.path == "/login"
    assert "Your PIN has been changed" in flashes(body(page))[0]
    assert "reset_pin" not in session_of(app, visitor)
    # The old PIN no longer proves anything; the new one does.
    visitor.post("/login", {"phone": visitor.phone})
    visitor.prove_device()
    visitor.post("/security/unlock")
    assert "That PIN is not right." in flashes(body(visitor.prove_pin(PIN)))[0]
    assert "✓" in body(visitor.prove_pin("582047"))


def test_an_unknown_number_is_a_404_that_says_so(kit):
    _, visitor, _ = kit
    for path in ("/lost", "/forgot-pin"):
        page = visitor.post(path, {"phone": "+8613900000000", "way": "now"})
        assert page.status_code == 404
        assert "No account with this number. Sign up first." in flashes(body(page))


def test_pin_only_recovery_completes_with_the_pin_from_ready_at(short_delay_kit):
    app, visitor, idv = short_delay_kit
    visitor.sign_up_with_pin()
    visitor.bind_device()
    subject = session_of(app, visitor)["subject"]
    visitor.post("/logout")

    visitor.post("/lost", {"phone": visitor.phone, "way": "wait"})
    page = visitor.prove_pin()
    assert page.request.path == "/recovery/waiting", flashes(body(page))
    assert "You can finish the recovery with your PIN from" in body(page)
    # Before ready_at the same number shows the wait again, whichever button.
    page = visitor.post("/lost", {"phone": visitor.phone, "way": "now"})
    assert page.request.path == "/recovery/waiting"
    time.sleep(2.5)
    # From ready_at the waiting page (reloaded) and the same number on "Lost your phone?" lead
    # to the PIN step that completes it (no second wait), then signed in.
    page = visitor.get("/recovery/waiting")
    assert page.request.path == "/verify" and 'data-option="knowledge"' in body(page)
    page = visitor.post("/lost", {"phone": visitor.phone, "way": "wait"})
    assert page.request.path == "/verify" and 'data-option="knowledge"' in body(page)
    page = visitor.prove_pin()
    assert page.request.path == "/recovered", flashes(body(page))
    assert session_of(app, visitor)["subject"] == subject
    assert "device" not in {f.type for f in idv.list_factors(subject) if f.status != "revoked"}
