"""Device-bound key factor: public keys (ES256, EdDSA, SM2) and signed one-time challenges.

SM2 keys (many phones sold in China hold them in their secure element) are SubjectPublicKeyInfo
on the SM2 curve (OID 1.2.156.10197.1.301) and sign with SM2-with-SM3 and the default user ID
``1234567812345678`` (GB/T 32918, GM/T 0009), raw ``r ‖ s`` (API.md, commercial cryptography).

The challenge binds the verification, the action, an expiry and a 256-bit server nonce, the
way an RFC 9449 DPoP proof binds its nonce, purpose and time; the caller accepts it once.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from service.crypto import profile as crypto_profile
from service.crypto import sm2
from service.domain.clock import rfc3339
from service.domain.errors import InvalidRequest
from service.factors.ports import (
    Attempt,
    Check,
    FactorPort,
    Issued,
    Prepared,
    Subject,
    Verification,
    uses_challenge,
)
from service.factors.spec import FactorSpec, Input, fields

ALGORITHMS = ("ES256", "EdDSA", sm2.ALG)  # RFC 7518 §3.4, RFC 8037 §3.1 and API.md names
NONCE_BYTES = 32  # ASVS 6.7.2 asks for at least 64 bits; idv uses 256
CHALLENGE_PREFIX = "idv-dc1."
CHALLENGE_TTL = timedelta(minutes=2)
MAX_PEM_CHARS = 4096  # an SPKI PEM for P-256 or Ed25519 is well under 200 characters

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | bytes  # bytes: SM2 X ‖ Y

_B64URL = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    """Strictly decode base64url with or without padding; raise ValueError otherwise."""
    if not isinstance(text, str) or not _B64URL.fullmatch(text):
        raise ValueError("not base64url")
    stripped = text.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def load_public_key(pem: str, alg: str) -> PublicKey:
    """Parse a PEM SubjectPublicKeyInfo for ``alg`` and return the key object.

    ES256 needs an EC key on P-256 (SECP256R1), EdDSA an Ed25519 key. An unknown ``alg``, a
    key of another type and any unparsable input raise InvalidRequest, and nothing else.
    """
    if alg not in ALGORITHMS:
        raise InvalidRequest(f"alg must be one of {', '.join(ALGORITHMS)}")
    if isinstance(pem, str):
        try:
            data = pem.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("public_key is not a PEM public key") from None
    elif isinstance(pem, bytes):
        data = pem
    else:
        raise InvalidRequest("public_key is not a PEM public key")
    if len(data) > MAX_PEM_CHARS:
        raise InvalidRequest("public_key is too long")
    if alg == sm2.ALG:
        return _load_sm2(data)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise InvalidRequest("public_key is not a PEM public key") from None
    if alg == "ES256":
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1)):
            raise InvalidRequest("ES256 needs an EC public key on the P-256 curve")
    elif not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidRequest("EdDSA needs an Ed25519 public key")
    return key


def _load_sm2(data: bytes) -> bytes:
    """``X ‖ Y`` of an SM2 SubjectPublicKeyInfo PEM whose point is on the curve."""
    try:
        crypto_profile.require_library(crypto_profile.GM)
    except crypto_profile.ProfileUnavailable:
        raise InvalidRequest("SM2 device keys need the gm extra on the server") from None
    try:
        public = sm2.public_from_pem(data.decode("ascii"))
    except (sm2.SM2KeyError, UnicodeDecodeError):
        raise InvalidRequest("SM2 needs an SM2 SubjectPublicKeyInfo PEM public key") from None
    if not sm2.is_valid_public(public):
        raise InvalidRequest("the SM2 public key is not a point of the SM2 curve")
    return public


def normalize_pem(pem: str, alg: str) -> str:
    """Return ``pem`` re-serialised as canonical PEM SubjectPublicKeyInfo; InvalidRequest if bad."""
    key = load_public_key(pem, alg)
    if isinstance(key, bytes):
        return sm2.public_pem(key)
    encoded = key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return encoded.decode("ascii")


def new_nonce() -> bytes:
    """Return a fresh 256-bit challenge nonce (ASVS 6.7.2)."""
    return secrets.token_bytes(NONCE_BYTES)


def make_challenge(verification_id: str, action: str, expires_at: int, nonce: bytes) -> str:
    """Return the challenge string a device signs: ``idv-dc1.`` + base64url(JSON).

    The JSON binds the verification (``v``), the action (``a``), the expiry in Unix seconds
    (``exp``) and the nonce (``n``), as RFC 9449 §4.2 binds DPoP proofs. ``nonce`` must be
    exactly 32 bytes, else ValueError.
    """
    if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes")
    payload = {"v": verification_id, "a": action, "exp": expires_at, "n": _b64url(nonce)}
    encoded = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode("utf-8")
    return CHALLENGE_PREFIX + _b64url(encoded)


def parse_challenge(challenge: str) -> dict[str, Any] | None:
    """Invert :func:`make_challenge`; None when ``challenge`` is malformed or not canonical.

    Returns ``{"verification_id": str, "action": str, "expires_at": int, "nonce": bytes}``, so
    ``make_challenge(**parse_challenge(c)) == c``.
    """
    if not isinstance(challenge, str) or not challenge.startswith(CHALLENGE_PREFIX):
        return None
    try:
        payload = json.loads(_b64url_decode(challenge[len(CHALLENGE_PREFIX) :]))
        if not isinstance(payload, dict) or set(payload) != {"v", "a", "exp", "n"}:
            return None
        verification_id, action, expires_at = payload["v"], payload["a"], payload["exp"]
        if not (isinstance(verification_id, str) and isinstance(action, str)):
            return None
        if type(expires_at) is not int:
            return None
        nonce = _b64url_decode(payload["n"])
        # One payload, one string: refuse padded or re-ordered encodings of the same values.
        if make_challenge(verification_id, action, expires_at, nonce) != challenge:
            return None
    except (ValueError, TypeError, RecursionError):
        return None
    return {
        "verification_id": verification_id,
        "action": action,
        "expires_at": expires_at,
        "nonce": nonce,
    }


@functools.lru_cache(maxsize=4096)
def _parsed_key(pem: str, alg: str) -> PublicKey:
    """``load_public_key``, parsed once per key (key objects are immutable; errors not cached)."""
    return load_public_key(pem, alg)


def verify_signature(public_key_pem: str, alg: str, challenge: str, signature_b64url: str) -> bool:
    """Return whether ``signature_b64url`` is the device's signature of ``challenge``.

    The signed message is the UTF-8 bytes of the challenge string. The signature is base64url,
    padded or not: DER ECDSA with SHA-256 for ES256, raw 64 bytes for EdDSA (RFC 8032 §5.1.6),
    raw ``r ‖ s`` of SM2-with-SM3 with the default user ID for SM2 (GM/T 0009).
    Any bad key, encoding, length or signature is False; this never raises.
    """
    try:
        key = _parsed_key(public_key_pem, alg)
        signature = _b64url_decode(signature_b64url)
        message = challenge.encode("utf-8")
        if isinstance(key, bytes):
            return sm2.verify(key, message, signature)
        if isinstance(key, ed25519.Ed25519PublicKey):
            if len(signature) != 64:
                return False
            key.verify(signature, message)
        else:
            key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidRequest, InvalidSignature, ValueError, TypeError, AttributeError):
        return False
    return True


def raw_to_der(sig: bytes) -> bytes:
    """Convert a raw 64-byte r||s P-256 signature (as WebCrypto returns) to DER."""
    if len(sig) != 64:
        raise ValueError("a raw P-256 signature is 64 bytes (r || s)")
    r = int.from_bytes(sig[:32], "big")
    s = int.from_bytes(sig[32:], "big")
    return encode_dss_signature(r, s)


def prepare(port: FactorPort, factor_id: str, body: Mapping[str, Any]) -> Prepared:
    """A device key is active at once: its public key, normalised."""
    pem, alg = body.get("public_key"), body.get("alg")
    if not isinstance(pem, str) or alg not in ALGORITHMS:
        raise InvalidRequest("a device factor needs 'public_key' (PEM) and 'alg' ES256|EdDSA|SM2")
    return Prepared(normalize_pem(pem, alg), alg=alg)


def issue_challenge(port: FactorPort, record: Verification, subject: Subject) -> Issued:
    """A single-use challenge binding a 256-bit nonce, the verification, action and expiry
    (RFC 9449-style; ASVS 6.7.2)."""
    expires = min(port.now + CHALLENGE_TTL, record.expires_at)
    text = make_challenge(record.id, record.action, int(expires.timestamp()), new_nonce())
    port.add_challenge(record.id, "device", text, expires)
    return Issued({"factor": "device", "challenge": text, "expires_at": rfc3339(expires)})


def verify(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """A signature by the named device key over one of this verification's live challenges."""
    bound = next((f for f in attempt.candidates if f.id == proof["factor_id"]), None)
    if bound is None:
        return Check(False)
    pem = port.open(bound)
    for challenge_id, text in attempt.live:
        if verify_signature(pem, bound.alg or "", text, proof["signature"]):
            return Check(True, uses_challenge(challenge_id))
    return Check(False)


SPEC = FactorSpec(
    name="device",
    phone_bound=True,  # THREATS.md T1: the key is in the phone's app
    challenge="nonce",
    proof_fields=fields(factor_id=Input(str, 64), signature=Input(str, 1024)),
    amr=("swk",),  # RFC 8176 §2: a key held in software by the user's app
    replay="the challenge row it signed, used once (RFC 9449-style)",
    stores="the public key (PEM SubjectPublicKeyInfo) and its algorithm",
    enrol_fields=fields(public_key=Input(str, 4096), alg=Input(str, choices=ALGORITHMS)),
    challenge_fields=fields(challenge=Input(str, description="device: the text to sign")),
    verify=verify,
    prepare=prepare,
    issue_challenge=issue_challenge,
)
