"""The account-lifecycle stories of API.md "Recovery", end to end through HTTP.

THREATS.md T1: alice's unlocked phone is stolen. The thief holds the SIM (SMS codes), the device
key and the TOTP app; alice keeps what did not travel with the phone: her PIN, a printed sheet of
recovery codes, her own face in front of the tenant. Each test is one story of the issue's "Done
when": the victim gets back in at once with what she holds, the thief's factors stop working in
the same second, and the thief with everything on the phone gets none of it.
"""

from __future__ import annotations

import time
import uuid

import jwt
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from service.cli import cli
from tests.http.flow import PHONE, PIN, carrier_event, now_rfc3339

HOUR = 3600
DAY = 24 * HOUR
NEW_PIN = "582046"
MONEY = ("payment_password_reset", "loan_application")


@pytest.fixture
def victim(user):
    """alice, established (past onboarding), with TOTP, PIN, device and recovery codes."""
    user.add_all_factors()
    r = user.enroll(
        {
            "type": "recovery_code",
            "assertion": user.step_up("enroll_factor", ["totp", "knowledge"]),
        }
    )
    assert r.status_code == 201, r.json
    assert r.json["status"] == "active" and len(r.json["codes"]) == 10
    user.codes = list(r.json["codes"])
    user.advance(2 * DAY)  # an established account: onboarding and cooling-offs are over
    return user


@pytest.fixture
def tenant_attests(settings, http, auth, tmp_path):
    """Register an ES256 attestation key for the tenant with the CLI; return a signer."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = tmp_path / "attest.pem"
    pem.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
    }
    out = CliRunner().invoke(
        cli, ["clients", "attestation-key", client_id, str(pem)], env=env, catch_exceptions=False
    )
    assert out.exit_code == 0, out.output
    kid = out.output.strip().splitlines()[-1]

    def attest(subject: str, verification_id: str, method: str = "face") -> str:
        claims = {
            "iss": client_id,
            "aud": "idv",
            "sub": subject,
            "verification_id": verification_id,
            "method": method,
            "iat": int(time.time()),
            "jti": uuid.uuid4().hex,
        }
        headers = {"typ": "idv-attestation+jwt", "kid": kid}
        return jwt.encode(claims, key, algorithm="ES256", headers=headers)

    return attest


def _lose_phone(http, carrier_auth):
    """The carrier reports the SIM lost, then unblocked on a new SIM (T1 step 4)."""
    assert carrier_event(http, carrier_auth, PHONE, "sim_lost", now_rfc3339(-60)).status_code == 202
    r = carrier_event(http, carrier_auth, PHONE, "sim_unblocked", now_rfc3339(-30))
    assert r.status_code == 202


def _prove_code(user, vid: str, code: str):
    return user.prove(vid, {"factor": "recovery_code", "code": code})


def _thief_login_fails(user, http, auth):
    """The phone in the thief's hand no longer logs in: no option uses what it holds."""
    r = user.start("login")
    assert r.status_code == 201
    for option in r.json["options"]:
        assert not set(option) & {"totp", "device", "sms"}, r.json
    assert r.json["options"] == [] and r.json["status"] == "denied", r.json


def _factor_status(user) -> dict[str, str]:
    """Listed factors by type (revoked or hidden ones read as ``gone``)."""
    out: dict[str, str] = {}
    for f in user.factors().json["factors"]:
        if f["status"] != "revoked":
            out[f["type"]] = f["status"]
    return out


def _assert_recovered(user, http, auth, before_recovery_vid: str) -> None:
    """The effects of ``recover`` (API.md): thief locked out, one-hour window, cooling-off."""
    # The same second: a login verification opened before the recovery is dead for the TOTP.
    stale = user.prove(before_recovery_vid, {"factor": "totp", "code": user.totp_code()})
    assert stale.status_code in (409, 422), stale.json
    _thief_login_fails(user, http, auth)
    listed = _factor_status(user)
    assert "totp" not in listed and "device" not in listed, listed
    # Within the hour, the PIN alone binds a new TOTP (API.md: enroll_factor offers [knowledge]).
    r = user.start("enroll_factor")
    assert r.status_code == 201 and ["knowledge"] in r.json["options"], r.json
    vid = r.json["verification_id"]
    done = user.prove(vid, {"factor": "knowledge", "secret": PIN})
    assert done.json["status"] == "satisfied", done.json
    user.add_totp(assertion=done.json["assertion"])
    login = user.start("login")
    assert login.json["options"] == [["totp"]], login.json
    # Money actions wait out their cooling-off (T1: sensitive events chain).
    for action in MONEY:
        held = user.start(action).json
        assert held["status"] == "denied" and "cooling_off" in held["reasons"], (action, held)
    user.advance(25 * HOUR)  # the SIM hold (7 d after sim_unblocked) may remain; not cooling_off
    for action in MONEY:
        assert "cooling_off" not in user.start(action).json["reasons"], action


def test_victim_with_pin_and_recovery_code_recovers_at_once(victim, http, auth, carrier_auth):
    _lose_phone(http, carrier_auth)
    # Before the recovery the thief still logs in with the TOTP app: that is what must end.
    before = victim.start("login").json
    assert ["totp"] in before["options"], before
    r = victim.start("recover")
    assert r.status_code == 201 and r.json["status"] == "pending", r.json
    assert ["knowledge", "recovery_code"] in r.json["options"], r.json
    vid = r.json["verification_id"]
    assert victim.prove(vid, {"factor": "knowledge", "secret": PIN}).json["accepted"]
    done = _prove_code(victim, vid, victim.codes[0].lower().replace("-", " "))
    assert done.status_code == 200 and done.json["status"] == "satisfied", done.json
    assert done.json["assertion"]
    remaining = {f["type"]: f.get("remaining") for f in victim.factors().json["factors"]}
    assert remaining["recovery_code"] == 9
    _assert_recovered(victim, http, auth, before["verification_id"])


