"""``attempts_left`` on every proof answer (API.md "Step-up verification", issue 21): failed
proofs that remain before the verification locks, so an app can say "2 tries left"."""

from __future__ import annotations

from tests.http.flow import PIN

LIMIT = 5  # the default policy's failure_limit


def test_counts_down_to_zero_at_the_lock(user):
    vid = user.start("login").json["verification_id"]
    assert user.challenge(vid, "sms").status_code == 200
    seen = []
    for _ in range(LIMIT):
        r = user.prove(vid, {"factor": "sms", "code": "000000"})
        assert r.status_code == 200 and r.json["accepted"] is False
        seen.append((r.json["attempts_left"], r.json["status"]))
    # NIST SP 800-63B-4 throttling: the 5th failure locks, and then none remain.
    assert seen == [(4, "pending"), (3, "pending"), (2, "pending"), (1, "pending"), (0, "locked")]


def test_an_accepted_proof_reports_what_the_failures_left(user):
    user.add_totp()
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    vid = user.start("password_reset").json["verification_id"]
    wrong = user.prove(vid, {"factor": "knowledge", "secret": "000000-not-it"})
    assert wrong.json["accepted"] is False and wrong.json["attempts_left"] == LIMIT - 1
    wrong = user.prove(vid, {"factor": "totp", "code": user.totp_code(offset=-300)})
    assert wrong.json["accepted"] is False and wrong.json["attempts_left"] == LIMIT - 2
    # An accepted proof does not give failures back, and spends no attempt either.
    ok = user.prove(vid, {"factor": "knowledge", "secret": PIN})
    assert ok.json["accepted"] is True and ok.json["status"] == "pending"
    assert ok.json["attempts_left"] == LIMIT - 2
    done = user.prove_factor(vid, "totp")
    assert done.json["status"] == "satisfied" and done.json["attempts_left"] == LIMIT - 2


def test_first_proof_has_the_whole_budget_and_openapi_says_so(user, http):
    vid = user.start("login").json["verification_id"]
    r = user.prove_factor(vid, "sms")
    assert r.json["status"] == "satisfied" and r.json["attempts_left"] == LIMIT
    schema = http.get("/openapi.json").json["components"]["schemas"]["ProofResult"]
    assert "attempts_left" in schema["required"]
