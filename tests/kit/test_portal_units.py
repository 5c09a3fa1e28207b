"""The Lendly portal's pure parts: form checks, the time-zone cookie, the TOTP set-up store,
reading ``attempts_left``, and its Chinese strings (issue 21). No server needed."""

from __future__ import annotations

import re

import pytest

import idv_client
from idv_client import ProofResult


@pytest.mark.parametrize(
    ("raw", "left"), [({"attempts_left": 2}, 2), ({}, None), ({"attempts_left": True}, None)]
)
def test_attempts_left_is_read_from_the_proof_answer_when_present(raw, left):
    from examples.loan_portal.flows import attempts_left

    body = {
        "verification_id": "vf_1",
        "status": "pending",
        "accepted": False,
        "satisfied": [],
        **raw,
    }
    assert attempts_left(ProofResult.from_json(body)) == left


@pytest.mark.parametrize(
    ("cookie", "zone"),
    [
        ("Europe/Berlin", "Europe/Berlin"),
        ("America/Argentina/Buenos_Aires", "America/Argentina/Buenos_Aires"),
        (None, "Asia/Shanghai"),
        ("", "Asia/Shanghai"),
        ("Mars/Olympus", "Asia/Shanghai"),
        ("../../etc/passwd", "Asia/Shanghai"),
        ("/etc/localtime", "Asia/Shanghai"),
        ("Europe/" + "x" * 300, "Asia/Shanghai"),
        ("Europe/Berlin\x00", "Asia/Shanghai"),
    ],
)
def test_the_time_zone_cookie_is_a_real_zone_or_beijing(cookie, zone):
    from examples.loan_portal.forms import time_zone

    assert time_zone(cookie) == zone


@pytest.mark.parametrize(
    ("raw", "amount"),
    [
        ("20000", 20000),
        ("20,000", 20000),
        ("２００００", 20000),
        ("¥1000", 1000),
        (" 50000 ", 50000),
    ],
)
def test_loan_amounts_people_type(raw, amount):
    from examples.loan_portal.forms import loan_amount

    assert loan_amount(raw) == amount


def test_a_totp_set_up_is_forgotten_after_its_time():
    from examples.loan_portal.accounts import PendingTotp

    now = [1000.0]
    pending = PendingTotp(ttl=900, clock=lambda: now[0])
    enrolled = idv_client.EnrolledFactor(
        factor_id="fa_1", type="totp", status="pending", secret="S"
    )
    pending.put("u_1", enrolled)
    now[0] += 899
    assert pending.get("u_1") is enrolled
    now[0] += 1
    assert pending.get("u_1") is None


def test_every_chinese_string_of_the_portal_is_chinese_and_none_is_missing():
    """The browser walk sees most zh pages; this sees every string, those of pages it skips."""
    from examples.loan_portal.i18n import MESSAGES

    assert MESSAGES["zh"].keys() == MESSAGES["en"].keys()
    for key, text in MESSAGES["zh"].items():
        if key == "switch_lang":  # "English", shown in English (lang="en")
            continue
        words = re.sub(r"\{[a-z_]+\}", "", text)  # placeholders such as {phone}
        assert set(re.findall(r"[A-Za-z]+", words)) <= {"SIM"}, (key, text)
        assert "idv" not in text.lower()
