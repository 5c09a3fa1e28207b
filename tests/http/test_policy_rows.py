"""Every row of policies/default.toml, seen through HTTP (API.md "Step-up verification").

For subjects with every factor and with only some, ``POST /v1/verifications`` must offer
exactly the policy's options the subject can use (``options``), ``denied`` with
``no_eligible_factors`` when none is left, and every completed option must yield an assertion
whose ``acr`` is the policy's and whose ``amr`` uses RFC 8176 values.

The expected options below are written out from the policy file by hand (not read from it), so
a change to the shipped policy shows up here as a failing row.
"""

from __future__ import annotations

import pytest

from tests.http.flow import User, verified_claims

# policies/default.toml, row by row: (acr, options).
POLICY: dict[str, tuple[str, list[list[str]]]] = {
    # T1 step 2, T2: the phone alone may log in.
    "login": ("aal1", [["sms"], ["totp"], ["device"]]),
    # T1 step 2: personal data needs a chosen secret too.
    "view_personal_data": (
        "aal2",
        [["device", "knowledge"], ["totp", "knowledge"], ["sms", "knowledge"]],
    ),
    # T2, ASVS 7.5.1: never by SMS to the old number.
    "change_phone": ("aal2", [["device", "knowledge"], ["totp", "knowledge"]]),
    # T1, ASVS 6.4.4: once a PIN exists nobody changes factors without it.
    "enroll_factor": (
        "aal2",
        [["device", "knowledge"], ["totp", "knowledge"], ["sms", "knowledge"]],
    ),
    # T1 steps 3 and 5, ASVS 6.4.3: a reset never by SMS.
    "password_reset": ("aal2", [["device", "knowledge"], ["totp", "knowledge"]]),
    # T1 step 5.
    "payment_password_reset": ("aal2", [["device", "knowledge"], ["totp", "knowledge"]]),
    "loan_application": ("aal2", [["device", "knowledge"], ["totp", "knowledge"]]),
    # T1 step 4: the support desk's word is not a factor.
    "sim_unblock": ("aal2", [["knowledge", "totp"], ["knowledge", "device"]]),
}
# [[actions.enroll_factor.when]] subject_lacks = "knowledge": a subject with no PIN yet
# bootstraps with one factor.
ENROLL_BOOTSTRAP = [["totp"], ["device"], ["sms"]]

# RFC 8176 §2 values for idv's factors.
AMR = {"sms": "sms", "totp": "otp", "device": "swk", "knowledge": "pin"}

SUBJECTS = {
    "phone": [],
    "phone+totp": ["totp"],
    "phone+device": ["device"],
    "phone+pin": ["knowledge"],
    "phone+totp+device": ["totp", "device"],
    "phone+totp+pin": ["totp", "knowledge"],
    "phone+device+pin": ["device", "knowledge"],
    "phone+all": ["totp", "knowledge", "device"],
}


def give(user: User, kinds: list[str]) -> None:
    """Enrol ``kinds`` in order; every factor after the first needs an enroll_factor step-up."""
    for index, kind in enumerate(kinds):
        assertion = user.step_up_first("enroll_factor") if index else None
        if kind == "totp":
            user.add_totp(assertion=assertion)
        elif kind == "device":
            user.add_device(assertion=assertion)
        else:
            user.add_pin(assertion=assertion)


def expected(action: str, has: set[str]) -> list[list[str]]:
    """The policy's options for ``action`` that a subject with ``has`` can use."""
    options = POLICY[action][1]
    if action == "enroll_factor" and "knowledge" not in has:
        options = ENROLL_BOOTSTRAP
    return [option for option in options if set(option) <= has]


def normal(options: list[list[str]]) -> list[list[str]]:
    """Options as a comparable value (the contract promises no order)."""
    return sorted(sorted(option) for option in options)


@pytest.mark.parametrize("kinds", list(SUBJECTS.values()), ids=list(SUBJECTS))
def test_every_policy_row_for_subject(user, kinds):
    give(user, kinds)
    has = {"sms", *kinds}
    for action in POLICY:
        r = user.start(action, ip="203.0.113.7")
        assert r.status_code == 201, (action, r.json)
        v = r.json
        assert v["action"] == action
        want = expected(action, has)
        if want:
            # API.md: `options` lists the combinations this subject can use right now.
            assert v["status"] == "pending", (action, v)
            assert normal(v["options"]) == normal(want), (action, v)
            assert v["reasons"] == [], (action, v)
        else:
            # API.md: a denied verification has options [] and a machine-readable reason.
            assert v["status"] == "denied", (action, v)
            assert v["options"] == [], (action, v)
            assert "no_eligible_factors" in v["reasons"], (action, v)


