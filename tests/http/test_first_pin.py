"""A first PIN set after onboarding starts the cooling-off of money actions (API.md, Recovery,
Onboarding; issue 19, hole 1), so a PIN set by whoever got the enroll_factor step-up cannot
move money at once.

The default policy lets only an attestation (another branch builds that factor) set the first
PIN after onboarding; here the same rules run with that one option swapped for TOTP, so the
event and its cooling-off are tested on their own.
"""

from __future__ import annotations

import pytest

from tests.http.flow import policy_variant

DAY = 24 * 3600


@pytest.fixture
def settings(settings, tmp_path):  # type: ignore[no-untyped-def]
    block = '[[actions.enroll_factor.when]]\nsubject_lacks = "knowledge"\nonboarding = false'
    return policy_variant(
        settings, tmp_path, block, 'options = [["attested"]]', 'options = [["totp"]]'
    )


def test_first_pin_after_onboarding_starts_the_cooling_off(user):
    user.add_totp()
    user.advance(DAY + 60)  # an established account without a PIN
    r = user.enroll({"type": "knowledge", "secret": "739184"})
    assert r.status_code == 403  # never without a step-up once onboarding is over
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    for action in ("payment_password_reset", "loan_application"):
        v = user.start(action).json
        assert v["status"] == "denied" and "cooling_off" in v["reasons"], v
    user.advance(DAY + 60)
    assert user.start("loan_application").json["status"] == "pending"
