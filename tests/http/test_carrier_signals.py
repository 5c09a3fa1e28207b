"""Carrier signals through HTTP (API.md "Carrier signals"; THREATS.md T1, T2).

``POST /v1/carrier-events`` (scope ``carrier``) records SIM swaps, lost and unblocked SIMs and
recycled numbers, globally across tenants; ``POST /v1/verifications`` then shows what each
signal takes away, for exactly the window the policy gives it (checked one minute inside and
one minute outside every window, on the shared time-machine clock).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.http.flow import PHONE, PIN, User, carrier_event, now_rfc3339

OTHER_PHONE = "+8613900139000"
MINUTE, HOUR, DAY = 60, 3600, 86400


def signal(http, carrier_auth, kind: str, phone: str = PHONE, offset: float = 0) -> float:
    """Post ``kind`` for ``phone`` dated now (+``offset`` s); return its time as a timestamp."""
    at = now_rfc3339(offset)
    r = carrier_event(http, carrier_auth, phone, kind, at)
    assert r.status_code == 202 and r.json["recorded"] is True, r.json
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def at(user: User, moment: float) -> None:
    """Move the shared clock to ``moment`` (a Unix timestamp)."""
    user.advance(moment - time.time())


def normal(options):
    return sorted(sorted(option) for option in options)


def give(user: User, *kinds: str) -> None:
    if "totp" in kinds:
        user.add_totp()
    if "knowledge" in kinds:
        user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]) if "totp" in kinds else None)


# -- the endpoint ---------------------------------------------------------------------------------
def test_needs_carrier_scope(http, auth, carrier_auth):
    # API.md: carrier events need scope `carrier`; a verify-scoped key is 403 forbidden.
    body = {"phone": PHONE, "type": "sim_swap", "occurred_at": now_rfc3339()}
    r = http.post("/v1/carrier-events", json=body, headers=auth)
    assert r.status_code == 403 and r.json["error"] == "forbidden"
    r = http.post("/v1/carrier-events", json=body)
    assert r.status_code == 401 and r.json["error"] == "unauthorized"
    r = http.post("/v1/carrier-events", json=body, headers=carrier_auth)
    assert r.status_code == 202 and r.json["recorded"] is True
    # ... and a carrier key cannot drive verifications.
    r = http.post(
        "/v1/verifications", json={"subject_id": "alice", "action": "login"}, headers=carrier_auth
    )
    assert r.status_code == 403 and r.json["error"] == "forbidden"


def test_same_event_twice_records_once(user, http, carrier_auth):
    # API.md: the same event (same phone, type and occurred_at) twice records it once.
    give(user, "totp")
    occurred = now_rfc3339(-MINUTE)
    r1 = carrier_event(http, carrier_auth, PHONE, "sim_swap", occurred)
    assert r1.status_code == 202 and r1.json["recorded"] is True
    first = user.start("login").json
    r2 = carrier_event(http, carrier_auth, PHONE, "sim_swap", occurred)
    assert r2.status_code == 202 and r2.json["recorded"] is False
    second = user.start("login").json
    assert (first["status"], first["options"], first["reasons"]) == (
        second["status"],
        second["options"],
        second["reasons"],
    )
    assert second["options"] == [["totp"]] and second["reasons"] == ["recent_sim_change"]


def test_same_instant_in_another_offset_is_the_same_event(http, carrier_auth):
    # API.md: "Times are compared as timestamps".
    r = carrier_event(http, carrier_auth, PHONE, "sim_lost", "2025-03-01T10:00:00Z")
    assert r.status_code == 202 and r.json["recorded"] is True
    r = carrier_event(http, carrier_auth, PHONE, "sim_lost", "2025-03-01T18:00:00+08:00")
    assert r.status_code == 202 and r.json["recorded"] is False
    # Another type, or another instant, is another event.
    r = carrier_event(http, carrier_auth, PHONE, "sim_swap", "2025-03-01T10:00:00Z")
    assert r.json["recorded"] is True
    r = carrier_event(http, carrier_auth, PHONE, "sim_lost", "2025-03-01T10:00:01Z")
    assert r.json["recorded"] is True


def test_occurred_at_in_the_future(http, carrier_auth, clock):
    # API.md: occurred_at more than a few minutes in the future → 400 (the service allows 5).
    r = carrier_event(http, carrier_auth, PHONE, "sim_swap", now_rfc3339(5 * MINUTE + 30))
    assert r.status_code == 400 and r.json["error"] == "invalid_request"
    r = carrier_event(http, carrier_auth, PHONE, "sim_swap", now_rfc3339(DAY))
    assert r.status_code == 400 and r.json["error"] == "invalid_request"
    r = carrier_event(http, carrier_auth, PHONE, "sim_swap", now_rfc3339(4 * MINUTE))
    assert r.status_code == 202  # small clock skew is tolerated


GOOD = {"phone": PHONE, "type": "sim_swap", "occurred_at": "2025-03-01T10:00:00Z"}
MALFORMED = [
    # phone: API.md "Phone numbers are E.164; anything else is a 400".
    ("phone", "13800138000"),
    ("phone", "+86 138 0013 8000"),
    ("phone", "+86-13800138000"),
    ("phone", "008613800138000"),
    ("phone", "+８６１３８００１３８０００"),  # full-width digits
    ("phone", "+8613800138000\n"),
    ("phone", "+861"),
    ("phone", ""),
    ("phone", 8613800138000),
    ("phone", None),
    # type
    ("type", "sim_stolen"),
    ("type", "SIM_SWAP"),
    ("type", ""),
    ("type", None),
    ("type", 1),
    # occurred_at: RFC 3339 with an offset, nothing else.
    ("occurred_at", "2025-03-01T10:00:00"),  # naive
    ("occurred_at", "2025-03-01T10:00:00.123456"),  # naive, with fraction
    ("occurred_at", "2025-03-01 10:00:00"),  # naive, space
    ("occurred_at", "2025-03-01"),
    ("occurred_at", "10:00:00Z"),
    ("occurred_at", "yesterday"),
    ("occurred_at", "Sat, 01 Mar 2025 10:00:00 GMT"),  # RFC 2822
    ("occurred_at", "2025-13-01T10:00:00Z"),
    ("occurred_at", "2025-02-30T10:00:00Z"),
    ("occurred_at", "2025-03-01T24:00:00Z"),
    ("occurred_at", "20250301T100000Z"),  # ISO 8601 basic
    ("occurred_at", "2025-03-01T10:00:00+24:00"),  # offset out of range
    ("occurred_at", "9999-12-31T23:59:59-23:59"),  # beyond datetime's range once in UTC
    ("occurred_at", "0001-01-01T00:00:00+23:59"),
    # ISO 8601 forms that RFC 3339 §5.6 does not allow (datetime.fromisoformat takes them).
    ("occurred_at", "2025-W09-6T10:00:00Z"),  # week date
    ("occurred_at", "2025-03-01T10:00:00+0800"),  # offset without colon
    ("occurred_at", "2025-03-01T10:00:00+08"),  # hour-only offset
    ("occurred_at", "2025-03-01T10:00:00.Z"),  # empty fraction
    ("occurred_at", "2025-03-01T10:00:00,5Z"),  # comma fraction
    ("occurred_at", "2025-03-01T10:00:00 +08:00"),  # space before the offset
    ("occurred_at", ""),
    ("occurred_at", 1740823200),  # a Unix time is not RFC 3339
    ("occurred_at", None),
]


@pytest.mark.parametrize(("field", "value"), MALFORMED, ids=[f"{f}={v!r}" for f, v in MALFORMED])
def test_malformed_event_is_400(http, carrier_auth, field, value):
    r = http.post("/v1/carrier-events", json={**GOOD, field: value}, headers=carrier_auth)
    assert r.status_code == 400 and r.json["error"] == "invalid_request", r.json


@pytest.mark.parametrize("missing", ["phone", "type", "occurred_at"])
def test_missing_field_is_400(http, carrier_auth, missing):
    body = {k: v for k, v in GOOD.items() if k != missing}
    r = http.post("/v1/carrier-events", json=body, headers=carrier_auth)
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_events_are_global_across_tenants(user, http, other_auth, carrier_auth):
    # API.md: carrier events apply to every tenant's subject with that phone number.
    other = User(http, other_auth, subject_id="carol", sms_file=user.sms_file, clock=user.clock)
    assert other.put(PHONE).status_code == 201
    bystander = User(http, other_auth, subject_id="dave", clock=user.clock)
    assert bystander.put(OTHER_PHONE).status_code == 201
    signal(http, carrier_auth, "sim_swap")
    for subject in (user, other):
        v = subject.start("login").json
        assert v["status"] == "denied", v
        assert "recent_sim_change" in v["reasons"] and "no_eligible_factors" in v["reasons"]
    assert bystander.start("login").json["options"] == [["sms"]]


# -- SIM swap windows -----------------------------------------------------------------------------
# (action, policy window in seconds, factors besides the phone, options inside, options after)
SIM_SWAP_ROWS = [
    # login: sms_blocked_after_sim_change = "7d" (T1 step 2, NIST SP 800-63B-4 SIM-change check)
    ("login", 7 * DAY, ("totp",), [["totp"]], [["sms"], ["totp"]]),
    ("login", 7 * DAY, (), None, [["sms"]]),
    # view_personal_data: sms_blocked_after_sim_change = "30d"
    (
        "view_personal_data",
        30 * DAY,
        ("totp", "knowledge"),
        [["totp", "knowledge"]],
        [["totp", "knowledge"], ["sms", "knowledge"]],
    ),
    ("view_personal_data", 30 * DAY, ("knowledge",), None, [["sms", "knowledge"]]),
    # enroll_factor: sms_blocked_after_sim_change = "30d" (sms+knowledge loses SMS; the no-PIN
    # bootstrap holds only in the first 24 h since issue 19, so it is not a 30-day row)
    (
        "enroll_factor",
        30 * DAY,
        ("totp", "knowledge"),
        [["totp", "knowledge"]],
        [["totp", "knowledge"], ["sms", "knowledge"]],
    ),
    # password_reset: hold_after_sim_change = "72h" (T1 steps 3, 5)
    ("password_reset", 72 * HOUR, ("totp", "knowledge"), None, [["totp", "knowledge"]]),
    # payment_password_reset, loan_application: hold_after_sim_change = "7d" (T1 step 5)
    ("payment_password_reset", 7 * DAY, ("totp", "knowledge"), None, [["totp", "knowledge"]]),
    ("loan_application", 7 * DAY, ("totp", "knowledge"), None, [["totp", "knowledge"]]),
]


@pytest.mark.parametrize(
    ("action", "window", "kinds", "inside", "after"),
    SIM_SWAP_ROWS,
    ids=[f"{r[0]}-{'+'.join(('phone', *r[2]))}" for r in SIM_SWAP_ROWS],
)
def test_sim_swap_window(user, http, carrier_auth, action, window, kinds, inside, after):
    give(user, *kinds)
    swapped = signal(http, carrier_auth, "sim_swap")

    def check_inside() -> None:
        v = user.start(action).json
        assert "recent_sim_change" in v["reasons"], v
        if inside is None:
            assert v["status"] == "denied" and v["options"] == [], v
        else:
            assert v["status"] == "pending" and normal(v["options"]) == normal(inside), v
            if "sms" not in {f for o in v["options"] for f in o}:
                r = user.challenge(v["verification_id"], "sms")
                assert r.status_code == 422 and r.json["error"] == "factor_not_allowed"

    check_inside()
    at(user, swapped + window - MINUTE)  # just inside
    check_inside()
    at(user, swapped + window + MINUTE)  # just outside
    v = user.start(action).json
    assert v["status"] == "pending" and normal(v["options"]) == normal(after), v
    assert v["reasons"] == [], v


# -- lost and unblocked SIMs ----------------------------------------------------------------------
def test_sim_lost_until_unblocked_then_windows_start_from_the_unblock(user, http, carrier_auth):
    # T1 step 4: a SIM reported lost takes SMS away (and holds resets) until it is unblocked;
    # the unblock is itself a SIM change.
    give(user, "totp", "knowledge")
    signal(http, carrier_auth, "sim_lost", offset=-HOUR)
    for _ in range(2):
        v = user.start("login").json
        assert v["options"] == [["totp"]] and "sim_lost" in v["reasons"], v
        v = user.start("view_personal_data").json
        assert v["options"] == [["totp", "knowledge"]] and "sim_lost" in v["reasons"], v
        v = user.start("password_reset").json
        assert v["status"] == "denied" and "sim_lost" in v["reasons"], v
        user.advance(40 * DAY)  # no window ends a loss: only an unblock does
    # An unblock dated before the loss does not end it.
    r = carrier_event(http, carrier_auth, PHONE, "sim_unblocked", "2020-01-01T00:00:00Z")
    assert r.status_code == 202
    assert "sim_lost" in user.start("login").json["reasons"]
    unblocked = signal(http, carrier_auth, "sim_unblocked")
    v = user.start("login").json
    assert v["options"] == [["totp"]] and v["reasons"] == ["recent_sim_change"], v
    v = user.start("password_reset").json
    assert v["status"] == "denied" and v["reasons"] == ["recent_sim_change"], v
    at(user, unblocked + 72 * HOUR + MINUTE)  # password_reset hold (72 h) is over
    assert user.start("password_reset").json["status"] == "pending"
    at(user, unblocked + 7 * DAY - MINUTE)
    assert user.start("login").json["reasons"] == ["recent_sim_change"]
    at(user, unblocked + 7 * DAY + MINUTE)  # login's 7 d SMS block is over
    v = user.start("login").json
    assert normal(v["options"]) == [["sms"], ["totp"]] and v["reasons"] == [], v
    v = user.start("view_personal_data").json  # 30 d for personal data, still running
    assert v["options"] == [["totp", "knowledge"]] and v["reasons"] == ["recent_sim_change"]


# -- recycled numbers (T2) ------------------------------------------------------------------------
def test_number_recycled_after_phone_set_voids_phone_only_subject(user, http, carrier_auth):
    # T2: "A subject with nothing but a phone gets denied with a reason the caller can act on".
    user.advance(MINUTE)
    signal(http, carrier_auth, "number_recycled")
    for action in ("login", "enroll_factor"):
        v = user.start(action).json
        assert v["status"] == "denied" and v["options"] == [], v
        assert "number_recycled" in v["reasons"] and "no_eligible_factors" in v["reasons"], v
    # A PUT with the same phone changes nothing (API.md), so the phone stays void.
    assert user.put(PHONE).status_code == 200
    assert user.start("login").json["status"] == "denied"


def test_number_recycled_before_phone_set_has_no_effect(user, http, carrier_auth):
    # API.md: recycled voids the phone only "when it occurred after that phone was set".
    signal(http, carrier_auth, "number_recycled", offset=-HOUR)
    v = user.start("login").json
    assert v["status"] == "pending" and v["options"] == [["sms"]] and v["reasons"] == [], v
    user.step_up("login", ["sms"])


def test_setting_the_phone_again_ends_a_recycled_event(user, http, carrier_auth):
    user.advance(MINUTE)
    signal(http, carrier_auth, "number_recycled")
    user.advance(MINUTE)
    # Phone-only subject: no strong factor, so no change_phone assertion is needed.
    r = user.put(OTHER_PHONE)
    assert r.status_code == 200 and r.json["phone"] == "+86 139****9000"
    vid = user.start("login").json["verification_id"]
    assert user.challenge(vid, "sms").json["sent_to"] == "+86 139****9000"
    # Set back to the first number later: the event predates this setting of it.
    user.advance(MINUTE)
    assert user.put(PHONE).status_code == 200
    v = user.start("login").json
    assert v["options"] == [["sms"]] and v["reasons"] == [], v
    user.step_up("login", ["sms"])
    assert user.sms_messages()[-1]["to"] == PHONE


def test_subject_with_strong_factors_re_proves_to_set_a_new_phone(user, http, carrier_auth):
    # T2: the phone is void "until the subject re-proves with another factor".
    give(user, "totp", "knowledge")
    user.advance(MINUTE)
    signal(http, carrier_auth, "number_recycled")
    v = user.start("login").json
    assert v["options"] == [["totp"]] and v["reasons"] == ["number_recycled"], v
    v = user.start("view_personal_data").json
    assert v["options"] == [["totp", "knowledge"]] and "number_recycled" in v["reasons"], v
    r = user.put(OTHER_PHONE)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    token = user.step_up("change_phone", ["totp", "knowledge"])
    assert user.put(OTHER_PHONE, assertion=token).status_code == 200
    v = user.start("login").json
    assert normal(v["options"]) == [["sms"], ["totp"]] and v["reasons"] == [], v


def test_t2_recycled_number_story(user, http, auth, other_auth, carrier_auth):
    # T2 end to end: alice (phone P, TOTP) at tenant A; the number is recycled and issued to
    # bob, who registers P at tenant B. Alice's SMS is void; bob is unaffected; bob's codes
    # never open alice's account.
    give(user, "totp")
    user.advance(30 * DAY)
    recycled = signal(http, carrier_auth, "number_recycled", offset=-DAY)
    bob = User(http, other_auth, subject_id="bob", sms_file=user.sms_file, clock=user.clock)
    assert bob.put(PHONE).status_code == 201
    assert recycled < time.time()

    v = user.start("login").json
    assert v["options"] == [["totp"]] and v["reasons"] == ["number_recycled"], v
    r = user.challenge(v["verification_id"], "sms")
    assert r.status_code == 422 and r.json["error"] == "factor_not_allowed"
    v = bob.start("login").json
    assert v["status"] == "pending" and v["options"] == [["sms"]] and v["reasons"] == [], v
    bob.step_up("login", ["sms"])
    assert bob.sms_messages()[-1]["to"] == PHONE
    # Tenant B cannot touch tenant A's verification (API.md tenancy).
    assert http.get(f"/v1/verifications/{v['verification_id']}", headers=auth).status_code == 404
    # The real alice still logs in with her TOTP.
    user.step_up("login", ["totp"])

    # A late report: the carrier sends another recycling (dated before bob registered) after
    # bob registered; bob is still unaffected, alice still void.
    late = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    user.advance(MINUTE)
    assert carrier_event(http, carrier_auth, PHONE, "number_recycled", late).status_code == 202
    assert bob.start("login").json["reasons"] == []
    assert user.start("login").json["reasons"] == ["number_recycled"]


# -- signals that arrive while a verification is pending ------------------------------------------
MID_FLIGHT = [
    # (signal, action, factors besides the phone, the proofs the attacker then completes)
    ("sim_swap", "login", (), ["sms"]),  # T1: SIM swap fraud; NIST SP 800-63B-4 SIM check
    ("sim_lost", "login", ("totp",), ["sms"]),  # T1 step 4: the victim reports the SIM lost
    ("number_recycled", "login", ("totp",), ["sms"]),  # T2
    ("sim_swap", "password_reset", ("totp", "knowledge"), ["totp", "knowledge"]),  # hold 72 h
]


@pytest.mark.parametrize(
    ("kind", "action", "kinds", "proofs"), MID_FLIGHT, ids=[f"{r[0]}-{r[1]}" for r in MID_FLIGHT]
)
def test_signal_recorded_mid_verification_applies(
    user, http, carrier_auth, kind, action, kinds, proofs
):
    # THREATS.md T1: "after [a SIM event], SMS codes to that number are worthless" - also for a
    # verification that was started a moment before the carrier's event reached idv.
    give(user, *kinds)
    user.advance(MINUTE)
    v = user.start(action).json
    assert v["status"] == "pending" and v["reasons"] == [], v
    signal(http, carrier_auth, kind)
    assertion = None
    for factor in proofs:
        if factor == "sms":
            ch = user.challenge(v["verification_id"], "sms")
            if ch.status_code != 200:
                break  # refused: what we want
        r = user.prove(
            v["verification_id"],
            {"factor": "sms", "code": user.last_sms_code()}
            if factor == "sms"
            else {"factor": "knowledge", "secret": PIN}
            if factor == "knowledge"
            else {"factor": "totp", "code": user.totp_code()},
        )
        if factor == "totp":
            user.advance(30)
        if r.status_code != 200:
            break
        assertion = r.json.get("assertion") or assertion
    assert assertion is None
    # The verification itself now says why (a caller polling it sees the signal).
    got = http.get(f"/v1/verifications/{v['verification_id']}", headers=user.auth).json
    if action != "login" or not kinds:  # held, or nothing left but the phone: denied
        assert got["status"] == "denied" and got["reasons"], got
    else:  # a login keeps its TOTP option, and SMS is gone from it
        assert got["status"] == "pending" and got["options"] == [["totp"]], got
