"""The Lendly demo portal in headless Chromium against a real ``idv serve`` (T1, THREATS.md).

English at desktop width (1280x800): sign up (phone) → set a PIN → enrol TOTP → bind this browser
→ log in with the browser → reset the payment password with browser + PIN → a ``sim_swap``
carrier event → the next login offers no SMS and the payment-password reset is held, with its
reason and idv's ``held_until`` in the browser's time zone. Chinese on a phone (390x844): the same
kind of walk, where no page may show English, an error code or the vendor's name, a mistyped TOTP
activation code keeps the set-up, and the hold ends in Beijing time (issue 21).

Order of set-up: a subject with no PIN yet changes factors freely (enroll_factor's
``subject_lacks = "knowledge"`` row); once the PIN exists, policies/default.toml offers
``sms+knowledge`` besides device/totp + knowledge, so the later step-ups here are SMS + PIN.
The one TOTP code used is the activation (RFC 6238 §5.2: a code counts once per 30-s step), so
nothing waits for the next step.

One browser for the module; screenshots land in artefacts/portal/ (gitignored); the four
``held-*.png`` and ``step-up.png`` are copied to examples/loan_portal/screenshots/ for README.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pyotp
import pytest

from idv_client import messages as idv_text
from tests.kit.browser import (
    DESKTOP,
    PHONE,
    assert_fields_labelled,
    assert_fits,
    assert_lines_hold_text,
    latin_words,
    launch,
    needs_chromium,
    once,
    serving,
)

pytestmark = [pytest.mark.slow, needs_chromium, once]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")

ARTEFACTS = Path(__file__).resolve().parents[2] / "artefacts" / "portal"
PIN = "739184"
HOLD = timedelta(days=7, seconds=-5)  # hold_after_sim_change = "7d"; the swap is dated 5 s back
# Latin words a Chinese page may show: SIM 卡 is what Chinese calls the card.
ZH_ALLOWED = {"SIM"}


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        chromium = launch(p)
        yield chromium
        chromium.close()


@pytest.fixture
def portal(idv_server):
    from examples.loan_portal.app import create_app

    key = idv_server.api_key("lendly", "verify", "carrier")
    app = create_app(idv_server.url, key, carrier_key=key, sms_file=idv_server.sms_file)
    with serving(app) as url:
        yield url


class Walk:
    """One person's browser tab on the portal, with the steps both tests take."""

    def __init__(self, browser, portal: str, phone: str, *, locale: str, tz: str, viewport):
        self.context = browser.new_context(locale=locale, timezone_id=tz, viewport=viewport)
        self.context.set_default_timeout(10_000)
        self.page = self.context.new_page()
        self.portal, self.phone, self.width = portal, phone, viewport["width"]
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("dialog", lambda d: (self.errors.append(d.message), d.dismiss()))
        ARTEFACTS.mkdir(parents=True, exist_ok=True)

    def shot(self, name: str) -> None:
        self.page.wait_for_load_state("load")
        self.page.screenshot(path=str(ARTEFACTS / f"{name}.png"), full_page=True)

    def goto(self, path: str) -> None:
        self.page.goto(self.portal + path)

    def sms_code(self) -> str:
        self.page.click("#sms-send")
        self.page.wait_for_selector("#inbox .sms-code")
        return self.page.inner_text("#inbox li:first-child .sms-code").strip()

    def prove_sms(self) -> None:
        self.page.fill("#sms-code", self.sms_code())
        self.page.click("#sms-submit")

    def prove_pin(self) -> None:
        self.page.fill("#pin", PIN)
        self.page.click("#pin-submit")
        self.page.wait_for_selector("#options .ok")  # the PIN is ticked off

    def use_browser(self) -> None:
        self.page.click("#device-btn")  # WebCrypto signs the challenge; raw r||s → DER
        self.page.wait_for_url(lambda url: "/verify" not in url)

    def sign_up_and_set_pin(self, check=lambda name: None) -> None:
        self.goto("/signup")
        check("signup")
        self.page.fill("#phone", self.phone)
        self.page.click("#phone-submit")
        self.page.wait_for_selector("#factor-sms")
        check("verify-signup")
        self.prove_sms()
        self.page.wait_for_selector("#factor-list")
        check("security-new")
        # The PIN first: no factor but SMS yet, so no step-up. Typed twice.
        self.page.fill("#new-pin", PIN)
        self.page.fill("#new-pin-confirm", PIN)
        self.page.click("#set-pin")
        self.page.wait_for_selector("#factor-list li[data-type=knowledge]")
        self.page.wait_for_selector("#unlock")  # further changes need a step-up now

    def unlock_with_sms_and_pin(self) -> None:
        """The enroll_factor step-up once a PIN exists: SMS + PIN (no TOTP step used)."""
        self.page.click("#unlock")
        assert self.page.locator("#options [data-option='sms+knowledge']").count() == 1
        self.prove_pin()
        self.prove_sms()
        self.page.wait_for_selector("#factor-list")
        assert self.page.locator("#unlock").count() == 0

    def held_for(self, path: str) -> None:
        self.goto(path)
        self.page.click("#check-me")
        self.page.wait_for_selector("#reasons")

    def assert_held_after_sim_swap(
        self, locale: str, pattern: str, fmt: str, zone: str, swapped: tuple[datetime, datetime]
    ) -> None:
        """The held page: the SIM change in words (``idv_client.messages``) and idv's
        ``held_until`` in ``zone``: the "opens again" line must match ``pattern`` (its group, read
        with ``fmt``, is the time), in whole minutes rounded up, never before the hold ends."""
        reason = self.page.inner_text("#reasons [data-code=recent_sim_change]")
        assert reason == idv_text.reason_text("recent_sim_change", locale)
        text = self.page.inner_text("#held-until")
        found = re.fullmatch(pattern, text)
        assert found, text
        until = datetime.strptime(found.group(1), fmt).replace(tzinfo=ZoneInfo(zone))
        before, after = swapped
        assert before + HOLD <= until <= after + HOLD + timedelta(minutes=1)

    def close(self) -> None:
        self.context.close()
        assert self.errors == []


