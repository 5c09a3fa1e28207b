"""Forgot the PIN (API.md, Recovery, ``reset_knowledge``): its assertion replaces the PIN once,
and money actions then wait out their cooling-off (T1 "sensitive events chain").

The default policy's options need a recovery code or an attestation (another branch builds
those factors); here the same rules run under a copy of the default policy whose only change
is ``reset_knowledge``'s attested options (device + TOTP instead), so the redemption path is
tested on its own.
"""

from __future__ import annotations

import pytest

from tests.http.flow import PIN, policy_variant

NEW_PIN = "582947"


@pytest.fixture
def settings(settings, tmp_path):  # type: ignore[no-untyped-def]
    # The attested options become one of device + TOTP; the recovery-code ones stay.
    attested = '["device", "attested"], ["totp", "attested"], '
    return policy_variant(
        settings, tmp_path, "[actions.reset_knowledge]", attested, '["device", "totp"], '
    )


def test_reset_knowledge_assertion_replaces_the_pin_once(user):
    user.add_all_factors()
    token = user.step_up("reset_knowledge", ["device", "totp"])
    r = user.enroll({"type": "knowledge", "secret": NEW_PIN, "assertion": token})
    assert r.status_code == 201, r.json
    again = user.enroll({"type": "knowledge", "secret": "603918", "assertion": token})
    assert again.status_code == 403 and again.json["error"] == "step_up_required"
    vid = user.start("password_reset").json["verification_id"]
    assert not user.prove(vid, {"factor": "knowledge", "secret": PIN}).json["accepted"]
    assert user.prove(vid, {"factor": "knowledge", "secret": NEW_PIN}).json["accepted"]
    # A PIN reset starts money actions' cooling-off, even during onboarding.
    for action in ("payment_password_reset", "loan_application"):
        v = user.start(action).json
        assert v["status"] == "denied" and v["reasons"] == ["cooling_off"], v


def test_reset_knowledge_assertion_adds_no_other_factor(user):
    user.add_all_factors()
    token = user.step_up("reset_knowledge", ["device", "totp"])
    r = user.enroll({"type": "totp", "assertion": token})
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
