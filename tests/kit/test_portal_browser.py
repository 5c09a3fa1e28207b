"""The Lendly demo portal in headless Chromium against a real ``idv serve`` (T1, THREATS.md):
sign up (phone) → set a PIN → enrol TOTP → bind this browser → log in with the browser → reset
the payment password with browser + PIN → a ``sim_swap`` carrier event → the next login offers no
SMS and the payment-password reset is held, with its reason and idv's ``held_until`` on screen.

Order of set-up: a subject with no PIN yet changes factors freely (enroll_factor's
``subject_lacks = "knowledge"`` row); once the PIN exists, policies/default.toml offers
``sms+knowledge`` besides device/totp + knowledge, so both later step-ups here are SMS + PIN.
The one TOTP code used is the activation (RFC 6238 §5.2: a code counts once per 30-s step), so
nothing waits for the next step.

Screenshots of every page land in artefacts/portal/ (gitignored).
"""

from __future__ import annotations

import re
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp
import pytest
from werkzeug.serving import make_server

from tests.e2e.conftest import free_port
from tests.kit.browser import launch, needs_chromium

pytestmark = [pytest.mark.slow, needs_chromium]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "portal"
PIN = "739184"


def opens_on(text: str, template: str) -> datetime:
    """The date in the held page's "opens again" line, which must read ``template`` around it."""
    found = re.fullmatch(template.format(until=r"(\d{4}-\d\d-\d\d \d\d:\d\d) UTC"), text)
    assert found, text
    return datetime.strptime(found.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)


@pytest.fixture
def portal(idv_server):
    from examples.loan_portal.app import create_app

    key = idv_server.api_key("lendly", "verify", "carrier")
    app = create_app(idv_server.url, key, carrier_key=key, sms_file=idv_server.sms_file)
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