def test_victim_with_pin_and_face_attestation_recovers(
    victim, http, auth, carrier_auth, tenant_attests
):
    _lose_phone(http, carrier_auth)
    before = victim.start("login").json
    r = victim.start("recover")
    assert ["knowledge", "attested"] in r.json["options"], r.json
    vid = r.json["verification_id"]
    assert victim.prove(vid, {"factor": "knowledge", "secret": PIN}).json["accepted"]
    token = tenant_attests(victim.subject_id, vid, "face")
    done = victim.prove(vid, {"factor": "attested", "attestation": token})
    assert done.json["status"] == "satisfied", done.json
    claims = jwt.decode(done.json["assertion"], options={"verify_signature": False})
    assert "face" in claims["amr"] and "pin" in claims["amr"], claims
    _assert_recovered(victim, http, auth, before["verification_id"])


def test_forgot_pin_with_device_and_recovery_code_replaces_the_pin(victim, http, auth):
    r = victim.start("reset_knowledge")
    assert r.status_code == 201 and ["device", "recovery_code"] in r.json["options"], r.json
    vid = r.json["verification_id"]
    assert victim.prove_factor(vid, "device").json["accepted"]
    done = _prove_code(victim, vid, victim.codes[1])
    assert done.json["status"] == "satisfied", done.json
    r = victim.enroll({"type": "knowledge", "secret": NEW_PIN, "assertion": done.json["assertion"]})
    assert r.status_code == 201, r.json
    # The assertion is accepted once.
    again = victim.enroll(
        {"type": "knowledge", "secret": "640518", "assertion": done.json["assertion"]}
    )
    assert again.status_code == 403 and again.json["error"] == "step_up_required", again.json
    # The old PIN is gone, the new one works.
    check = victim.start("view_personal_data").json["verification_id"]
    assert victim.prove_factor(check, "totp").json["accepted"]
    assert not victim.prove(check, {"factor": "knowledge", "secret": PIN}).json["accepted"]
    ok = victim.prove(check, {"factor": "knowledge", "secret": NEW_PIN})
    assert ok.json["status"] == "satisfied", ok.json
    for action in MONEY:  # a PIN reset starts the cooling-off of money actions
        held = victim.start(action).json
        assert held["status"] == "denied" and "cooling_off" in held["reasons"], (action, held)


def test_recovery_code_is_accepted_once(victim):
    code = victim.codes[2]
    vid = victim.start("recover").json["verification_id"]
    assert victim.prove(vid, {"factor": "knowledge", "secret": PIN}).json["accepted"]
    assert _prove_code(victim, vid, code).json["status"] == "satisfied"
    victim.advance(2 * HOUR)
    vid2 = victim.start("recover").json["verification_id"]
    again = _prove_code(victim, vid2, code)
    assert again.status_code == 200 and again.json["accepted"] is False, again.json


def test_thief_with_the_unlocked_phone_gets_none_of_it(victim, http, auth, tenant_attests):
    """SMS inbox, device key and TOTP app; no PIN, no codes, no face (T1)."""
    thief = victim
    for action in ("recover", "recover_delayed", "reset_knowledge", "cancel_recovery"):
        r = thief.start(action)
        assert r.status_code == 201, (action, r.json)
        if r.json["status"] == "denied":
            continue
        vid = r.json["verification_id"]
        for option in r.json["options"]:
            # Every option needs something the phone does not hold.
            assert set(option) - {"sms", "totp", "device"}, (action, option)
        for factor in ("totp", "device"):
            res = thief.attempt(vid, factor)
            if res.status_code == 200:
                assert res.json["status"] != "satisfied" and not res.json.get("assertion")
        guess = _prove_code(thief, vid, "AAAA-BBBB-CCCC-DDDD")
        if guess.status_code == 200:
            assert guess.json["accepted"] is False
        # A photo of the ID card on the phone is not a face: id_document beside the phone's
        # factors does not count (API.md).
        doc = tenant_attests(thief.subject_id, vid, "id_document")
        res = thief.prove(vid, {"factor": "attested", "attestation": doc})
        if res.status_code == 200:
            assert res.json["status"] != "satisfied", (action, res.json)
    # Nor can the thief erase the account (and re-create it without its protections).
    erase = http.delete(f"/v1/subjects/{thief.subject_id}", headers=auth)
    assert erase.status_code == 403 and erase.json["error"] == "step_up_required"
    r = thief.start("delete_account")
    for option in r.json["options"]:
        assert set(option) - {"sms", "totp", "device"}, option


def test_enroll_assertion_is_rechecked_at_redemption(user):
    """Hole 3: an enroll_factor assertion minted with TOTP alone while alice had no PIN,
    redeemed after a PIN was set, must not replace that PIN."""
    user.add_totp()
    stale = user.step_up("enroll_factor", ["totp"])  # no PIN yet: one factor suffices
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    r = user.enroll({"type": "knowledge", "secret": NEW_PIN, "assertion": stale})
    assert r.status_code == 403 and r.json["error"] == "step_up_required", r.json
