"""Passkeys through the HTTP contract (API.md, Passkeys; issue 22), with real WebAuthn responses
from the software authenticator in ``tests/http/authenticator.py``.

WebAuthn Level 2 §7.1/§7.2 (the relying party's checks), §6.1.1 (signature counter), RFC 8176
(``hwk``/``swk``/``user``), THREATS.md T1 (a passkey is phone-bound: never without the PIN in a
sensitive option, revoked by recovery), NIST SP 800-63B-4 (syncable passkeys at AAL2).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from service.cli import cli
from service.domain.policy import load_policy
from service.factors.registry import CATALOG
from service.settings import packaged_policy_file
from tests.http.authenticator import Authenticator, b64url, unb64url
from tests.http.flow import PHONE, PIN, User, carrier_event, now_rfc3339, verified_claims
from tests.http.recovery_flow import audit_rows, client_id_of, settings_with_test_actions

RP_ID = "loans.example"
ORIGIN = "https://loans.example"
POLICY = load_policy(packaged_policy_file(), factors=CATALOG)
SENSITIVE = sorted(name for name, rule in POLICY.actions.items() if rule.sensitive)


# NIST SP 800-63B-4: AAL3 needs a non-exportable key; a policy can ask for device-bound passkeys.
AAL3 = """
[actions.test_aal3]
description = "test: a device-bound key and the PIN"
acr = "aal3"
sensitive = true
device_bound_keys = true
options = [["passkey", "knowledge"]]
"""


@pytest.fixture
def settings(settings, tmp_path):
    return settings_with_test_actions(settings, tmp_path, AAL3)


def set_relying_party(settings, client_id: str, rp_id: str = RP_ID, *origins: str):
    """``idv clients webauthn CLIENT_ID --rp-id ... --origin ...`` as an operator runs it."""
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
        "IDV_POLICY_FILE": str(settings.policy_file),
    }
    args = ["clients", "webauthn", client_id, "--rp-id", rp_id]
    for origin in origins or (ORIGIN,):
        args += ["--origin", origin]
    return CliRunner().invoke(cli, args, env=env)


def rp(http, auth, settings) -> None:
    out = set_relying_party(settings, client_id_of(http, auth))
    assert out.exit_code == 0, out.output


def begin(user: User, body: dict | None = None):
    return user.enroll({"type": "passkey", **(body or {})})


def activate(user: User, factor_id: str, credential: dict):
    return user.http.post(
        f"/v1/subjects/{user.subject_id}/factors/{factor_id}/activate",
        json={"credential": credential},
        headers=user.auth,
    )


def add_passkey(user: User, key: Authenticator | None = None, **body) -> Authenticator:
    key = key or Authenticator(ORIGIN, RP_ID)
    r = begin(user, body)
    assert r.status_code == 201, r.json
    a = activate(user, r.json["factor_id"], key.create(r.json["options"]))
    assert a.status_code == 200 and a.json["status"] == "active", a.json
    return key


def passkey_proof(user: User, vid: str, key: Authenticator, **tamper):
    ch = user.challenge(vid, "passkey")
    assert ch.status_code == 200, ch.json
    return user.prove(
        vid, {"factor": "passkey", "credential": key.get(ch.json["options"], **tamper)}
    )


def test_a_tenant_without_a_relying_party_has_no_passkeys(user):
    r = begin(user)
    assert r.status_code == 422 and r.json["error"] == "factor_not_allowed", r.json
    assert user.start("login").json["options"] == [["sms"]]


def test_clients_webauthn_refuses_origins_off_the_rp_id(http, auth, settings):
    cid = client_id_of(http, auth)
    for rp_id, origin in (
        (RP_ID, "https://evil.example"),
        (RP_ID, "http://loans.example"),  # WebAuthn needs a secure context
        (RP_ID, "https://loans.example/login"),
        ("https://loans.example", ORIGIN),
    ):
        out = set_relying_party(settings, cid, rp_id, origin)
        assert out.exit_code != 0, (rp_id, origin, out.output)
    assert set_relying_party(settings, cid, RP_ID, "https://m.loans.example:8443").exit_code == 0


def test_registration_and_login_with_a_device_bound_passkey(user, http, auth, settings):
    rp(http, auth, settings)
    r = begin(user, {"label": "Alice's phone"})
    assert r.status_code == 201, r.json
    assert r.json["type"] == "passkey" and r.json["status"] == "pending"
    options = r.json["options"]
    assert options["rp"]["id"] == RP_ID and options["attestation"] == "none"
    assert len(unb64url(options["challenge"])) >= 16
    assert options["user"]["name"] == "Alice's phone"
    # WebAuthn §14.6.1: user.id is a random handle, never the subject id.
    assert user.subject_id.encode() not in unb64url(options["user"]["id"])
    key = Authenticator(ORIGIN, RP_ID)
    assert activate(user, r.json["factor_id"], key.create(options)).json["status"] == "active"
    listed = {f["type"]: f["status"] for f in user.factors().json["factors"]}
    assert listed["passkey"] == "active"

    start = user.start("login").json
    assert ["passkey"] in start["options"], start
    ch = user.challenge(start["verification_id"], "passkey").json
    assert ch["factor"] == "passkey" and ch["expires_at"]
    assert ch["options"]["rpId"] == RP_ID
    assert [c["id"] for c in ch["options"]["allowCredentials"]] == [b64url(key.credential_id)]
    assert ch["options"]["userVerification"] == "preferred"  # login is not sensitive
    proof = user.prove(
        start["verification_id"], {"factor": "passkey", "credential": key.get(ch["options"])}
    )
    assert proof.status_code == 200 and proof.json["accepted"], proof.json
    assert proof.json["status"] == "satisfied" and proof.json["satisfied"] == ["passkey"]
    claims = verified_claims(http, auth, proof.json["assertion"])
    # RFC 8176: hwk for a credential that is not backup-eligible, user after UV.
    assert claims["amr"] == ["hwk", "user"] and claims["acr"] == "aal1"


def test_a_synced_passkey_is_swk_and_the_handle_stays_the_subjects(user, http, auth, settings):
    rp(http, auth, settings)
    first = add_passkey(user)
    start = user.start("enroll_factor").json
    assert ["passkey"] in start["options"], start  # onboarding: one phone factor adds another
    proof = passkey_proof(user, start["verification_id"], first)
    assert proof.json["status"] == "satisfied", proof.json
    synced = Authenticator(ORIGIN, RP_ID, synced=True, counter=False)
    r = begin(user, {"assertion": proof.json["assertion"]})
    assert r.status_code == 201, r.json
    assert r.json["options"]["user"]["id"] == first.user_handle  # one handle per subject
    excluded = [c["id"] for c in r.json["options"]["excludeCredentials"]]
    assert excluded == [b64url(first.credential_id)]
    assert activate(user, r.json["factor_id"], synced.create(r.json["options"])).status_code == 200
    login = user.start("login").json["verification_id"]
    done = passkey_proof(user, login, synced)
    assert done.json["accepted"], done.json
    assert verified_claims(http, auth, done.json["assertion"])["amr"] == ["swk", "user"]
    # A counter-less authenticator (always 0) is no clone: it may be used again.
    again = passkey_proof(user, user.start("login").json["verification_id"], synced)
    assert again.json["accepted"], again.json


def test_registration_from_a_wrong_origin_or_rp_id_or_challenge_is_refused(
    user, http, auth, settings
):
    rp(http, auth, settings)
    for tamper in (
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
    ):
        r = begin(user)
        bad = Authenticator(ORIGIN, RP_ID).create(r.json["options"], **tamper)
        got = activate(user, r.json["factor_id"], bad)
        assert got.status_code == 422 and got.json["error"] == "invalid_code", (tamper, got.json)
    # A response to another registration's challenge does not activate this one.
    one, two = begin(user), begin(user)
    crossed = Authenticator(ORIGIN, RP_ID).create(one.json["options"])
    got = activate(user, two.json["factor_id"], crossed)
    assert got.status_code == 422 and got.json["error"] == "invalid_code", got.json
    # And the newer set-up voided the older one, never finished (one pending registration).
    gone = activate(user, one.json["factor_id"], crossed)
    assert gone.status_code == 404, gone.json


def test_a_registration_is_used_once(user, http, auth, settings):
    rp(http, auth, settings)
    r = begin(user)
    credential = Authenticator(ORIGIN, RP_ID).create(r.json["options"])
    assert activate(user, r.json["factor_id"], credential).status_code == 200
    again = activate(user, r.json["factor_id"], credential)
    assert again.status_code == 400 and again.json["error"] == "invalid_request", again.json


def test_a_registration_expires_after_five_minutes(user, http, auth, settings):
    rp(http, auth, settings)
    r = begin(user)
    user.advance(301)
    got = activate(
        user, r.json["factor_id"], Authenticator(ORIGIN, RP_ID).create(r.json["options"])
    )
    assert got.status_code == 422 and got.json["error"] == "invalid_code", got.json


def test_wrong_origin_rp_id_signature_or_challenge_is_not_accepted(user, http, auth, settings):
    rp(http, auth, settings)
    key = add_passkey(user)
    vid = user.start("login").json["verification_id"]
    for tamper in (
        {"origin": "https://evil.example"},
        {"rp_id": "evil.example"},
        {"challenge": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"},
    ):
        got = passkey_proof(user, vid, key, **tamper)
        assert got.status_code == 200 and got.json["accepted"] is False, (tamper, got.json)
    ch = user.challenge(vid, "passkey").json["options"]
    forged = key.get(ch)
    forged["response"]["signature"] = Authenticator(ORIGIN, RP_ID).get(ch)["response"]["signature"]
    got = user.prove(vid, {"factor": "passkey", "credential": forged})
    assert got.json["accepted"] is False and got.json["attempts_left"] == 1, got.json


def test_a_replayed_challenge_is_not_accepted(user, http, auth, settings):
    rp(http, auth, settings)
    key = add_passkey(user)
    first = user.start("login").json["verification_id"]
    ch = user.challenge(first, "passkey").json["options"]
    response = key.get(ch)
    assert user.prove(first, {"factor": "passkey", "credential": response}).json["accepted"]
    # The same response against a new verification: its challenge was never issued there.
    second = user.start("login").json["verification_id"]
    assert user.challenge(second, "passkey").status_code == 200
    replayed = user.prove(second, {"factor": "passkey", "credential": response})
    assert replayed.status_code == 200 and replayed.json["accepted"] is False, replayed.json
    # Nor without any challenge issued for the verification at all.
    third = user.start("login").json["verification_id"]
    bare = user.prove(third, {"factor": "passkey", "credential": response})
    assert bare.status_code == 200 and bare.json["accepted"] is False, bare.json


def test_a_cloned_authenticator_is_refused_and_audited(user, http, auth, settings, ctx):
    rp(http, auth, settings)
    key = add_passkey(user)
    assert passkey_proof(user, user.start("login").json["verification_id"], key).json["accepted"]
    seen = key.sign_count
    # WebAuthn §6.1.1: the clone signs with the same key but its counter does not grow.
    clone = passkey_proof(user, user.start("login").json["verification_id"], key, sign_count=seen)
    assert clone.status_code == 200 and clone.json["accepted"] is False, clone.json
    alarms = audit_rows(ctx, "passkey.clone_suspected")
    assert len(alarms) == 1, alarms
    assert json.loads(alarms[0].detail)["sign_count"] == seen
    # The real authenticator, counting on, still works.
    assert passkey_proof(user, user.start("login").json["verification_id"], key).json["accepted"]


def test_sensitive_actions_require_user_verification(user, http, auth, settings):
    rp(http, auth, settings)
    key = add_passkey(user)
    user.add_pin(assertion=_enroll_assertion(user, key))
    vid = user.start("view_personal_data").json["verification_id"]
    ch = user.challenge(vid, "passkey").json["options"]
    assert ch["userVerification"] == "required"
    unverified = user.prove(vid, {"factor": "passkey", "credential": key.get(ch, uv=False)})
    assert unverified.json["accepted"] is False, unverified.json
    assert passkey_proof(user, vid, key).json["accepted"]
    done = user.prove(vid, {"factor": "knowledge", "secret": PIN})
    assert done.json["status"] == "satisfied", done.json
    claims = verified_claims(http, auth, done.json["assertion"])
    assert claims["amr"] == ["hwk", "pin", "user", "mfa"] and claims["acr"] == "aal2"


def _enroll_assertion(user: User, key: Authenticator) -> str:
    vid = user.start("enroll_factor").json["verification_id"]
    proof = passkey_proof(user, vid, key)
    assert proof.json["status"] == "satisfied", proof.json
    return proof.json["assertion"]


def test_a_passkey_never_completes_a_sensitive_option_without_the_pin(user, http, auth, settings):
    # T1: the thief holds the unlocked phone: SMS, TOTP app, device key and its passkeys.
    rp(http, auth, settings)
    key = add_passkey(user)
    user.add_totp(assertion=_enroll_assertion(user, key))
    user.add_device(assertion=_enroll_assertion(user, key))
    user.add_pin(assertion=_enroll_assertion(user, key))
    for action in SENSITIVE:
        options = [set(o) for o in user.start(action).json["options"]]
        for option in options:
            # Never made of the phone's factors alone (recover and the like offer no passkey).
            assert not option <= CATALOG.phone_bound, (action, option)
        if {"device", "knowledge"} in options:  # offered wherever the device key is
            assert {"passkey", "knowledge"} in options, (action, options)
    vid = user.start("view_personal_data").json["verification_id"]
    for factor in ("sms", "totp", "device"):
        user.prove_factor(vid, factor)
    got = passkey_proof(user, vid, key)
    assert got.json["status"] == "pending" and got.json["assertion"] is None, got.json


def test_recovery_revokes_passkeys_and_cancel_recovery_offers_one_with_the_pin(
    user, http, auth, settings
):
    rp(http, auth, settings)
    key = add_passkey(user)
    user.add_pin(assertion=_enroll_assertion(user, key))
    cancel = user.start("cancel_recovery").json
    assert ["knowledge", "passkey"] in cancel["options"], cancel
    codes = user.enroll(
        {"type": "recovery_code", "assertion": user.step_up("enroll_factor", ["sms", "knowledge"])}
    ).json["codes"]
    vid = user.start("recover").json["verification_id"]
    user.prove(vid, {"factor": "knowledge", "secret": PIN})
    done = user.prove(vid, {"factor": "recovery_code", "code": codes[0]})
    assert done.json["status"] == "satisfied", done.json
    listed = [f for f in user.factors().json["factors"] if f["type"] == "passkey"]
    assert all(f["status"] == "revoked" for f in listed), listed
    # The phone's factors are gone (SMS suspended too): the thief's phone logs in no more.
    login = user.start("login").json
    assert login["status"] == "denied" and login["options"] == [], login
    refused = user.challenge(login["verification_id"], "passkey")
    assert refused.status_code == 409, refused.json


def test_a_sim_change_holds_passkey_options_like_the_device_key(
    user, http, auth, settings, carrier_auth
):
    # T1: the thief's new SIM sits in the stolen phone, beside its passkeys. A hold after a SIM
    # change keeps only options with no phone-bound factor, so passkey+PIN is held too.
    rp(http, auth, settings)
    key = add_passkey(user)
    user.add_pin(assertion=_enroll_assertion(user, key))
    before = user.start("password_reset").json
    assert before["status"] == "pending" and ["passkey", "knowledge"] in before["options"]
    assert carrier_event(http, carrier_auth, PHONE, "sim_swap", now_rfc3339(-60)).status_code == 202
    held = user.start("password_reset").json
    assert held["status"] == "denied" and held["reasons"] == ["recent_sim_change"], held


def test_recover_delayed_suspends_passkeys_at_once(user, http, auth, settings):
    rp(http, auth, settings)
    key = add_passkey(user)
    user.add_pin(assertion=_enroll_assertion(user, key))
    vid = user.start("recover_delayed").json["verification_id"]
    assert user.prove(vid, {"factor": "knowledge", "secret": PIN}).json["status"] == "waiting"
    listed = {f["type"]: f["status"] for f in user.factors().json["factors"]}
    assert listed["passkey"] == "suspended", listed
    assert user.start("login").json["options"] == []  # the thief's phone logs in no more


def test_an_action_can_ask_for_a_device_bound_passkey(user, http, auth, settings):
    rp(http, auth, settings)
    bound = add_passkey(user)
    user.add_pin(assertion=_enroll_assertion(user, bound))
    synced = Authenticator(ORIGIN, RP_ID, synced=True)
    add_passkey(user, synced, assertion=user.step_up_first("enroll_factor"))
    vid = user.start("test_aal3").json["verification_id"]
    ch = user.challenge(vid, "passkey").json["options"]
    assert [c["id"] for c in ch["allowCredentials"]] == [b64url(bound.credential_id)]
    refused = user.prove(vid, {"factor": "passkey", "credential": synced.get(ch)})
    assert refused.json["accepted"] is False, refused.json
    assert passkey_proof(user, vid, bound).json["accepted"]
    done = user.prove(vid, {"factor": "knowledge", "secret": PIN})
    claims = verified_claims(http, auth, done.json["assertion"])
    assert claims["acr"] == "aal3" and "hwk" in claims["amr"] and "swk" not in claims["amr"]


def test_the_openapi_document_describes_the_passkey_fields(http):
    schemas = http.get("/openapi.json").json["components"]["schemas"]
    assert "passkey" in schemas["EnrollFactor"]["properties"]["type"]["enum"]
    for model, name in (
        ("EnrolledFactor", "options"),
        ("ActivateFactor", "credential"),
        ("Challenge", "options"),
        ("Proof", "credential"),
    ):
        assert name in schemas[model]["properties"], (model, name)


def test_malformed_credentials_are_refused_never_a_500(user, http, auth, settings):
    rp(http, auth, settings)
    key = add_passkey(user)
    vid = user.start("login").json["verification_id"]
    ch = user.challenge(vid, "passkey").json["options"]
    good = key.get(ch)
    junk = [
        {"response": "x"},
        {"id": good["id"], "rawId": good["rawId"], "response": "x"},
        {**good, "response": {**good["response"], "userHandle": 7}},
        {**good, "response": {**good["response"], "signature": "%%%"}},
    ]  # four: the fifth failure would lock the verification
    for credential in junk:
        got = user.prove(vid, {"factor": "passkey", "credential": credential})
        assert got.status_code == 200 and got.json["accepted"] is False, (credential, got.json)
    r = begin(user, {"assertion": user.step_up("enroll_factor", ["sms"])})
    for credential in ({"response": "x"}, {"id": "a", "rawId": "b", "response": {}}):
        got = activate(user, r.json["factor_id"], credential)
        assert got.status_code == 422 and got.json["error"] == "invalid_code", got.json
    empty = user.prove(vid, {"factor": "passkey", "credential": {}})
    assert empty.status_code == 400 and empty.json["error"] == "invalid_request"
