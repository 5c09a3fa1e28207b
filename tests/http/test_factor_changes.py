"""Adding, listing and removing factors and changing the phone (API.md "Subjects and factors").

Once a subject has an active non-SMS factor, every change to its factors needs a fresh,
single-use ``enroll_factor`` assertion for that very subject and tenant, and a new phone needs a
``change_phone`` one (ASVS 6.4.4, 7.5.1; THREATS.md T1).
"""

from __future__ import annotations

import re

import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from tests.http.flow import PHONE, PIN, Device, User

NEW_PHONE = "+8613900139000"
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


def factor_id(user: User, kind: str) -> str:
    return next(f["factor_id"] for f in user.factors().json["factors"] if f["type"] == kind)


def types(user: User) -> list[str]:
    return sorted(f["type"] for f in user.factors().json["factors"])


# -- listing --------------------------------------------------------------------------------------
def test_listing_never_shows_a_secret(user):
    # API.md: GET factors → factor_id, type, status, created_at, label; never a secret (T4).
    user.add_all_factors()
    pending = user.enroll(
        {"type": "totp", "assertion": user.step_up("enroll_factor", ["totp", "knowledge"])}
    )
    assert pending.status_code == 201
    r = user.factors()
    assert r.status_code == 200
    listed = r.json["factors"]
    assert sorted((f["type"], f["status"]) for f in listed) == [
        ("device", "active"),
        ("knowledge", "active"),
        ("totp", "active"),
        ("totp", "pending"),
    ]
    for f in listed:
        assert set(f) == {"factor_id", "type", "status", "created_at", "label"}, f
        assert RFC3339.match(f["created_at"]), f
    assert next(f for f in listed if f["type"] == "device")["label"] == "phone"
    body = r.get_data(as_text=True)
    pem_body = "".join(user.device.public_pem().splitlines()[1:-1])
    for secret in (user.totp_secret, pending.json["secret"], PIN, pem_body, "argon2", "PUBLIC KEY"):
        assert secret not in body
    assert PHONE not in body and "13800138000" not in body


def test_listing_is_per_tenant(user, http, other_auth):
    user.add_totp()
    r = http.get("/v1/subjects/alice/factors", headers=other_auth)
    assert r.status_code == 404 and r.json["error"] == "not_found"
    fid = factor_id(user, "totp")
    r = http.delete(f"/v1/subjects/alice/factors/{fid}", headers=other_auth)
    assert r.status_code == 404
    assert types(user) == ["totp"]


# -- removal --------------------------------------------------------------------------------------
def test_remove_needs_single_use_enroll_assertion(user):
    # API.md: removing a factor needs an enroll_factor assertion in a JSON body → 204.
    user.add_all_factors()
    device = user.device.factor_id
    r = user.remove_factor(device)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    token = user.step_up("enroll_factor", ["totp", "knowledge"])
    r = user.remove_factor(device, assertion=token)
    assert r.status_code == 204 and r.get_data() == b""
    assert types(user) == ["knowledge", "totp"]
    # The device no longer logs in.
    assert user.start("login").json["options"] == [["sms"], ["totp"]]
    # Single use: the same assertion cannot remove the TOTP.
    r = user.remove_factor(user.totp_factor, assertion=token)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    assert types(user) == ["knowledge", "totp"]


def test_only_strong_factor_removal_needs_step_up_too(user):
    user.add_totp()
    r = user.remove_factor(user.totp_factor)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    r = user.remove_factor(user.totp_factor, assertion=user.step_up("enroll_factor", ["totp"]))
    assert r.status_code == 204
    assert types(user) == []
    assert user.start("login").json["options"] == [["sms"]]


def test_pending_totp_alone_is_removed_without_step_up(user):
    # "an active non-SMS factor": a TOTP never activated does not count.
    r = user.enroll({"type": "totp"})
    assert r.status_code == 201 and r.json["status"] == "pending"
    assert user.remove_factor(r.json["factor_id"]).status_code == 204
    assert types(user) == []


