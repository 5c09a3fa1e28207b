"""Attested proofing: the tenant's JWS, checked with an explicit algorithm list (RFC 8725).

Each rejection case on its own: every one answers None, never an exception.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from service.domain.errors import InvalidRequest
from service.factors import attested

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=UTC)


def pem_of(private) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


@pytest.fixture(scope="module", params=["ES256", "EdDSA"])
def signer(request):
    private = (
        ec.generate_private_key(ec.SECP256R1())
        if request.param == "ES256"
        else ed25519.Ed25519PrivateKey.generate()
    )
    return private, attested.parse_public_key(pem_of(private))


def claims(**over):
    base = {
        "iss": "cl_tenant",
        "aud": "idv",
        "sub": "alice",
        "verification_id": "vf_1",
        "method": "face",
        "iat": int(NOW.timestamp()),
        "jti": "att-1",
    }
    base.update(over)
    return {k: v for k, v in base.items() if v is not None}


def sign(signer, body=None, **header):
    private, key = signer
    head = {"typ": attested.TYP, "kid": key.kid} | header
    head = {k: v for k, v in head.items() if v is not None}
    return jwt.encode(
        body if body is not None else claims(), private, algorithm=key.alg, headers=head
    )


def check(token, keys, **over):
    args = {
        "client_id": "cl_tenant",
        "audience": "idv",
        "subject": "alice",
        "verification_id": "vf_1",
        "now": NOW,
    } | over
    return attested.verify(token, keys, **args)


def test_a_valid_attestation_yields_its_method_and_jti(signer):
    found = check(sign(signer), [signer[1]])
    assert found is not None and found.method == "face" and found.jti == "att-1"
    for method in ("eid", "id_document", "in_person"):
        assert check(sign(signer, claims(method=method)), [signer[1]]).method == method


def test_key_id_is_the_rfc7638_thumbprint_and_alg_comes_from_the_key(signer):
    private, key = signer
    again = attested.parse_public_key(pem_of(private))
    assert again == key and len(key.kid) == 43  # SHA-256, base64url without padding
    assert key.alg == ("ES256" if isinstance(private, ec.EllipticCurvePrivateKey) else "EdDSA")


def test_rfc7638_thumbprint_matches_pyjwt_jwk():
    # RFC 7638 §3.1's members, computed independently from PyJWT's JWK of the same key.
    private = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    members = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    import hashlib

    expected = base64.urlsafe_b64encode(hashlib.sha256(members.encode()).digest()).rstrip(b"=")
    assert attested.parse_public_key(pem_of(private)).kid == expected.decode()


@pytest.mark.parametrize(
    "pem",
    ["", "not a key", pem_of(ec.generate_private_key(ec.SECP384R1()))],
)
def test_only_p256_and_ed25519_public_keys_register(pem):
    with pytest.raises(InvalidRequest):
        attested.parse_public_key(pem)


def test_an_rsa_key_does_not_register():
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(InvalidRequest):
        attested.parse_public_key(pem_of(private))


def test_wrong_signature(signer):
    token = sign(signer)
    head, body, sig = token.split(".")
    flipped = sig[:-4] + ("AAAA" if sig[-4:] != "AAAA" else "BBBB")
    assert check(f"{head}.{body}.{flipped}", [signer[1]]) is None
    # The same claims signed by another key under this key's kid.
    other = (ec.generate_private_key(ec.SECP256R1()), signer[1])
    if signer[1].alg == "EdDSA":
        other = (ed25519.Ed25519PrivateKey.generate(), signer[1])
    assert check(sign(other), [signer[1]]) is None


def test_another_tenants_key_is_unknown_here(signer):
    # Keys are looked up among the presenting tenant's keys only: another tenant's kid is none.
    foreign_private = ec.generate_private_key(ec.SECP256R1())
    foreign = (foreign_private, attested.parse_public_key(pem_of(foreign_private)))
    assert check(sign(foreign), [signer[1]]) is None


@pytest.mark.parametrize(
    "header",
    [
        {"typ": None},
        {"typ": "JWT"},
        {"typ": "idv-assertion+jwt"},
        {"kid": None},
        {"kid": "someone-else"},
    ],
)
def test_header_must_be_typed_and_name_a_known_kid(signer, header):
    assert check(sign(signer, **header), [signer[1]]) is None


def test_alg_none_and_a_mismatched_alg_are_refused(signer):
    unsigned = jwt.encode(
        claims(), None, algorithm="none", headers={"typ": attested.TYP, "kid": signer[1].kid}
    )
    assert check(unsigned, [signer[1]]) is None
    # An HMAC token "signed" with the public key's PEM (the classic algorithm confusion).
    hs = jwt.api_jws.PyJWS(algorithms=["HS256"]).encode(
        json.dumps(claims()).encode(),
        b"k" * 32,
        algorithm="HS256",
        headers={"typ": attested.TYP, "kid": signer[1].kid},
    )
    assert check(hs, [signer[1]]) is None


@pytest.mark.parametrize(
    "over",
    [
        {"iss": "cl_other"},
        {"iss": None},
        {"aud": "someone-else"},
        {"aud": None},
        {"sub": "bob"},
        {"sub": None},
        {"verification_id": "vf_2"},
        {"verification_id": None},
        {"method": "selfie"},
        {"method": None},
        {"method": ["face"]},
        {"jti": None},
        {"jti": ""},
        {"jti": 7},
        {"jti": "x" * 129},
        {"iat": None},
        {"iat": "1765080000"},
        {"iat": True},
    ],
)
def test_claims_must_bind_tenant_audience_subject_verification_method_and_jti(signer, over):
    assert check(sign(signer, claims(**over)), [signer[1]]) is None


def test_iat_at_most_300s_old_and_60s_ahead(signer):
    key = [signer[1]]
    at = int(NOW.timestamp())
    assert check(sign(signer, claims(iat=at - 300)), key) is not None
    assert check(sign(signer, claims(iat=at - 301)), key) is None  # stale
    assert check(sign(signer, claims(iat=at + 60)), key) is not None
    assert check(sign(signer, claims(iat=at + 61)), key) is None  # from the future
    # The clock passed in decides, not the wall clock.
    later = NOW + timedelta(minutes=10)
    assert check(sign(signer), key, now=later) is None


def test_exp_and_nbf_hold_when_present(signer):
    key, at = [signer[1]], int(NOW.timestamp())
    assert check(sign(signer, claims(exp=at + 30)), key) is not None
    assert check(sign(signer, claims(exp=at)), key) is None
    assert check(sign(signer, claims(nbf=at + 30)), key) is None


@pytest.mark.parametrize(
    "token",
    ["", "garbage", "a.b.c", "...", "eyJhbGciOiJFUzI1NiJ9.e30.", "\ud800", "x" * 9000, None, 12],
)
def test_garbage_is_none_never_an_exception(signer, token):
    assert check(token, [signer[1]]) is None
