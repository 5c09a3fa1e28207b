"""Assertion encoding (RFC 7515 §7.1 compact serialisation): what ``assertions.issue`` writes is
what ``jwt.encode`` wrote before it (issue 24 took PyJWT's wrapper off the hot path and kept
its signers), and every profile's token verifies."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import jwt
import pytest

from service.crypto import sm2
from service.crypto.keyring import KeyRing, new_signing_key
from service.domain import assertions


def now() -> datetime:
    """jwt.decode checks ``exp`` on the real clock: each test issues at the current second."""
    return datetime.now(UTC).replace(microsecond=0)


def ring(alg: str) -> KeyRing:
    keys = KeyRing.generate()
    keys.signing_keys = [new_signing_key(alg, now())]
    return keys


def issue(keys: KeyRing) -> str:
    at = now()
    claims: dict = {
        "issuer": "https://idv.example",
        "audience": "c_tenant",
        "subject": "user-é-1",  # non-ASCII: written as \\u escapes, as jwt.encode writes it
        "action": "login",
        "acr": "aal2",
        "amr": ["otp", "pwd"],
        "auth_time": at,
        "now": at,
        "ttl": 120,
        "jti": "v_abc",
    }
    return assertions.issue(keys, **claims)


def segment(token: str, i: int) -> dict:
    part = token.split(".")[i]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_header_and_claims_are_byte_for_byte_what_jwt_encode_writes(alg):
    keys = ring(alg)
    key = keys.active_signing_key
    token = issue(keys)
    claims = jwt.decode(
        token, key.private_key().public_key(), algorithms=[alg], options={"verify_aud": False}
    )
    reference = jwt.encode(
        claims, key.private_key(), algorithm=alg, headers={"kid": key.kid, "typ": assertions.TYP}
    )
    assert token.split(".")[:2] == reference.split(".")[:2]
    if alg == "EdDSA":  # deterministic signatures (RFC 8032): the whole token is the same
        assert token == reference


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", sm2.ALG])
def test_every_profile_verifies_and_names_its_key(alg):
    keys = ring(alg)
    token = issue(keys)
    header = {"alg": alg, "kid": keys.active_signing_key.kid, "typ": assertions.TYP}
    assert segment(token, 0) == header
    claims = assertions.verify(
        keys,
        token,
        issuer="https://idv.example",
        audience="c_tenant",
        subject="user-é-1",
        action="login",
        now=now(),
    )
    assert claims["amr"] == ["otp", "pwd", "mfa"]
    assert claims["exp"] - claims["iat"] == 120


@pytest.mark.parametrize("alg", ["ES256", "EdDSA", sm2.ALG])
def test_a_changed_claim_no_longer_verifies(alg):
    keys = ring(alg)
    head, _, sig = issue(keys).split(".")
    forged = (
        base64.urlsafe_b64encode(
            json.dumps(segment(issue(keys), 1) | {"action": "delete_account"}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    with pytest.raises(Exception) as refused:
        assertions.verify(
            keys,
            f"{head}.{forged}.{sig}",
            issuer="https://idv.example",
            audience="c_tenant",
            subject="user-é-1",
            action="delete_account",
            now=now(),
        )
    assert type(refused.value).__name__ == "StepUpRequired"


def test_a_new_key_gets_its_own_header():
    first, second = ring("ES256"), ring("ES256")
    assert segment(issue(first), 0)["kid"] != segment(issue(second), 0)["kid"]