def test_a_new_totp_set_up_voids_the_one_never_activated(user, http, auth):
    """Set-ups repeated without end (none needs a step-up before a first strong factor) left a
    pending factor each, all read by every decision about the subject: 3,000 of them made a
    verification 40 times slower. A new set-up now voids the unproven one; an active TOTP
    stays."""
    first = user.enroll({"type": "totp"}).json
    second = user.enroll({"type": "totp"}).json
    listed = http.get("/v1/subjects/alice/factors", headers=auth).json["factors"]
    assert [(f["factor_id"], f["status"]) for f in listed] == [(second["factor_id"], "pending")]
    stale = pyotp.TOTP(first["secret"]).now()
    r = http.post(
        f"/v1/subjects/alice/factors/{first['factor_id']}/activate",
        json={"code": stale},
        headers=auth,
    )
    assert r.status_code == 404
    user.add_totp()  # set up again and activated
    token = user.step_up("enroll_factor", ["totp"])
    user.advance(30)
    assert user.enroll({"type": "totp", "assertion": token}).status_code == 201
    listed = http.get("/v1/subjects/alice/factors", headers=auth).json["factors"]
    assert sorted((f["type"], f["status"]) for f in listed) == [
        ("totp", "active"),
        ("totp", "pending"),
    ]


def test_remove_unknown_factor_is_404_and_keeps_the_assertion(user):
    user.add_totp()
    token = user.step_up("enroll_factor", ["totp"])
    r = user.remove_factor("fa_nope", assertion=token)
    assert r.status_code == 404 and r.json["error"] == "not_found"
    assert user.remove_factor(user.totp_factor, assertion=token).status_code == 204


def test_wrong_assertions_are_refused(user, http, auth, other_auth):
    # RFC 8725 / API.md: an assertion counts only for its action, subject (sub) and tenant (aud).
    user.add_totp()
    bob = User(http, auth, subject_id="bob", sms_file=user.sms_file, clock=user.clock)
    assert bob.put(NEW_PHONE).status_code == 201
    bobs = bob.step_up("enroll_factor", ["sms"])
    other = User(http, other_auth, subject_id="alice", sms_file=user.sms_file, clock=user.clock)
    assert other.put(PHONE).status_code == 201
    others = other.step_up("enroll_factor", ["sms"])
    login = user.step_up("login", ["totp"])
    change_phone_like = user.step_up("enroll_factor", ["totp"])  # right action, used for PUT
    wrong = {
        "login": login,
        "other subject": bobs,
        "other tenant": others,
        "garbage": "not.a.jwt",
        "tampered": login[:-4] + ("AAAA" if not login.endswith("AAAA") else "BBBB"),
    }
    for name, token in wrong.items():
        r = user.remove_factor(user.totp_factor, assertion=token)
        assert r.status_code == 403 and r.json["error"] == "step_up_required", name
        r = user.enroll({"type": "device", **_device_body(), "assertion": token})
        assert r.status_code == 403 and r.json["error"] == "step_up_required", name
    # An enroll_factor assertion does not change the phone (that needs change_phone).
    r = user.put(NEW_PHONE, assertion=change_phone_like)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    assert types(user) == ["totp"]
    # The refused attempts consumed nothing: bob's assertion still works for bob.
    bob.add_totp()  # bob's first strong factor needs no assertion ...
    r = bob.remove_factor(bob.totp_factor, assertion=bobs)  # ... removing it uses bob's
    assert r.status_code == 204


def test_expired_assertion_is_refused(user):
    # API.md: exp at most 5 minutes after iat.
    user.add_totp()
    token = user.step_up("enroll_factor", ["totp"])
    user.advance(5 * 60 + 1)
    r = user.remove_factor(user.totp_factor, assertion=token)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"


# -- phone changes --------------------------------------------------------------------------------
def test_change_phone_with_assertion_moves_the_sms(user):
    # ASVS 7.5.1, T2: a new phone behind a change_phone step-up; codes then go to the new one.
    user.add_totp()
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    vid = user.start("login").json["verification_id"]
    assert user.challenge(vid, "sms").json["sent_to"] == "+86 138****8000"
    r = user.put(NEW_PHONE)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"
    token = user.step_up("change_phone", ["totp", "knowledge"])
    r = user.put(NEW_PHONE, assertion=token)
    assert r.status_code == 200 and r.json == {"subject_id": "alice", "phone": "+86 139****9000"}
    vid = user.start("login").json["verification_id"]
    ch = user.challenge(vid, "sms")
    assert ch.json["sent_to"] == "+86 139****9000"
    assert user.sms_messages()[-1]["to"] == NEW_PHONE
    assert user.prove(vid, {"factor": "sms", "code": user.last_sms_code()}).json["status"] == (
        "satisfied"
    )
    # Single use: the same assertion cannot move the phone back.
    r = user.put(PHONE, assertion=token)
    assert r.status_code == 403 and r.json["error"] == "step_up_required"


