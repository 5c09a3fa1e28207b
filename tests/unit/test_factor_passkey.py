"""The pure passkey verifier (service.factors.passkey) with the tests' software authenticator:
WebAuthn Level 2 §7.1/§7.2, §6.1.1 (counter), §5.1.3 (RP id and origins), RFC 8176 (amr)."""

from __future__ import annotations

import pytest

from service.domain.errors import InvalidRequest
from service.factors import passkey
from tests.http.authenticator import Authenticator

RP_ID, ORIGIN = "loans.example", "https://loans.example"


def registered(key: Authenticator) -> tuple[passkey.Credential, dict]:
    challenge = passkey.new_challenge()
    options = passkey.registration_options(
        rp_id=RP_ID,
        rp_name="Lendly",
        user_handle=passkey.new_user_handle(),
        user_name="138****8000",
        challenge=challenge,
        exclude=[],
    )
    stored = passkey.verify_registration(
        key.create(options),
        challenge=challenge,
        rp_id=RP_ID,
        origins=[ORIGIN],
        user_handle=options["user"]["id"],
    )
    assert stored is not None
    return stored, options


def test_relying_party_checks():
    assert passkey.check_relying_party("Loans.Example", ["https://m.loans.example:8443/"]) == (
        RP_ID,
        ["https://m.loans.example:8443"],
    )
    assert passkey.check_relying_party("localhost", ["http://localhost:5000"])[0] == "localhost"
    for rp_id, origins in (
        ("loans.example", []),
        ("https://loans.example", [ORIGIN]),
        ("loans.example", ["https://evil.example"]),
        ("loans.example", ["https://notloans.example"]),  # a suffix, not a subdomain
        ("loans.example", ["http://loans.example"]),
        ("loans.example", ["https://user@loans.example"]),
        ("loans.example", ["https://loans.example/path"]),
    ):
        with pytest.raises(InvalidRequest):
            passkey.check_relying_party(rp_id, origins)


def test_registration_keeps_flags_and_handle():
    stored, options = registered(Authenticator(ORIGIN, RP_ID, synced=True))
    assert stored.backup_eligible and stored.backup_state and stored.fmt == "none"
    assert stored.user_handle == options["user"]["id"]
    assert passkey.Credential.from_json(stored.to_json()) == stored


def test_authentication_amr_and_user_handle():
    key = Authenticator(ORIGIN, RP_ID)
    stored, _ = registered(key)
    challenge = passkey.new_challenge()
    options = passkey.authentication_options(
        rp_id=RP_ID, challenge=challenge, allow=[stored], user_verification=True
    )
    assert options["userVerification"] == "required"
    response = key.get(options)
    result = passkey.verify_authentication(
        response, stored, challenge=challenge, rp_id=RP_ID, origins=[ORIGIN], user_verification=True
    )
    assert result is not None and result.amr == ("hwk", "user")
    response["response"]["userHandle"] = passkey.new_user_handle()  # another account's handle
    assert (
        passkey.verify_authentication(
            response,
            stored,
            challenge=challenge,
            rp_id=RP_ID,
            origins=[ORIGIN],
            user_verification=True,
        )  # fmt: skip
        is None
    )


@pytest.mark.parametrize(
    ("stored", "new", "regressed"),
    [(0, 0, False), (0, 1, False), (5, 6, False), (5, 5, True), (5, 4, True), (5, 0, True)],
)
def test_counter_must_grow_where_kept(stored, new, regressed):
    assert passkey.counter_regressed(stored, new) is regressed


def test_malformed_responses_are_refused_never_raised():
    stored, _ = registered(Authenticator(ORIGIN, RP_ID))
    for junk in ({}, {"response": "x"}, {"id": 1, "rawId": [], "response": {}}, "text", None):
        assert (
            passkey.verify_authentication(
                junk,
                stored,
                challenge=b"x" * 32,
                rp_id=RP_ID,
                origins=[ORIGIN],
                user_verification=False,
            )  # fmt: skip
            is None
        )
        assert passkey.challenge_of(junk if isinstance(junk, dict) else {}) is None