def test_spot_checks_written_out(user):
    """A few rows spelled out literally, as a reader of the policy would expect them."""
    # Phone only: login by SMS, enrolment bootstraps by SMS, nothing sensitive.
    assert user.start("login").json["options"] == [["sms"]]
    assert user.start("enroll_factor").json["options"] == [["sms"]]
    for action in ("view_personal_data", "password_reset", "sim_unblock"):
        assert user.start(action).json["status"] == "denied", action
    user.add_totp()
    v = user.start("enroll_factor").json
    assert normal(v["options"]) == [["sms"], ["totp"]]
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    # With a PIN, SMS alone no longer enrols anything (T1): the PIN is always part of it.
    assert normal(user.start("enroll_factor").json["options"]) == [
        ["knowledge", "sms"],
        ["knowledge", "totp"],
    ]
    assert normal(user.start("view_personal_data").json["options"]) == [
        ["knowledge", "sms"],
        ["knowledge", "totp"],
    ]
    assert normal(user.start("sim_unblock").json["options"]) == [["knowledge", "totp"]]


@pytest.mark.parametrize(
    "action", ["password_reset", "payment_password_reset", "loan_application", "change_phone"]
)
def test_sms_is_never_an_option_for_resets(user, action):
    # T1 step 3/5, ASVS 6.4.3: "a reset never by SMS", even beside the PIN.
    user.add_all_factors()
    v = user.start(action).json
    assert v["status"] == "pending"
    assert all("sms" not in option for option in v["options"])
    sent_before = len(user.sms_messages())
    r = user.challenge(v["verification_id"], "sms")
    assert r.status_code == 422 and r.json["error"] == "factor_not_allowed"
    # ... and no code went out.
    assert len(user.sms_messages()) == sent_before


def test_phone_and_pin_is_not_enough_for_a_reset(user):
    # T1 step 5: "forgot password" with SMS + something read off another service fails.
    user.add_pin()
    for action in ("password_reset", "payment_password_reset", "loan_application", "sim_unblock"):
        v = user.start(action).json
        assert v["status"] == "denied" and v["options"] == [], action
        assert "no_eligible_factors" in v["reasons"], action


@pytest.mark.parametrize("action", ["launch_missiles", "LOGIN", "login ", "sim-unblock"])
def test_unknown_action_is_400(user, action):
    # API.md: unknown action → 400 unknown_action.
    r = user.start(action)
    assert r.status_code == 400 and r.json["error"] == "unknown_action"


def test_unknown_action_is_checked_before_the_subject(http, auth):
    # API.md: unknown action → 400, unknown subject → 404; the action is judged first.
    r = http.post(
        "/v1/verifications", headers=auth, json={"subject_id": "nobody", "action": "nope"}
    )
    assert r.status_code == 400 and r.json["error"] == "unknown_action"


def _complete(user: User, action: str, option: list[str]) -> str:
    r = user.start(action)
    assert r.json["status"] == "pending" and option in r.json["options"], (action, r.json)
    vid = r.json["verification_id"]
    result = None
    for factor in option:
        result = user.prove_factor(vid, factor)
        assert result.status_code == 200 and result.json["accepted"], (action, factor, result.json)
    assert result is not None and result.json["status"] == "satisfied", (action, result.json)
    assert sorted(result.json["satisfied"]) == sorted(option)
    return result.json["assertion"]


def _check_claims(http, auth, token: str, action: str, option: list[str]) -> None:
    claims = verified_claims(http, auth, token)
    assert claims["action"] == action and claims["sub"] == "alice"
    # The policy's acr for the action (RFC 9470 acr_values come from here), except that a
    # one-factor option never claims AAL2 (NIST SP 800-63B-4: AAL2 needs two factors).
    want_acr = POLICY[action][0] if len(option) > 1 else "aal1"
    assert claims["acr"] == want_acr, (action, option, claims)
    # RFC 8176: sms, otp, swk, pin; "mfa" when more than one factor was used.
    want = {AMR[f] for f in option} | ({"mfa"} if len(option) > 1 else set())
    assert set(claims["amr"]) == want and len(claims["amr"]) == len(want), (action, claims)
    # API.md: exp at most 5 minutes after iat.
    assert 0 < claims["exp"] - claims["iat"] <= 300


def test_every_option_yields_policy_acr_and_rfc8176_amr(user, http, auth):
    user.add_all_factors()
    # password_reset last: it starts the payment/loan cooling-off (T1 "sensitive events chain").
    order = [a for a in POLICY if a != "password_reset"] + ["password_reset"]
    for action in order:
        for option in POLICY[action][1]:
            token = _complete(user, action, option)
            _check_claims(http, auth, token, action, option)


def test_bootstrap_enroll_options_yield_single_factor_assertions(user, http, auth):
    # enroll_factor while no PIN: each single factor completes it.
    give(user, ["totp", "device"])
    for option in ENROLL_BOOTSTRAP:
        token = _complete(user, "enroll_factor", option)
        _check_claims(http, auth, token, "enroll_factor", option)