def test_t1_scenario_in_the_browser(portal, phone):
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTEFACTS.glob("*.png"):  # numbering changes with the scenario: no stale shots
        old.unlink()
    shots = iter(range(1, 100))
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(locale="en-US", viewport={"width": 1000, "height": 640})
        context.set_default_timeout(10_000)
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("dialog", lambda d: (errors.append(d.message), d.dismiss()))

        def shot(name: str) -> None:
            page.wait_for_load_state("load")
            page.screenshot(path=str(ARTEFACTS / f"{next(shots):02d}-{name}.png"), full_page=True)

        def sms_code() -> str:
            page.click("#sms-send")
            page.wait_for_selector("#inbox .sms-code")
            return page.inner_text("#inbox li:first-child .sms-code").strip()

        def prove_sms() -> None:
            page.fill("#sms-code", sms_code())
            page.click("#sms-submit")

        def use_browser() -> None:
            page.click("#device-btn")  # WebCrypto signs the challenge; raw r||s → DER
            page.wait_for_url(lambda url: "/verify" not in url)

        def prove_pin() -> None:
            page.fill("#pin", PIN)
            page.click("#pin-submit")
            page.wait_for_selector("#options .ok")  # the PIN is ticked off

        def unlock_with_sms_and_pin() -> None:
            """The enroll_factor step-up once a PIN exists: SMS + PIN (no TOTP step used)."""
            page.click("#unlock")
            assert "SMS code + your PIN" in page.inner_text("#options")
            prove_pin()
            prove_sms()
            page.wait_for_selector("#factor-list")
            assert page.locator("#unlock").count() == 0

        # Sign up: the phone becomes an account once its owner proves it by SMS.
        page.goto(portal + "/signup")
        shot("signup")
        page.fill("#phone", phone)
        page.click("#phone-submit")
        page.wait_for_selector("#factor-sms")
        shot("signup-verify-sms")
        prove_sms()
        page.wait_for_selector("#factor-list")
        shot("security-new")

        # The PIN first: no factor but SMS yet, so no step-up.
        page.fill("#new-pin", PIN)
        page.click("#set-pin")
        page.wait_for_selector("#factor-list li[data-type=knowledge]")
        page.wait_for_selector("#unlock")  # further changes need a step-up now
        shot("security-pin-set")

        # Authenticator app: enroll_factor step-up by SMS + PIN, then the secret from the page.
        unlock_with_sms_and_pin()
        page.click("#add-totp")
        secret = page.inner_text("#totp-secret").strip()
        assert page.locator("#qr img").count() == 1
        shot("totp-qr")
        page.fill("#activate-code", pyotp.TOTP(secret).now())
        page.click("#activate")
        page.wait_for_selector("#unlock")
        assert page.locator("#factor-list li[data-type=totp]").count() == 1

        # Bind this browser: another step-up, SMS + PIN again (a TOTP code counts once per step).
        unlock_with_sms_and_pin()
        page.click("#bind-browser")
        page.wait_for_selector("[data-device-bound]:not([hidden])")
        assert page.locator("#factor-list li[data-type=device]").count() == 1
        shot("security-all-factors")

        # Log out, log in with the browser.
        page.click("#logout")
        page.goto(portal + "/login")
        page.fill("#phone", phone)
        page.click("#phone-submit")
        options = page.inner_text("#options")
        assert "SMS code" in options and "this browser" in options
        shot("login-options")
        use_browser()
        page.wait_for_selector("#signed-in")

        # Reset the payment password: browser + PIN (SMS is never enough, T1 step 5).
        page.click("#go-pay-reset")
        page.click("#check-me")
        page.wait_for_selector("#factor-knowledge")
        assert page.locator("#factor-sms").count() == 0
        shot("step-up")
        prove_pin()
        use_browser()
        page.fill("#new-pay-pw", "258369")
        page.click("#action-submit")
        assert "payment password has been changed" in page.inner_text("#done")
        shot("pay-reset-done")

        # The carrier reports a SIM swap (the developer panel's button posts the event).
        page.goto(portal + "/")
        before = datetime.now(UTC)
        page.click("#sim-swap")  # the portal reports the swap as 5 s before the click
        page.wait_for_selector(".flash.ok:has-text('SIM swap')")
        after = datetime.now(UTC)
        page.click("#logout")
        page.goto(portal + "/login")
        page.fill("#phone", phone)
        page.click("#phone-submit")
        assert page.locator("#factor-sms").count() == 0  # no SMS login after a SIM change
        assert "SMS code" not in page.inner_text("#options")
        assert "SIM card was changed recently" in page.inner_text("main")
        shot("login-after-sim-swap")
        use_browser()
        page.click("#go-pay-reset")
        page.click("#check-me")
        assert page.locator("#reasons [data-code=recent_sim_change]").count() == 1
        assert "SIM card was changed today" in page.inner_text("#reasons")
        # The date is idv's held_until: 7 days after the swap (hold_after_sim_change = "7d").
        until = opens_on(page.inner_text("#held-until"), r"This action opens again on {until}\.")
        # The page shows whole minutes: the hold ends 7 days after the swap, cut to the minute.
        hold = timedelta(days=7, seconds=-5)
        assert before + hold - timedelta(minutes=1) < until <= after + hold
        shot("held")

        # The same hold in Chinese (?lang=zh switches), with the same date.
        page.goto(portal + "/payment-password?lang=zh")
        page.click("#check-me")
        assert "SIM 卡今天发生了更换" in page.inner_text("#reasons")
        assert opens_on(page.inner_text("#held-until"), "此操作将于 {until} 恢复。") == until
        shot("held-zh")

        # The same page in Chinese (Accept-Language), for the eye.
        zh = browser.new_context(locale="zh-CN", viewport={"width": 1000, "height": 640})
        zh_page = zh.new_page()
        zh_page.goto(portal + "/signup")
        assert "注册" in zh_page.inner_text("main")
        zh_page.screenshot(path=str(ARTEFACTS / f"{next(shots):02d}-signup-zh.png"))
        browser.close()
    assert errors == []