def test_t1_scenario_in_english_at_desktop_width(browser, portal, phone):
    walk = Walk(browser, portal, phone, locale="en-US", tz="Europe/Berlin", viewport=DESKTOP)
    page = walk.page
    walk.sign_up_and_set_pin(lambda name: assert_fits(page, DESKTOP["width"]))

    # Authenticator app: enroll_factor step-up by SMS + PIN, then the secret from the page.
    walk.unlock_with_sms_and_pin()
    page.click("#add-totp")
    secret = page.inner_text("#totp-secret").strip()
    assert page.locator("#qr img").count() == 1
    assert page.get_attribute("#activate-code", "autocomplete") == "one-time-code"
    assert page.get_attribute("label[for=activate-code]", "for") == "activate-code"
    page.fill("#activate-code", pyotp.TOTP(secret).now())
    page.click("#activate")
    page.wait_for_selector("#unlock")
    assert page.locator("#factor-list li[data-type=totp]").count() == 1

    # Bind this browser: another step-up, SMS + PIN again (a TOTP code counts once per step).
    walk.unlock_with_sms_and_pin()
    page.click("#bind-browser")
    page.wait_for_selector("[data-device-bound]:not([hidden])")
    assert page.locator("#factor-list li[data-type=device]").count() == 1
    assert_fits(page, DESKTOP["width"])

    # Log out, log in with the browser.
    page.click("#logout")
    walk.goto("/login")
    page.fill("#phone", phone)
    page.click("#phone-submit")
    options = page.inner_text("#options")
    assert "SMS code" in options and "this browser" in options
    walk.use_browser()
    page.wait_for_selector("#signed-in")

    # Reset the payment password: browser + PIN (SMS is never enough, T1 step 5).
    page.click("#go-pay-reset")
    page.click("#check-me")
    page.wait_for_selector("#factor-knowledge")
    assert page.locator("#factor-sms").count() == 0
    assert_fits(page, DESKTOP["width"])
    walk.shot("step-up")
    walk.prove_pin()
    walk.use_browser()
    page.fill("#new-pay-pw", "258369")
    page.fill("#new-pay-pw-confirm", "258369")
    page.click("#action-submit")
    assert "payment password has been changed" in page.inner_text("#done")

    # The carrier reports a SIM swap (the developer panel's button posts the event).
    walk.goto("/")
    before = datetime.now(UTC)
    page.click("#sim-swap")  # the portal reports the swap as 5 s before the click
    page.wait_for_selector(".flash.ok:has-text('SIM swap')")
    after = datetime.now(UTC)
    page.click("#logout")
    walk.goto("/login")
    page.fill("#phone", phone)
    page.click("#phone-submit")
    assert page.locator("#factor-sms").count() == 0  # no SMS login after a SIM change
    assert "SMS code" not in page.inner_text("#options")
    note = page.inner_text(".reason[data-code=recent_sim_change]")
    assert note == idv_text.reason_text("recent_sim_change", "en", status="pending")
    walk.use_browser()

    # Held, with the reason in words and idv's held_until in the browser's zone (Berlin).
    walk.held_for("/payment-password")
    walk.assert_held_after_sim_swap(
        "en",
        r"This action opens again on (\d{1,2} \w{3} \d{4}, \d\d:\d\d) CES?T\.",
        "%d %b %Y, %H:%M",
        "Europe/Berlin",
        (before, after),
    )
    assert_fits(page, DESKTOP["width"])
    walk.shot("held-en-desktop")
    page.set_viewport_size(PHONE)
    assert_fits(page, PHONE["width"])
    walk.shot("held-en-phone")
    walk.close()


