"""Device factor: key loading, challenge format and ES256 / EdDSA signature checks."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain.errors import InvalidRequest
from service.factors import device

NONCE = bytes(range(32))
EXPIRES_AT = 1_700_000_300


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def spki_pem(private_key) -> str:
    return (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


@pytest.fixture(scope="module")
def p256():
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed():
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture
def challenge() -> str:
    return device.make_challenge("ver_123", "payment", EXPIRES_AT, NONCE)


def sign_es256(key, challenge: str) -> str:
    return b64url(key.sign(challenge.encode("utf-8"), ec.ECDSA(hashes.SHA256())))


def sign_eddsa(key, challenge: str) -> str:
    return b64url(key.sign(challenge.encode("utf-8")))


# --- keys -------------------------------------------------------------------------------------


def test_load_es256_and_eddsa_keys(p256, ed):
    assert isinstance(device.load_public_key(spki_pem(p256), "ES256"), ec.EllipticCurvePublicKey)
    assert isinstance(device.load_public_key(spki_pem(ed), "EdDSA"), ed25519.Ed25519PublicKey)


def test_key_must_match_the_algorithm(p256, ed):
    with pytest.raises(InvalidRequest, match="P-256"):
        device.load_public_key(spki_pem(ed), "ES256")
    with pytest.raises(InvalidRequest, match="Ed25519"):
        device.load_public_key(spki_pem(p256), "EdDSA")


def test_other_curves_and_key_types_are_refused():
    p384 = ec.generate_private_key(ec.SECP384R1())
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for key in (p384, rsa_key):
        with pytest.raises(InvalidRequest):
            device.load_public_key(spki_pem(key), "ES256")


@pytest.mark.parametrize("alg", ["RS256", "none", "es256", "", "HS256"])
def test_unknown_algorithm_is_refused(p256, alg):
    with pytest.raises(InvalidRequest, match="alg"):
        device.load_public_key(spki_pem(p256), alg)


def test_private_key_pem_is_refused(p256):
    private_pem = p256.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    with pytest.raises(InvalidRequest):
        device.load_public_key(private_pem, "ES256")


def test_normalize_pem_is_canonical(p256):
    pem = spki_pem(p256)
    messy = "\r\n".join(pem.strip().splitlines()) + "\r\n\r\n"
    assert device.normalize_pem(messy, "ES256") == pem
    assert device.normalize_pem(pem, "ES256") == pem


PEM_SHAPED = st.builds(
    lambda body: (
        "-----BEGIN PUBLIC KEY-----\n"
        + base64.b64encode(body).decode()
        + "\n-----END PUBLIC KEY-----\n"
    ),
    st.binary(max_size=200),
)


@settings(max_examples=300)
@given(
    pem=st.one_of(st.text(), st.binary(), PEM_SHAPED),
    alg=st.one_of(st.sampled_from(device.ALGORITHMS), st.text(max_size=8)),
)
def test_garbage_keys_raise_only_invalid_request(pem, alg):
    try:
        key = device.load_public_key(pem, alg)
    except InvalidRequest:
        return
    assert isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey)


# --- challenges -------------------------------------------------------------------------------


def test_challenge_format(challenge):
    assert challenge.startswith("idv-dc1.")
    body = challenge.removeprefix("idv-dc1.")
    assert "=" not in body
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert payload == {"v": "ver_123", "a": "payment", "exp": EXPIRES_AT, "n": b64url(NONCE)}
    assert base64.urlsafe_b64decode(body + "==").decode() == json.dumps(
        payload, separators=(",", ":"), sort_keys=True
    )


def test_parse_challenge_inverts_make_challenge(challenge):
    parsed = device.parse_challenge(challenge)
    assert parsed == {
        "verification_id": "ver_123",
        "action": "payment",
        "expires_at": EXPIRES_AT,
        "nonce": NONCE,
    }
    assert device.make_challenge(**parsed) == challenge


@pytest.mark.parametrize("nonce", [b"", b"x" * 31, b"x" * 33, b"x" * 8, "x" * 32])
def test_nonce_must_be_256_bits(nonce):
    # ASVS 6.7.2: at least 64 bits; idv uses 256
    with pytest.raises(ValueError):
        device.make_challenge("ver_123", "payment", EXPIRES_AT, nonce)


def test_new_nonce_is_32_fresh_bytes():
    nonce = device.new_nonce()
    assert isinstance(nonce, bytes) and len(nonce) == 32
    assert device.new_nonce() != nonce


def _encode(payload) -> str:
    raw = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    return "idv-dc1." + b64url(raw)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "idv-dc1.",
        "idv-dc2." + "e30",
        "idv-dc1.!!!!",
        "idv-dc1.e30",  # {}
        _encode({"v": "x", "a": "y", "exp": 1}),
        _encode({"v": "x", "a": "y", "exp": "1", "n": b64url(NONCE)}),
        _encode({"v": "x", "a": "y", "exp": True, "n": b64url(NONCE)}),
        _encode({"v": 1, "a": "y", "exp": 1, "n": b64url(NONCE)}),
        _encode({"v": "x", "a": "y", "exp": 1, "n": b64url(b"short")}),
        _encode({"v": "x", "a": "y", "exp": 1, "n": b64url(NONCE), "extra": 1}),
        _encode([1, 2]),
        "idv-dc1." + b64url(b'{"a":"y","exp":1,"n":"' + b64url(NONCE).encode() + b'","v":"x"} '),
    ],
)
def test_malformed_challenges_parse_to_none(bad):
    assert device.parse_challenge(bad) is None


def test_padded_challenge_is_not_canonical():
    challenge = device.make_challenge("ver_1", "payment", EXPIRES_AT, NONCE)
    body = challenge.removeprefix("idv-dc1.")
    assert len(body) % 4  # this encoding needs padding, so the test means something
    assert device.parse_challenge(challenge) is not None
    padded = challenge + "=" * (-len(body) % 4)
    assert device.parse_challenge(padded) is None


@given(st.one_of(st.text(), st.text().map(lambda t: "idv-dc1." + t)))
def test_parse_challenge_never_raises(text):
    result = device.parse_challenge(text)
    assert result is None or device.make_challenge(**result) == text


# --- signatures -------------------------------------------------------------------------------


def test_es256_round_trip(p256, challenge):
    assert device.verify_signature(spki_pem(p256), "ES256", challenge, sign_es256(p256, challenge))


def test_eddsa_round_trip(ed, challenge):
    assert device.verify_signature(spki_pem(ed), "EdDSA", challenge, sign_eddsa(ed, challenge))


def test_padded_base64url_signature_is_accepted(ed, challenge):
    raw = ed.sign(challenge.encode())
    padded = base64.urlsafe_b64encode(raw).decode()
    assert padded.endswith("=")
    assert device.verify_signature(spki_pem(ed), "EdDSA", challenge, padded)


def test_webcrypto_raw_es256_signature_converts_to_der(p256, challenge):
    der = p256.sign(challenge.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    assert device.raw_to_der(raw) == der
    assert device.verify_signature(
        spki_pem(p256), "ES256", challenge, b64url(device.raw_to_der(raw))
    )
    # ES256 expects DER: the raw form itself is refused
    assert not device.verify_signature(spki_pem(p256), "ES256", challenge, b64url(raw))


@pytest.mark.parametrize("size", [0, 63, 65])
def test_raw_to_der_needs_64_bytes(size):
    with pytest.raises(ValueError):
        device.raw_to_der(b"\x01" * size)


def test_signature_over_another_challenge_is_refused(p256, ed, challenge):
    other = device.make_challenge("ver_123", "change_phone", EXPIRES_AT, NONCE)
    assert not device.verify_signature(spki_pem(p256), "ES256", other, sign_es256(p256, challenge))
    assert not device.verify_signature(spki_pem(ed), "EdDSA", other, sign_eddsa(ed, challenge))


def test_signature_by_another_key_is_refused(challenge):
    other_p256 = ec.generate_private_key(ec.SECP256R1())
    other_ed = ed25519.Ed25519PrivateKey.generate()
    p256_pem = spki_pem(ec.generate_private_key(ec.SECP256R1()))
    ed_pem = spki_pem(ed25519.Ed25519PrivateKey.generate())
    assert not device.verify_signature(
        p256_pem, "ES256", challenge, sign_es256(other_p256, challenge)
    )
    assert not device.verify_signature(ed_pem, "EdDSA", challenge, sign_eddsa(other_ed, challenge))


def _flip(signature_b64url: str, index: int) -> str:
    raw = bytearray(base64.urlsafe_b64decode(signature_b64url + "=="))
    raw[index] ^= 0x01
    return b64url(bytes(raw))


def test_tampered_signatures_are_refused(p256, ed, challenge):
    es = sign_es256(p256, challenge)
    eddsa = sign_eddsa(ed, challenge)
    for index in (0, 10, -1):
        assert not device.verify_signature(spki_pem(p256), "ES256", challenge, _flip(es, index))
        assert not device.verify_signature(spki_pem(ed), "EdDSA", challenge, _flip(eddsa, index))


def test_wrong_lengths_encodings_and_algorithms_are_false(p256, ed, challenge):
    eddsa = sign_eddsa(ed, challenge)
    raw = base64.urlsafe_b64decode(eddsa + "==")
    pem = spki_pem(ed)
    assert not device.verify_signature(pem, "EdDSA", challenge, b64url(raw[:63]))
    assert not device.verify_signature(pem, "EdDSA", challenge, b64url(raw + b"\x00"))
    assert not device.verify_signature(pem, "EdDSA", challenge, eddsa + "!")
    assert not device.verify_signature(pem, "EdDSA", challenge, "")
    assert not device.verify_signature(pem, "ES256", challenge, eddsa)
    assert not device.verify_signature("not a key", "EdDSA", challenge, eddsa)
    assert not device.verify_signature(pem, "RS256", challenge, eddsa)


@settings(max_examples=200)
@given(
    alg=st.sampled_from(device.ALGORITHMS),
    challenge=st.text(max_size=60),
    signature=st.one_of(st.text(max_size=120), st.binary(max_size=80).map(b64url)),
)
def test_garbage_signatures_never_raise(p256, ed, alg, challenge, signature):
    pem = spki_pem(p256) if alg == "ES256" else spki_pem(ed)
    assert device.verify_signature(pem, alg, challenge, signature) is False


@given(pem=st.one_of(st.text(max_size=200), PEM_SHAPED), alg=st.text(max_size=8), sig=st.text())
def test_garbage_keys_in_verify_never_raise(pem, alg, sig):
    assert device.verify_signature(pem, alg, "idv-dc1.x", sig) is False
