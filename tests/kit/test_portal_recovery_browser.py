"""Lendly's recovery paths in headless Chromium against a real ``idv serve`` (issue 19, "Tell the
person"; API.md, Recovery; NIST SP 800-63B-4 loss and theft of an authenticator):

- lost phone, PIN + the demo face check (``recover``), English at desktop width: the bound
  browser (the "stolen phone") is revoked, the PIN alone unlocks a new authenticator within the
  hour, and the money actions wait out their cooling-off;
- lost phone, nothing but the PIN (``recover_delayed``), Chinese on a phone: the waiting page
  gives ``ready_at`` in Beijing time, the phone stops logging in at once, and the owner cancels
  with PIN + the (suspended) browser, after which the browser logs in again;
- forgot PIN (``reset_knowledge``), Chinese on a phone: recovery codes set up and shown once
  (print button, print stylesheet, the count left), then this browser + a recovery code and a new
  PIN typed twice; the old PIN is refused and the new one works.

Every Chinese page is checked like the portal's walk (test_portal_browser.py): no English but
"SIM", every input labelled, no sideways scroll at 390x844.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pyotp
import pytest

from idv_client import IdvClient
from idv_client import messages as idv_text
from tests.kit.browser import (
    DESKTOP,
    PHONE,
    assert_fields_labelled,
    assert_fits,
    latin_words,
    needs_chromium,
    once,
    serving,
)
from tests.kit.test_portal_browser import PIN, ZH_ALLOWED, Walk, browser  # noqa: F401

pytestmark = [pytest.mark.slow, needs_chromium, once]
NEW_PIN = "582047"
DELAY = timedelta(hours=72)  # policies/default.toml [actions.recover_delayed] delay


@pytest.fixture
def portal(idv_server, tmp_path):
    """The portal with the demo branch (its attestation key registered through the CLI)."""
    from examples.loan_portal.app import create_app
    from examples.loan_portal.branch import register_demo_branch

    key = idv_server.api_key("lendly", "verify", "carrier")
    with IdvClient(idv_server.url, key) as idv:
        client_id = idv.whoami().client_id
    branch = register_demo_branch(lambda args: idv_server.idv(*args), client_id, tmp_path)
    app = create_app(
        idv_server.url, key, carrier_key=key, sms_file=idv_server.sms_file, branch=branch
    )
    with serving(app) as url:
        yield url


def zh_walk(chromium, portal: str, phone: str) -> tuple[Walk, Any, list[str]]:
    """A Chinese tab on a phone, signed up with a PIN, and the walk's rule for every Chinese
    page (``check(name)``: Chinese only, inputs labelled, fits the phone; names in ``seen``)."""
    walk = Walk(chromium, portal, phone, locale="zh-CN", tz="Asia/Shanghai", viewport=PHONE)
    seen: list[str] = []

    def check(name: str) -> None:
        walk.page.wait_for_load_state("load")
        assert latin_words(walk.page) <= ZH_ALLOWED, (name, latin_words(walk.page))
        assert_fits(walk.page, PHONE["width"])
        assert_fields_labelled(walk.page)
        seen.append(name)
        walk.shot(f"zh-recovery-{len(seen):02d}-{name}")

    walk.sign_up_and_set_pin()
    return walk, check, seen


def bind_browser(walk: Walk) -> None:
    walk.unlock_with_sms_and_pin()
    walk.page.click("#bind-browser")
    walk.page.wait_for_selector("[data-device-bound]:not([hidden])")
    walk.page.click("#logout")


def start_login(walk: Walk) -> None:
    walk.goto("/login")
    walk.page.fill("#phone", walk.phone)
    walk.page.click("#phone-submit")


def test_lost_phone_pin_and_face_check_in_english(browser, portal, phone):  # noqa: F811
    walk = Walk(browser, portal, phone, locale="en-US", tz="Europe/Berlin", viewport=DESKTOP)
    page = walk.page
    walk.sign_up_and_set_pin()
    bind_browser(walk)

    # The login page's way back in, for the person whose phone (here: this browser) is gone.
    walk.goto("/login")
    page.click("#lost-phone")
    page.fill("#phone", phone)
    page.click("#lost-now")
    options = [o.get_attribute("data-option") for o in page.locator("#options li").all()]
    assert options == ["knowledge+attested"]  # no codes set up; nothing the thief holds
    assert "Demo stand-in" in page.inner_text("#face-demo-note")
    walk.prove_pin()
    page.click("#face-demo")
    page.wait_for_selector("#recovered-title")
    said = page.inner_text("#recovered")
    assert "old phone no longer works" in said and "wait 24 hours" in said
    assert_fits(page, DESKTOP["width"])
    walk.shot("recovered-en-desktop")

    # The thief's device key is revoked: gone from the list, and no login option is left.
    page.click("#go-security")
    assert page.locator("#factor-list li[data-type=device]").count() == 0

    # Within the hour the PIN alone unlocks one change: a new authenticator app.
    page.click("#unlock")
    assert page.locator("#options [data-option=knowledge]").count() == 1
    page.fill("#pin", PIN)
    page.click("#pin-submit")
    page.wait_for_selector("#add-totp")
    page.click("#add-totp")
    secret = page.inner_text("#totp-secret").strip()
    page.fill("#activate-code", pyotp.TOTP(secret).now())
    page.click("#activate")
    page.wait_for_selector("#factor-list li[data-type=totp]")

    # Money actions wait out the cooling-off that the recovery started.
    walk.held_for("/loan")
    assert page.locator("#reasons [data-code=cooling_off]").count() == 1
    assert page.locator("#held-until").count() == 1
    walk.close()


def test_pin_only_recovery_waits_and_the_owner_cancels_in_chinese(browser, portal, phone):  # noqa: F811
    walk, check, seen = zh_walk(browser, portal, phone)
    page = walk.page
    bind_browser(walk)

    walk.goto("/login")
    check("login")
    page.click("#lost-phone")
    check("lost")
    page.fill("#phone", phone)
    page.click("#lost-wait")
    assert page.locator("#options [data-option=knowledge]").count() == 1
    check("verify-delayed")
    before = datetime.now(UTC)
    page.fill("#pin", PIN)
    page.click("#pin-submit")
    page.wait_for_selector("#waiting-title")
    after = datetime.now(UTC)
    check("waiting")
    walk.shot("waiting-zh-phone")
    found = re.fullmatch(
        r"您可于 (\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d)（北京时间）起输入安全密码完成账号恢复。",
        page.inner_text("#ready-at"),
    )
    assert found, page.inner_text("#ready-at")
    ready = datetime.strptime(found.group(1), "%Y年%m月%d日 %H:%M")
    ready = ready.replace(tzinfo=ZoneInfo("Asia/Shanghai"))
    assert before + DELAY <= ready <= after + DELAY + timedelta(minutes=1)
    assert "恢复码" in page.inner_text("#waiting-cancel")

    # The phone in a thief's hand (this browser) no longer logs in.
    start_login(walk)
    page.wait_for_selector("#reasons")
    assert page.inner_text("#reasons [data-code=recovery_pending]") == idv_text.reason_text(
        "recovery_pending", "zh-CN"
    )
    check("login-held")

    # The owner cancels: PIN + the suspended browser key (cancel_recovery).
    walk.goto("/lost")
    page.fill("#phone", phone)
    page.click("#lost-now")  # a recovery is waiting: its page, whatever the button
    page.wait_for_selector("#cancel-recovery")
    page.click("#cancel-recovery")
    page.wait_for_selector("#factor-knowledge")
    check("verify-cancel")
    walk.prove_pin()
    walk.use_browser()
    assert page.inner_text(".flash.ok") == "本次找回已取消，您的验证方式已恢复可用。"
    check("cancelled")

    # The factors are back: this browser logs in again.
    start_login(walk)
    walk.use_browser()
    page.wait_for_selector("#signed-in")
    assert len(seen) == 7
    walk.close()


def test_forgot_pin_with_this_browser_and_a_recovery_code_in_chinese(browser, portal, phone):  # noqa: F811
    walk, check, seen = zh_walk(browser, portal, phone)
    page = walk.page

    # Recovery codes, behind the usual step-up, shown once, for paper.
    walk.unlock_with_sms_and_pin()
    check("security-unlocked")
    page.click("#setup-codes")
    codes = [c.strip() for c in page.locator("#recovery-codes code").all_inner_texts()]
    assert len(codes) == 10 and len(set(codes)) == 10
    assert "不要保存在手机里" in page.inner_text("#codes-keep-off")
    check("codes")
    page.evaluate("window.print = () => { window.printed = true; }")
    page.click("#print-codes")
    assert page.evaluate("window.printed") is True
    page.emulate_media(media="print")
    assert page.is_hidden("header") and page.is_hidden("#dev-panel")
    assert page.is_hidden("#print-codes") and page.is_visible("#recovery-codes")
    page.emulate_media(media="screen")
    page.click("#codes-done")
    assert page.inner_text("#codes-left") == "剩余 10 个（共 10 个）"
    assert codes[0] not in page.content()  # once: never again on the settings page
    bind_browser(walk)

    # Forgot the PIN: this browser (the phone's factor) + one recovery code, then a new PIN.
    walk.goto("/login")
    page.click("#forgot-pin")
    check("forgot")
    page.fill("#phone", phone)
    page.click("#forgot-submit")
    options = [o.get_attribute("data-option") for o in page.locator("#options li").all()]
    assert "device+recovery_code" in options and "device+attested" in options
    assert not [o for o in options if "knowledge" in o]
    check("verify-reset")
    page.fill("#recovery-code", codes[3].lower().replace("-", " "))  # as a person types it
    page.click("#recovery-code-submit")
    page.wait_for_selector("#options .ok")
    walk.use_browser()
    page.wait_for_selector("#new-pin-form")
    check("new-pin")
    page.fill("#new-pin", NEW_PIN)
    page.fill("#new-pin-confirm", NEW_PIN[::-1])
    page.click("#set-pin")
    assert page.inner_text(".flash.error:not([hidden])") == "两次输入的安全密码不一致，请重新输入。"
    page.fill("#new-pin", NEW_PIN)
    page.fill("#new-pin-confirm", NEW_PIN)
    page.click("#set-pin")
    assert "安全密码已修改" in page.inner_text(".flash.ok")
    check("pin-reset-done")

    # The old PIN is refused, the new one works (browser + PIN unlocks a change).
    start_login(walk)
    walk.use_browser()
    page.wait_for_selector("#signed-in")
    walk.goto("/security")
    assert page.inner_text("#codes-left") == "剩余 9 个（共 10 个）"
    page.click("#unlock")
    page.fill("#pin", PIN)
    page.click("#pin-submit")
    said = page.inner_text(".flash.error:not([hidden])")
    assert said.startswith(idv_text.failed_proof("knowledge", None, "zh-CN")[:8]), said
    page.fill("#pin", NEW_PIN)
    page.click("#pin-submit")
    page.wait_for_selector("#options .ok")
    walk.use_browser()
    assert page.locator("#unlock").count() == 0
    assert len(seen) == 6
    walk.close()