def test_chinese_on_a_phone_no_english_and_a_mistyped_totp_code_keeps_the_set_up(
    browser, portal, phone
):
    walk = Walk(browser, portal, phone, locale="zh-CN", tz="Asia/Shanghai", viewport=PHONE)
    page = walk.page
    seen: list[str] = []

    def check(name: str) -> None:
        """Every Chinese page: Chinese only, no error code or vendor name, fits the phone."""
        page.wait_for_load_state("load")
        assert latin_words(page) <= ZH_ALLOWED, (name, latin_words(page))
        assert_fits(page, PHONE["width"])
        assert_fields_labelled(page)
        seen.append(name)
        walk.shot(f"zh-phone-{len(seen):02d}-{name}")

    walk.goto("/")
    check("home")
    walk.sign_up_and_set_pin(check)
    check("security-pin-set")

    # A loan needs PIN + TOTP or this browser: "no eligible factors" leads to security settings.
    walk.goto("/loan")
    check("loan")
    page.click("#check-me")
    page.wait_for_url(re.compile(r"/security$"))
    assert "申请贷款需要安全密码" in page.inner_text(".flash.warn")
    check("security-no-factor")

    walk.unlock_with_sms_and_pin()
    check("security-unlocked")
    page.click("#add-totp")
    secret = page.inner_text("#totp-secret").strip()
    check("totp")
    # A mistyped first code: the same set-up stays (QR, secret, field) and says what to do.
    totp = pyotp.TOTP(secret)
    near = {totp.at(datetime.now(UTC) + timedelta(seconds=d)) for d in (-60, -30, 0, 30, 60)}
    page.fill("#activate-code", next(c for c in ("111111", "222222", "333333") if c not in near))
    page.click("#activate")
    page.wait_for_selector(".flash.error:not([hidden])")
    assert page.inner_text(".flash.error:not([hidden])") == idv_text.failed_proof(
        "totp", None, "zh-CN"
    )
    assert page.inner_text("#totp-secret").strip() == secret
    assert page.locator("#qr img").count() == 1 and page.locator("#activate-code").count() == 1
    assert_lines_hold_text(page, ".flash.error:not([hidden])")
    check("totp-retry")
    page.fill("#activate-code", totp.now())
    page.click("#activate")
    page.wait_for_selector("#factor-list li[data-type=totp]")

    # A wrong PIN names the PIN (and the tries left when idv says).
    walk.goto("/loan")
    page.click("#check-me")
    page.wait_for_selector("#factor-knowledge")
    check("verify-loan")
    page.fill("#pin", "000000")
    page.click("#pin-submit")
    said = page.inner_text(".flash.error:not([hidden])")
    assert said.startswith("安全密码不正确。"), said
    check("verify-wrong-pin")

    # A SIM swap holds the payment-password reset, until a time in Beijing time.
    walk.goto("/")
    before = datetime.now(UTC)
    page.click("#sim-swap")
    page.wait_for_selector(".flash.ok")
    after = datetime.now(UTC)
    walk.held_for("/payment-password")
    walk.assert_held_after_sim_swap(
        "zh-CN",
        r"此操作将于 (\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d)（北京时间）恢复。",
        "%Y年%m月%d日 %H:%M",
        "Asia/Shanghai",
        (before, after),
    )
    assert_lines_hold_text(page, "#reasons .reason")
    check("held")
    walk.shot("held-zh-phone")
    page.set_viewport_size(DESKTOP)
    assert_fits(page, DESKTOP["width"])
    walk.shot("held-zh-desktop")
    assert len(seen) == 13
    walk.close()
