"""Recovery codes through the HTTP contract (API.md, Recovery; NIST SP 800-63B-4 look-up
secrets; ASVS 6.5.1 single use, 6.5.2 stored hashed, 6.6.3 rate limited)."""

from __future__ import annotations

import json
import logging
import re

import pytest
from sqlalchemy import select

from service.storage.tables import metadata
from tests.http.flow import verified_claims
from tests.http.recovery_flow import audit_rows, settings_with_test_actions

CODE = re.compile(r"^[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}$")


@pytest.fixture
def settings(settings, tmp_path):
    return settings_with_test_actions(settings, tmp_path)


def enrol_codes(user, assertion: str | None = None):
    body = {"type": "recovery_code"} | ({"assertion": assertion} if assertion else {})
    return user.enroll(body)


def code_set(user) -> dict:
    return next(f for f in user.factors().json["factors"] if f["type"] == "recovery_code")


def prove_code(user, code: str, action: str = "test_codes"):
    r = user.start(action)
    assert r.status_code == 201 and r.json["status"] == "pending", r.json
    return user.prove(r.json["verification_id"], {"factor": "recovery_code", "code": code})


def test_enrolment_shows_ten_codes_once_and_the_list_shows_what_remains(user):
    r = enrol_codes(user)
    assert r.status_code == 201, r.json
    body = r.json
    assert body["type"] == "recovery_code" and body["status"] == "active"
    assert body["factor_id"].startswith("fa_")
    assert len(body["codes"]) == 10 == len(set(body["codes"]))
    assert all(CODE.match(c) for c in body["codes"])
    listed = code_set(user)
    assert listed["factor_id"] == body["factor_id"] and listed["remaining"] == 10
    assert listed["status"] == "active" and "codes" not in listed
    listing = json.dumps(user.factors().json)
    assert not any(c in listing or c.replace("-", "") in listing for c in body["codes"])


def test_enrolment_has_the_same_gate_as_every_factor(user):
    # API.md: once the subject has an active non-SMS factor, adding one needs an enroll_factor
    # assertion (ASVS 6.4.4).
    user.add_totp()
    refused = enrol_codes(user)
    assert refused.status_code == 403 and refused.json["error"] == "step_up_required"
    assert enrol_codes(user, user.step_up("enroll_factor", ["totp"])).status_code == 201


def test_a_code_is_accepted_once_ever(user, http, auth):
    codes = enrol_codes(user).json["codes"]
    first = prove_code(user, codes[0])
    assert first.json["accepted"] is True and first.json["status"] == "satisfied"
    assert first.json["satisfied"] == ["recovery_code"]
    claims = verified_claims(http, auth, first.json["assertion"])
    assert claims["amr"] == ["otp"] and claims["acr"] == "aal1"  # RFC 8176: a look-up secret
    again = prove_code(user, codes[0])
    assert again.status_code == 200 and again.json["accepted"] is False
    assert again.json["status"] == "pending" and again.json.get("assertion") is None
    assert code_set(user)["remaining"] == 9


def test_codes_are_typed_case_space_and_hyphen_insensitively(user):
    codes = enrol_codes(user).json["codes"]
    lower_spaced = codes[1].lower().replace("-", " ")
    assert prove_code(user, lower_spaced).json["accepted"] is True
    assert prove_code(user, codes[2].replace("-", "")).json["accepted"] is True
    # The same code typed another way is the same code: used.
    assert prove_code(user, codes[1]).json["accepted"] is False
    assert code_set(user)["remaining"] == 8


def test_wrong_and_malformed_codes(user):
    enrol_codes(user)
    assert prove_code(user, "0000-0000-0000-0000").json["accepted"] is False
    assert prove_code(user, "not a code at all").json["accepted"] is False
    vid = user.start("test_codes").json["verification_id"]
    for body in (
        {"factor": "recovery_code"},
        {"factor": "recovery_code", "code": 12345678},
        {"factor": "recovery_code", "code": "x" * 65},
    ):
        r = user.prove(vid, body)
        assert r.status_code == 400 and r.json["error"] == "invalid_request", body
    assert code_set(user)["remaining"] == 10


