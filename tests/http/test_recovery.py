"""Recovery for the person who lost the phone (API.md, Recovery; issue 19).

The stories: a PIN-only person whose unlocked phone was stolen waits out ``recover_delayed``
while the thief's phone stops logging in at once; the person cancels a recovery they did not
start; a thief with the phone (SMS inbox, device key, TOTP app) but not the PIN gets nowhere.
NIST SP 800-63B-4 loss and theft; THREATS.md T1; Apple-style delayed recovery.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from service.storage.tables import webhook_outbox
from service.usecases.notify import register
from tests.http.flow import PHONE, User, carrier_event, now_rfc3339

DELAY = 72 * 3600  # the default policy's recover_delayed delay


def statuses(user: User) -> dict[str, str]:
    return {f["type"]: f["status"] for f in user.factors().json["factors"]}


def webhook_types(ctx) -> list[str]:
    with ctx.engine.connect() as conn:
        return [r.type for r in conn.execute(select(webhook_outbox.c.type))]


def start_wait(user: User) -> dict:
    """The victim proves the PIN for recover_delayed: the verification waits."""
    r = user.start("recover_delayed")
    assert r.status_code == 201 and r.json["options"] == [["knowledge"]], r.json
    vid = r.json["verification_id"]
    proof = user.prove_factor(vid, "knowledge")
    assert proof.status_code == 200, proof.json
    assert proof.json["status"] == "waiting" and proof.json["accepted"], proof.json
    assert proof.json["assertion"] is None
    return {"vid": vid, **proof.json}


def get(user: User, vid: str):
    return user.http.get(f"/v1/verifications/{vid}", headers=user.auth)


def cancel(user: User, vid: str, assertion: str | None = None):
    body = {"assertion": assertion} if assertion else {}
    return user.http.post(f"/v1/verifications/{vid}/cancel", json=body, headers=user.auth)


def test_pin_only_person_recovers_after_the_delay(user, ctx, clock):
    register(ctx, user.http.get("/v1/client", headers=user.auth).json["client_id"], "https://t/h")
    user.add_all_factors()
    login_before = user.start("login").json["verification_id"]  # the thief's, opened earlier
    wait = start_wait(user)
    ready_at = datetime.fromisoformat(wait["ready_at"].replace("Z", "+00:00"))
    assert timedelta(hours=71, minutes=59) < ready_at - datetime.now(UTC) <= timedelta(hours=72)
    view = get(user, wait["vid"]).json
    assert view["status"] == "waiting" and view["ready_at"] == wait["ready_at"]
    assert view["options"] == []
    assert "recovery.started" in webhook_types(ctx)

    # At once the thief's phone no longer logs in: TOTP, device and SMS are in no option.
    r = user.start("login")
    assert r.json["status"] == "denied" and "no_eligible_factors" in r.json["reasons"], r.json
    assert "recovery_pending" in r.json["reasons"], r.json  # the caller can say why
    assert user.attempt(login_before, "totp").status_code in (409, 422)
    assert user.challenge(login_before, "sms").status_code in (409, 422)
    assert statuses(user) == {"totp": "suspended", "device": "suspended", "knowledge": "active"}

    # A proof before ready_at is refused; a sim_lost report (what the victim does next) does
    # not cancel the wait.
    early = user.prove(wait["vid"], {"factor": "knowledge", "secret": "739184"})
    assert early.status_code == 409 and early.json["error"] == "not_pending"
    assert carrier_event(user.http, _carrier(ctx), PHONE, "sim_lost", now_rfc3339()).status_code
    assert get(user, wait["vid"]).json["status"] == "waiting"

    user.advance(DELAY + 1)
    view = get(user, wait["vid"]).json
    assert view["status"] == "pending" and view["options"] == [["knowledge"]], view
    done = user.prove_factor(wait["vid"], "knowledge")
    assert done.json["status"] == "satisfied" and done.json["assertion"], done.json
    assert "subject.recovered" in webhook_types(ctx)

    # The thief's TOTP and device are revoked for good; SMS is suspended too.
    assert statuses(user) == {"totp": "revoked", "device": "revoked", "knowledge": "active"}
    r = user.start("login")
    assert r.json["status"] == "denied", r.json
    # Within the hour the PIN alone enrols a new TOTP (the new phone's app).
    r = user.start("enroll_factor")
    assert ["knowledge"] in r.json["options"], r.json
    user.add_totp(assertion=user.step_up("enroll_factor", ["knowledge"]))
    assert user.start("login").json["options"] == [["totp"]]
    # Money actions wait out their cooling-off after a recovery.
    for action in ("payment_password_reset", "loan_application"):
        r = user.start(action)
        assert r.json["status"] == "denied" and "cooling_off" in r.json["reasons"], r.json
    # After the hour the window is closed: the PIN alone no longer adds a factor.
    user.advance(3601)
    assert ["knowledge"] not in user.start("enroll_factor").json["options"]


def _carrier(ctx) -> dict[str, str]:
    from service.usecases.clients import create_client

    return {"Authorization": f"Bearer {create_client(ctx, 'feed', ['carrier'])[1]}"}


def test_same_phone_set_again_after_recovery_brings_sms_back(user):
    user.add_all_factors()
    wait = start_wait(user)
    user.advance(DELAY + 1)
    user.prove_factor(wait["vid"], "knowledge")
    assert "sms" not in str(user.start("view_personal_data").json["options"])
    # The same number again is a re-set now, behind change_phone (the PIN, in the window).
    r = user.put(PHONE)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    assert user.put(PHONE, assertion=user.step_up("change_phone", ["knowledge"])).status_code == 200
    assert user.start("login").json["options"] == [["sms"]]


def test_cancel_with_pin_and_suspended_totp_restores_the_factors(user, ctx):
    register(ctx, user.http.get("/v1/client", headers=user.auth).json["client_id"], "https://t/h")
    user.add_all_factors()
    wait = start_wait(user)
    r = cancel(user, wait["vid"])
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    # The phone thief cannot cancel the victim's way out: TOTP and device count (suspended),
    # but never without the PIN.
    r = user.start("cancel_recovery")
    assert r.json["options"] == [["knowledge", "totp"], ["knowledge", "device"]], r.json
    for factor in ("totp", "device"):
        answer = user.attempt(r.json["verification_id"], factor)
        assert answer.json["accepted"] and answer.json["status"] == "pending", answer.json
    token = user.step_up("cancel_recovery", ["knowledge", "totp"])
    r = cancel(user, wait["vid"], token)
    assert r.status_code == 200 and r.json["status"] == "cancelled", r.json
    assert "recovery.cancelled" in webhook_types(ctx)
    assert statuses(user) == {"totp": "active", "device": "active", "knowledge": "active"}
    assert user.start("login").json["options"] == [["sms"], ["totp"], ["device"]]
    r = cancel(user, wait["vid"], token)
    assert r.status_code == 409 and r.json["error"] == "not_pending"
    # A cancel of anything but a waiting verification is 409 too.
    login = user.start("login").json["verification_id"]
    assert cancel(user, login, token).json["error"] == "not_pending"


def test_a_second_waiting_recovery_is_refused(user):
    user.add_all_factors()
    start_wait(user)
    second = user.start("recover_delayed").json["verification_id"]
    r = user.prove(second, {"factor": "knowledge", "secret": "739184"})
    assert r.status_code == 409 and r.json["error"] == "conflict", r.json
    assert get(user, second).json["status"] == "pending"  # nothing was written


def test_an_unused_recovery_expires_and_the_factors_return(user):
    user.add_all_factors()
    wait = start_wait(user)
    user.advance(DELAY + 24 * 3600 + 1)
    assert get(user, wait["vid"]).json["status"] == "expired"
    assert statuses(user) == {"totp": "active", "device": "active", "knowledge": "active"}
    assert user.start("login").json["options"] == [["sms"], ["totp"], ["device"]]
    r = user.prove(wait["vid"], {"factor": "knowledge", "secret": "739184"})
    assert r.status_code == 409
    start_wait(user)  # the expired wait no longer blocks a new one


def test_a_lockout_extends_the_completion_window(user):
    user.add_all_factors()
    wait = start_wait(user)
    before = get(user, wait["vid"]).json["expires_at"]
    # Three locked verifications lock the subject for 15 minutes (suspended factors count for
    # cancel_recovery, the one action they can still be tried on).
    for factor in ("totp", "knowledge", "totp"):
        vid = user.start("cancel_recovery").json["verification_id"]
        for _ in range(5):
            body = {"factor": "totp", "code": "000000"}
            if factor == "knowledge":
                body = {"factor": "knowledge", "secret": "wrong-pin-1"}
            r = user.prove(vid, body)
        assert r.json["status"] == "locked", r.json
    after = get(user, wait["vid"]).json["expires_at"]
    delta = datetime.fromisoformat(after[:-1]) - datetime.fromisoformat(before[:-1])
    assert delta == timedelta(minutes=15)


def test_thief_with_the_unlocked_phone_gets_nowhere(user, http, auth):
    # T1: SMS inbox, device key and TOTP app in hand; no PIN, no codes, no face.
    user.add_all_factors()
    login = user.step_up("login", ["totp"])
    for action in ("recover", "reset_knowledge"):
        r = user.start(action)
        assert r.json["status"] == "denied", (action, r.json)
    for action in ("recover_delayed", "cancel_recovery", "delete_account", "enroll_factor"):
        r = user.start(action)
        vid = r.json["verification_id"]
        assert all("knowledge" in o for o in r.json["options"]), (action, r.json)
        for factor in ("sms", "device", "totp"):
            answer = user.attempt(vid, factor)
            assert answer.json.get("status") != "satisfied", (action, factor, answer.json)
            assert not answer.json.get("assertion"), (action, factor)
    # No route around: erasure, factor removal, phone change and PIN enrolment all refuse the
    # phone's own assertions.
    r = http.delete("/v1/subjects/alice", json={"assertion": login}, headers=auth)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    r = http.delete("/v1/subjects/alice", headers=auth)
    assert r.status_code == 403
    assert user.remove_factor(user.device.factor_id, assertion=login).status_code == 403
    assert user.put("+8613900139000", assertion=login).status_code == 403
    r = user.enroll({"type": "knowledge", "secret": "582947", "assertion": login})
    assert r.status_code == 403
    r = user.enroll({"type": "knowledge", "secret": "582947"})
    assert r.status_code == 403
    assert statuses(user) == {"totp": "active", "device": "active", "knowledge": "active"}


def test_a_sim_change_after_the_recovery_brings_sms_back(user, ctx):
    # The thief's SIM is gone once the carrier reports a new SIM dated after the recovery.
    user.add_all_factors()
    wait = start_wait(user)
    user.advance(DELAY + 1)
    user.prove_factor(wait["vid"], "knowledge")
    assert user.start("login").json["status"] == "denied"
    user.advance(60)
    assert (
        carrier_event(user.http, _carrier(ctx), PHONE, "sim_unblocked", now_rfc3339()).status_code
        == 202
    )
    user.advance(8 * 24 * 3600)  # past login's 7-day SMS window after a SIM change
    assert user.start("login").json["options"] == [["sms"]]


def test_a_recovery_past_ready_at_reads_pending_and_cannot_be_cancelled(user):
    # API.md, Recovery: "POST .../cancel cancels a waiting verification; any other → 409
    # not_pending. A recover_delayed verification shows pending from ready_at": the person had
    # the whole delay to cancel it.
    user.add_all_factors()
    wait = start_wait(user)
    user.advance(72 * 3600 + 1)
    assert get(user, wait["vid"]).json["status"] == "pending"
    token = user.step_up("cancel_recovery", ["knowledge", "totp"])
    r = cancel(user, wait["vid"], token)
    assert r.status_code == 409 and r.json["error"] == "not_pending", r.json
