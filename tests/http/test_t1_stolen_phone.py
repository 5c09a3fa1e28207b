"""THREATS.md T1, the stolen-phone chain, end to end through HTTP.

The thief holds alice's unlocked phone: the SIM (SMS codes arrive, read here from the SMS file
sink), the device key and the TOTP app. The thief does not know alice's PIN. Whatever the thief
proves, in whatever order the API allows, no sensitive action may become ``satisfied`` and no
assertion may come back; factor and phone changes need step-ups the thief cannot get.
"""

from __future__ import annotations

import itertools
import time

import pytest

from tests.http.flow import PHONE, PIN

THIEF_FACTORS = ("sms", "device", "totp")  # what travels with an unlocked phone
SENSITIVE = [
    "view_personal_data",  # T1 step 2
    "change_phone",  # T1 step 3 (ASVS 7.5.1)
    "password_reset",  # T1 step 3
    "payment_password_reset",  # T1 step 5
    "sim_unblock",  # T1 step 4
]
NEW_PHONE = "+8613900139000"


@pytest.fixture
def victim(user):
    """alice with phone, TOTP, PIN and a device key, all enrolled before the theft."""
    user.add_all_factors()
    return user


def _no_success(r, action, order, factor):
    """A thief's attempt either is refused (factor_not_allowed) or counts without satisfying."""
    where = (action, order, factor, r.status_code, r.json)
    if r.status_code == 422:
        # API.md: a factor in no remaining option → 422 factor_not_allowed.
        assert r.json["error"] == "factor_not_allowed", where
        return
    assert r.status_code == 200, where
    assert r.json["status"] != "satisfied", where
    assert r.json.get("assertion") is None, where
    assert "knowledge" not in r.json["satisfied"], where


@pytest.mark.parametrize("action", SENSITIVE)
def test_thief_with_sms_device_and_totp_never_satisfies(victim, http, auth, action):
    # T1 "what breaks the chain": SMS possession (and anything else on the phone) alone must
    # never unlock personal data, resets, or SIM unblocking; knowledge did not travel.
    for order in itertools.permutations(THIEF_FACTORS):
        victim.advance(150)  # stay under the per-phone SMS send limit (ASVS 6.6.3: 5/10 min)
        r = victim.start(action)
        assert r.status_code == 201
        v = r.json
        assert v["status"] == "pending", (action, v)
        for option in v["options"]:
            assert "knowledge" in option, (action, v)  # no option without the PIN
        vid = v["verification_id"]
        accepted = []
        for factor in order:
            res = victim.attempt(vid, factor)
            _no_success(res, action, order, factor)
            if res.status_code == 200 and res.json["accepted"]:
                accepted.append(factor)
        got = http.get(f"/v1/verifications/{vid}", headers=auth).json
        assert got["status"] == "pending", (action, order, got)
        assert "assertion" not in got
        assert set(got["satisfied"]) == set(accepted), (action, order, got)
        # Sanity: the thief's factors really work (the refusal is the policy, not a broken
        # factor): at least one of them counted whenever the action offers it.
        offered = {f for option in v["options"] for f in option}
        assert set(accepted) == offered & set(THIEF_FACTORS), (action, order, got)


@pytest.mark.parametrize("action", ["view_personal_data", "password_reset", "sim_unblock"])
def test_thief_guessing_the_pin_locks_the_verification(victim, action):
    # NIST SP 800-63B-4 throttling; policy failure_limit = 5: the 5th failure locks.
    vid = victim.start(action).json["verification_id"]
    assert victim.attempt(vid, "totp").json["accepted"] is True
    guesses = ["000000", "123456", "111111", "888888", "520520"]
    for index, guess in enumerate(guesses):
        r = victim.prove(vid, {"factor": "knowledge", "secret": guess})
        assert r.status_code == 200 and r.json["accepted"] is False
        assert r.json.get("assertion") is None
        assert r.json["status"] == ("locked" if index == len(guesses) - 1 else "pending")
    # API.md: a verification that is not pending answers 409, even to the right PIN.
    r = victim.prove(vid, {"factor": "knowledge", "secret": PIN})
    assert r.status_code == 409 and r.json["error"] == "not_pending"