def test_a_new_set_voids_the_old_one(user):
    old = enrol_codes(user).json
    # The set is a strong factor: the next one needs a step-up (here SMS while there is no PIN).
    new = enrol_codes(user, user.step_up("enroll_factor", ["sms"])).json
    assert not set(old["codes"]) & set(new["codes"])
    sets = [f for f in user.factors().json["factors"] if f["type"] == "recovery_code"]
    assert [s["factor_id"] for s in sets] == [new["factor_id"]]  # the old one is gone
    assert prove_code(user, old["codes"][0]).json["accepted"] is False
    assert prove_code(user, new["codes"][0]).json["accepted"] is True


def test_a_used_up_set_is_in_no_option(user):
    codes = enrol_codes(user).json["codes"]
    for code in codes:
        assert prove_code(user, code).json["accepted"] is True
    assert code_set(user)["remaining"] == 0
    r = user.start("test_codes")
    assert r.json["status"] == "denied" and r.json["reasons"] == ["no_eligible_factors"]


def test_a_used_up_set_leaves_the_options_it_was_in(user):
    user.add_pin()
    codes = enrol_codes(user, user.step_up("enroll_factor", ["sms", "knowledge"])).json["codes"]
    options = user.start("test_recover").json["options"]
    assert ["knowledge", "recovery_code"] in options
    for code in codes:
        assert prove_code(user, code).json["accepted"] is True
    r = user.start("test_recover")
    assert r.json["status"] == "denied", r.json  # knowledge alone completes no option


def test_codes_are_rate_limited_like_every_factor(user):
    # RFC 4226 §7.3, ASVS 6.6.3: the failed_proofs limit per subject and factor (10 per 15 min).
    codes = enrol_codes(user).json["codes"]
    for _ in range(2):  # two verifications, locked at their 5th failure each
        vid = user.start("test_codes").json["verification_id"]
        for _ in range(5):
            r = user.prove(vid, {"factor": "recovery_code", "code": "0000-0000-0000-0000"})
            assert r.status_code == 200 and r.json["accepted"] is False
        assert r.json["status"] == "locked"
    vid = user.start("test_codes").json["verification_id"]
    limited = user.prove(vid, {"factor": "recovery_code", "code": codes[0]})
    assert limited.status_code == 429 and limited.json["error"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) > 0
    assert code_set(user)["remaining"] == 10  # a refused proof spends no code


def test_no_code_in_logs_audit_or_any_table(user, ctx, caplog):
    # T4, ASVS 6.5.2: codes are shown once and kept only as keyed hashes.
    caplog.set_level(logging.DEBUG)
    codes = enrol_codes(user).json["codes"]
    prove_code(user, codes[0].lower())
    prove_code(user, codes[0])
    prove_code(user, "0000-0000-0000-0000")
    logs = "\n".join(r.getMessage() for r in caplog.records)
    dump = []
    with ctx.engine.connect() as conn:
        for table in metadata.sorted_tables:
            dump += [repr(tuple(row)) for row in conn.execute(select(table))]
    text = "\n".join(dump)
    assert "recovery_codes" in {t.name for t in metadata.sorted_tables}
    for code in codes:
        for form in (code, code.replace("-", ""), code.lower(), code.replace("-", "").lower()):
            assert form not in logs and form not in text, form
    accepted = [json.loads(r.detail) for r in audit_rows(ctx, "proof.accepted")]
    assert {"factor": "recovery_code"}.items() <= accepted[-1].items()


def test_the_last_code_still_completes_the_verification_that_spent_it(user):
    # Spending a set's last code must not close the option it was spent for: the PIN that
    # follows completes knowledge + recovery_code in the same verification.
    user.add_pin()
    codes = enrol_codes(user, user.step_up("enroll_factor", ["sms", "knowledge"])).json["codes"]
    for code in codes[:9]:
        assert prove_code(user, code).json["accepted"] is True
    vid = user.start("test_recover").json["verification_id"]
    r = user.prove(vid, {"factor": "recovery_code", "code": codes[9]})
    assert r.json["accepted"] is True and r.json["status"] == "pending"
    assert code_set(user)["remaining"] == 0
    done = user.prove_factor(vid, "knowledge")
    assert done.status_code == 200 and done.json["status"] == "satisfied", done.json
    # A new verification no longer offers the used-up set.
    assert user.start("test_recover").json["status"] == "denied"
