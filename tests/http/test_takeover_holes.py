"""The three takeover holes of issue 19, each a regression test that failed on the code before
the fix, and the support desk's erasure (API.md, Subjects and factors; Recovery).

1. The no-PIN bootstrap held for the subject's whole life: the phone set the first PIN of an
   established account. Now only during onboarding (the first 24 h).
2. ``DELETE`` then ``PUT`` of the same subject wiped every protection (a fresh onboarding).
3. An ``enroll_factor`` assertion minted before a PIN existed replaced that PIN later.
"""

from __future__ import annotations

import pytest

from service.storage import audit
from service.usecases.clients import create_client
from tests.http.flow import PIN, User

DAY = 24 * 3600


def test_hole1_no_pin_bootstrap_only_during_onboarding(user):
    # During onboarding a subject with nothing but its phone sets a PIN, no step-up needed.
    onboarding = User(user.http, user.auth, subject_id="bob", clock=user.clock)
    assert onboarding.put().status_code == 201
    assert onboarding.enroll({"type": "knowledge", "secret": PIN}).status_code == 201
    # After it, SMS alone no longer sets the first PIN of an established account...
    user.advance(DAY + 60)
    r = user.enroll({"type": "knowledge", "secret": PIN})
    assert r.status_code == 403 and r.json["error"] == "step_up_required", r.json
    # ...and the phone's TOTP no longer bootstraps one either: only an attestation would.
    user.add_totp()
    r = user.start("enroll_factor")
    assert r.json["status"] == "denied" and r.json["options"] == [], r.json
    r = user.enroll({"type": "knowledge", "secret": PIN})
    assert r.status_code == 403


def test_hole1_bootstrap_still_works_in_onboarding(user):
    user.add_totp()
    r = user.start("enroll_factor")
    assert r.json["options"] == [["totp"], ["sms"]], r.json
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))


def test_hole2_erasure_needs_a_step_up_and_recreation_gets_no_onboarding(user, http, auth):
    user.add_all_factors()
    r = http.delete("/v1/subjects/alice", headers=auth)
    assert r.status_code == 403 and r.json["error"] == "step_up_required", r.json
    token = user.step_up("delete_account", ["totp", "knowledge"])
    r = http.delete("/v1/subjects/alice", json={"assertion": token}, headers=auth)
    assert r.status_code == 204
    assert user.factors().status_code == 404
    # The thief re-creates the subject with the same phone: no onboarding exemption.
    assert user.put().status_code == 201
    r = user.enroll({"type": "knowledge", "secret": PIN})
    assert r.status_code == 403, r.json
    user.add_totp()  # a first phone-bound factor needs nothing, as before
    r = user.start("enroll_factor")
    assert r.json["status"] == "denied", r.json


def test_hole2_erased_phone_forgotten_after_30_days(user, http, auth):
    assert http.delete("/v1/subjects/alice", headers=auth).status_code == 204  # SMS only
    user.advance(31 * DAY)
    assert user.put().status_code == 201
    assert user.enroll({"type": "knowledge", "secret": PIN}).status_code == 201


def test_hole3_stale_assertion_cannot_replace_a_pin_set_since(user):
    user.add_totp()
    first = user.step_up("enroll_factor", ["totp"])
    second = user.step_up("enroll_factor", ["totp"])  # minted while there is no PIN
    user.add_pin(assertion=first)
    r = user.enroll({"type": "knowledge", "secret": "582947", "assertion": second})
    assert r.status_code == 403 and r.json["error"] == "step_up_required", r.json
    # The PIN is still the person's.
    vid = user.start("password_reset").json["verification_id"]
    assert user.prove(vid, {"factor": "knowledge", "secret": PIN}).json["accepted"]


@pytest.fixture
def desk(ctx):
    return {"Authorization": f"Bearer {create_client(ctx, 'desk', ['verify', 'admin'])[1]}"}


def test_support_desk_erases_with_operator_audited_and_alerted(http, ctx, desk, auth, clock):
    desk_user = User(http, desk, clock=clock)
    assert desk_user.put().status_code == 201
    desk_user.add_totp()
    url = "/v1/admin/subjects/alice"
    # The app backend's verify key cannot use the desk's route; the operator must be named.
    assert http.delete(url, headers=dict(auth, **{"Idv-Operator": "agent-7"})).status_code == 403
    r = http.delete(url, headers=desk)
    assert r.status_code == 400 and r.json["error"] == "invalid_request"
    r = http.delete(url, headers=dict(desk, **{"Idv-Operator": "agent-7"}))
    assert r.status_code == 204
    assert desk_user.factors().status_code == 404
    with ctx.engine.connect() as conn:
        entries = audit.entries(conn)
    erased = [e for e in entries if e["event"] == "operator.erase"]
    alerts = [e for e in entries if e["event"] == "operator.alert"]
    assert erased and erased[-1]["operator"] == "agent-7"
    assert alerts and alerts[-1]["outcome"] == "subject_erased"
    # Re-created within 30 days: no onboarding exemption.
    assert desk_user.put().status_code == 201
    assert desk_user.enroll({"type": "knowledge", "secret": PIN}).status_code == 403