def test_same_phone_put_needs_nothing(user):
    # API.md: a PUT with the phone it already has changes nothing and needs none.
    user.add_all_factors()
    r = user.put(PHONE)
    assert r.status_code == 200 and r.json == {"subject_id": "alice", "phone": "+86 138****8000"}


def test_phone_only_subject_changes_phone_freely(user):
    r = user.put(NEW_PHONE)
    assert r.status_code == 200 and r.json["phone"] == "+86 139****9000"


# -- enrolment input ------------------------------------------------------------------------------
@pytest.mark.parametrize("secret", ["123456", "111111", "password", "12345", "abcdef", "654321"])
def test_weak_knowledge_secret_is_refused(user, secret):
    # NIST SP 800-63B-4 blocklist: short, repeated, sequential and common secrets.
    r = user.enroll({"type": "knowledge", "secret": secret})
    assert r.status_code == 422 and r.json["error"] == "weak_secret", r.json
    assert secret not in r.json["message"]  # never echoed
    assert types(user) == []


def test_chosen_pin_is_accepted(user):
    r = user.enroll({"type": "knowledge", "secret": "739184"})
    assert r.status_code == 201, r.json
    assert r.json["type"] == "knowledge" and r.json["status"] == "active"
    assert "secret" not in r.json
    assert types(user) == ["knowledge"]


def test_refused_input_does_not_spend_the_assertion(user):
    # A 422/400 before the change is made leaves the step-up usable for the corrected request.
    user.add_totp()
    token = user.step_up("enroll_factor", ["totp"])
    r = user.enroll({"type": "knowledge", "secret": "123456", "assertion": token})
    assert r.status_code == 422 and r.json["error"] == "weak_secret"
    r = user.enroll({"type": "device", "public_key": "nope", "alg": "ES256", "assertion": token})
    assert r.status_code == 400
    assert (
        user.enroll({"type": "knowledge", "secret": "739184", "assertion": token}).status_code
        == 201
    )


def _pem(key) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def _device_body() -> dict:
    return {"public_key": Device.new().public_pem(), "alg": "ES256", "label": "x"}


P256 = ec.generate_private_key(ec.SECP256R1())
BAD_DEVICES = {
    "not pem": {"public_key": "hello", "alg": "ES256"},
    "truncated pem": {"public_key": _pem(P256)[:80], "alg": "ES256"},
    "private key pem": {
        "public_key": P256.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode(),
        "alg": "ES256",
    },
    "p384 for ES256": {"public_key": _pem(ec.generate_private_key(ec.SECP384R1())), "alg": "ES256"},
    "ed25519 for ES256": {"public_key": _pem(ed25519.Ed25519PrivateKey.generate()), "alg": "ES256"},
    "p256 for EdDSA": {"public_key": _pem(P256), "alg": "EdDSA"},
    "unknown alg": {"public_key": _pem(P256), "alg": "RS256"},
    "no alg": {"public_key": _pem(P256)},
    "no key": {"alg": "ES256"},
}


@pytest.mark.parametrize("body", list(BAD_DEVICES.values()), ids=list(BAD_DEVICES))
def test_bad_device_key_is_400(user, body):
    r = user.enroll({"type": "device", **body})
    assert r.status_code == 400 and r.json["error"] == "invalid_request", r.json
    assert types(user) == []


# -- erasure --------------------------------------------------------------------------------------
def test_deleted_subject_has_no_factors(user, http, auth):
    # API.md / PIPL art. 47: DELETE erases personal data and factors; with a strong factor it
    # needs a delete_account step-up (issue 19, hole 2).
    user.add_all_factors()
    token = user.step_up("delete_account", ["totp", "knowledge"])
    assert (
        http.delete("/v1/subjects/alice", json={"assertion": token}, headers=auth).status_code
        == 204
    )
    r = user.factors()
    assert r.status_code == 404 and r.json["error"] == "not_found"
    assert user.start("login").status_code == 404
    assert http.delete("/v1/subjects/alice", headers=auth).status_code == 404
    # Created again, alice starts from nothing.
    assert user.put().status_code == 201
    assert user.factors().json["factors"] == []
    assert user.start("view_personal_data").json["status"] == "denied"
