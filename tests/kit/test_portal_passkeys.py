"""The Lendly portal's "Use a passkey" in headless Chromium with its virtual authenticator (the
DevTools protocol's ``WebAuthn.enable`` / ``WebAuthn.addVirtualAuthenticator`` through
Playwright's CDP session), against a real ``idv serve`` (API.md, Passkeys; issue 22).

The portal's tenant names its relying party with ``idv clients webauthn`` (``localhost``: a
secure context over plain HTTP for development). A platform credential with user verification
signs up, logs in and completes a payment-password reset beside the PIN; a cross-platform key
without user verification logs in (login is not sensitive) but cannot serve a sensitive step-up,
where idv asks ``userVerification: "required"``.
"""

from __future__ import annotations

import threading

import pytest
from werkzeug.serving import make_server

from idv_client import IdvClient
from tests.e2e.conftest import free_port
from tests.kit.browser import DESKTOP, launch, needs_chromium, once
from tests.kit.test_portal_browser import Walk

pytestmark = [pytest.mark.slow, needs_chromium, once]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

PLATFORM = {
    "protocol": "ctap2",
    "transport": "internal",
    "hasResidentKey": True,
    "hasUserVerification": True,
    "isUserVerified": True,
    "automaticPresenceSimulation": True,
}
ROAMING = {
    "protocol": "ctap2",
    "transport": "usb",
    "hasResidentKey": False,
    "hasUserVerification": False,
    "automaticPresenceSimulation": True,
}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture
def portal(idv_server):
    """The portal on ``http://localhost:PORT``, its tenant's relying party ``localhost``."""
    from examples.loan_portal.app import create_app

    key = idv_server.api_key("lendly", "verify", "carrier")
    app = create_app(idv_server.url, key, carrier_key=key, sms_file=idv_server.sms_file)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    origin = f"http://localhost:{server.server_port}"
    with IdvClient(idv_server.url, key) as idv:
        client_id = idv.whoami().client_id
    out = idv_server.idv(
        "clients", "webauthn", client_id, "--rp-id", "localhost", "--origin", origin
    )
    assert out.returncode == 0, out.stdout
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield origin
    server.shutdown()
    thread.join(timeout=5)


def with_authenticator(walk: Walk, options: dict) -> str:
    cdp = walk.context.new_cdp_session(walk.page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    return cdp.send("WebAuthn.addVirtualAuthenticator", {"options": options})["authenticatorId"]


def add_passkey(walk: Walk) -> None:
    walk.unlock_with_sms_and_pin()
    walk.page.click("#add-passkey")
    walk.page.wait_for_selector("#factor-list li[data-type=passkey]")


def log_in_with_passkey(walk: Walk) -> None:
    page = walk.page
    page.click("#logout")
    walk.goto("/login")
    page.fill("#phone", walk.phone)
    page.click("#phone-submit")
    assert "a passkey" in page.inner_text("#options")
    page.click("#passkey-btn")
    page.wait_for_selector("#signed-in")


def test_a_platform_passkey_signs_up_logs_in_and_steps_up_beside_the_pin(browser, portal, phone):
    walk = Walk(browser, portal, phone, locale="en-US", tz="Europe/Berlin", viewport=DESKTOP)
    with_authenticator(walk, PLATFORM)
    walk.sign_up_and_set_pin()
    add_passkey(walk)
    log_in_with_passkey(walk)
    page = walk.page
    # T1 step 5: the payment password needs the PIN beside the passkey, never the passkey alone.
    page.click("#go-pay-reset")
    page.click("#check-me")
    page.wait_for_selector("#factor-passkey")
    assert page.locator("#options [data-option='passkey+knowledge']").count() == 1
    assert page.locator("#options [data-option='passkey']").count() == 0
    walk.prove_pin()
    page.click("#passkey-btn")
    page.wait_for_selector("#new-pay-pw")
    page.fill("#new-pay-pw", "258369")
    page.fill("#new-pay-pw-confirm", "258369")
    page.click("#action-submit")
    assert "payment password has been changed" in page.inner_text("#done")
    walk.close()


def test_a_roaming_key_without_user_verification_logs_in_but_steps_up_nothing(
    browser, portal, phone
):
    walk = Walk(browser, portal, phone, locale="en-US", tz="Europe/Berlin", viewport=DESKTOP)
    with_authenticator(walk, ROAMING)
    walk.sign_up_and_set_pin()
    add_passkey(walk)
    log_in_with_passkey(walk)  # login is not sensitive: user presence is enough
    page = walk.page
    page.click("#go-pay-reset")
    page.click("#check-me")
    page.wait_for_selector("#factor-passkey")
    walk.prove_pin()
    page.click("#passkey-btn")  # idv asks userVerification "required": this key cannot
    page.wait_for_selector("#js-error:not([hidden])")
    # The browser refuses (NotAllowedError): the key cannot verify the user, as idv required.
    assert "not allowed" in page.inner_text("#js-error")
    assert "/verify" in page.url
    assert page.locator("#new-pay-pw").count() == 0
    walk.close()