def test_thief_cannot_change_the_phone(victim, http, auth):
    # API.md / ASVS 7.5.1 / T2: changing the phone of a subject with a strong factor needs a
    # change_phone assertion, and the thief can only earn a login assertion.
    r = victim.put(NEW_PHONE)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    login = victim.step_up("login", ["sms"])
    r = victim.put(NEW_PHONE, assertion=login)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    # The phone is unchanged: the next code still goes to the victim's number.
    vid = victim.start("login").json["verification_id"]
    assert victim.challenge(vid, "sms").status_code == 200
    assert victim.sms_messages()[-1]["to"] == PHONE


def test_thief_cannot_enrol_a_new_pin(victim):
    # T1: "once a PIN exists nobody changes factors without it" (API.md step_up_required).
    r = victim.enroll({"type": "knowledge", "secret": "582913"})
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    login = victim.step_up("login", ["device"])
    r = victim.enroll({"type": "knowledge", "secret": "582913", "assertion": login})
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    # Nor a second TOTP or device under the thief's control.
    r = victim.enroll({"type": "totp"})
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    # enroll_factor itself needs the PIN: the thief's factors never complete it.
    v = victim.start("enroll_factor").json
    assert all("knowledge" in option for option in v["options"])
    # The real PIN still works and the thief's one never became a factor.
    vid = victim.start("view_personal_data").json["verification_id"]
    victim.prove_factor(vid, "totp")
    r = victim.prove(vid, {"factor": "knowledge", "secret": "582913"})
    assert r.json["accepted"] is False
    assert victim.prove(vid, {"factor": "knowledge", "secret": PIN}).json["status"] == "satisfied"


def test_thief_cannot_remove_the_pin(victim):
    # API.md: removing a factor needs an enroll_factor assertion in the JSON body.
    pin = next(f for f in victim.factors().json["factors"] if f["type"] == "knowledge")
    r = victim.remove_factor(pin["factor_id"])
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    login = victim.step_up("login", ["totp"])
    r = victim.remove_factor(pin["factor_id"], assertion=login)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    types = [f["type"] for f in victim.factors().json["factors"]]
    assert "knowledge" in types


def _since(moment: float) -> float:
    return time.time() - moment


def test_password_reset_starts_a_24h_cooling_off_for_payment_reset(victim):
    # T1 "sensitive events chain": right after a password reset, a payment-password reset or a
    # loan waits out cooling_off = "24h" (policies/default.toml).
    assert victim.start("payment_password_reset").json["status"] == "pending"
    victim.step_up("password_reset", ["totp", "knowledge"])
    reset_at = time.time()
    for action in ("payment_password_reset", "loan_application"):
        v = victim.start(action).json
        assert v["status"] == "denied" and v["options"] == [], v
        assert "cooling_off" in v["reasons"], v
    # Just inside the window: still held.
    victim.advance(24 * 3600 - 60 - _since(reset_at))
    v = victim.start("payment_password_reset").json
    assert v["status"] == "denied" and "cooling_off" in v["reasons"], v
    # Just outside: the real user (TOTP + PIN) goes ahead.
    victim.advance(24 * 3600 + 60 - _since(reset_at))
    v = victim.start("payment_password_reset").json
    assert v["status"] == "pending" and v["reasons"] == [], v
    victim.step_up("payment_password_reset", ["totp", "knowledge"])


def test_new_device_binding_after_onboarding_starts_cooling_off(victim):
    # T1: "right after ... a new device binding ... the next sensitive action waits".
    victim.advance(25 * 3600)  # past the 24 h onboarding window of a new subject
    assert victim.start("loan_application").json["status"] == "pending"
    victim.add_device(assertion=victim.step_up("enroll_factor", ["totp", "knowledge"]))
    added_at = time.time()
    v = victim.start("loan_application").json
    assert v["status"] == "denied" and "cooling_off" in v["reasons"], v
    victim.advance(24 * 3600 + 60 - _since(added_at))
    assert victim.start("loan_application").json["status"] == "pending"


def test_phone_change_starts_cooling_off(victim):
    # T1/T2: a changed phone is a sensitive event; payment resets wait 24 h after it.
    victim.put(NEW_PHONE, assertion=victim.step_up("change_phone", ["totp", "knowledge"]))
    v = victim.start("payment_password_reset").json
    assert v["status"] == "denied" and "cooling_off" in v["reasons"], v
