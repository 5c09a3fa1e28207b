"""SM2 keys and signatures (GB/T 32918, GM/T 0003; encodings of GM/T 0009 / GB/T 35276).

Signatures are SM2 with SM3 over ``Z_A ‖ M`` with the default user ID ``1234567812345678``
(GM/T 0009-2012 §10, GB/T 35276-2017 §5.4), encoded as raw ``r ‖ s`` (64 bytes), as the
``SM2`` algorithm of API.md. The arithmetic is ``gmalglib`` (C, no dependencies; the ``gm``
extra; README says why this one), imported lazily so the ``intl`` profile never needs it.

Keys travel in the standard DER containers with the SM2 curve OID 1.2.156.10197.1.301 under
id-ecPublicKey (GB/T 35276-2017 §7, RFC 5480 layout): SubjectPublicKeyInfo for public keys and
PKCS#8 for the private key in the key file. pyca/cryptography has no SM2 curve, so the two
fixed layouts are built and checked here byte for byte; anything else is refused.
"""

from __future__ import annotations

import base64
import functools
import re
from typing import Any

DEFAULT_USER_ID = b"1234567812345678"  # GM/T 0009-2012 §10
SIGNATURE_BYTES = 64
ALG = "SM2"
CURVE = "SM2"  # the JWK "crv" of API.md

# DER: SEQUENCE { OID id-ecPublicKey 1.2.840.10045.2.1, OID sm2p256v1 1.2.156.10197.1.301 }
_ALGORITHM_ID = bytes.fromhex("301306072a8648ce3d020106082a811ccf5501822d")
# SubjectPublicKeyInfo: SEQUENCE(0x59) { algorithm, BIT STRING(0x42) { 0 unused, 04 X Y } }
_SPKI_PREFIX = bytes.fromhex("3059") + _ALGORITHM_ID + bytes.fromhex("034200") + b"\x04"
# PKCS#8 PrivateKeyInfo { 0, algorithm, OCTET STRING { ECPrivateKey { 1, d, [1] public } } }
_P8_PREFIX = bytes.fromhex("308187020100") + _ALGORITHM_ID + bytes.fromhex("046d306b0201010420")
_P8_MIDDLE = bytes.fromhex("a144034200") + b"\x04"

_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END \1-----\s*")


class SM2KeyError(ValueError):
    """Not an SM2 key in the expected container."""


def _pem(label: str, der: bytes) -> str:
    body = base64.encodebytes(der).decode("ascii").replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return f"-----BEGIN {label}-----\n" + "\n".join(lines) + f"\n-----END {label}-----\n"


def _unpem(text: str, label: str) -> bytes:
    match = _PEM.fullmatch(text.strip() + "\n") if isinstance(text, str) else None
    if match is None or match.group(1) != label:
        raise SM2KeyError(f"not a PEM {label}")
    try:
        return base64.b64decode("".join(match.group(2).split()), validate=True)
    except ValueError:
        raise SM2KeyError(f"not a PEM {label}") from None


def public_pem(public: bytes) -> str:
    """SubjectPublicKeyInfo PEM of a 64-byte ``X ‖ Y`` public key."""
    if len(public) != 64:
        raise SM2KeyError("an SM2 public key is 64 bytes (X ‖ Y)")
    return _pem("PUBLIC KEY", _SPKI_PREFIX + public)


def public_from_pem(pem: str) -> bytes:
    """``X ‖ Y`` from a SubjectPublicKeyInfo PEM on the SM2 curve; SM2KeyError otherwise."""
    der = _unpem(pem, "PUBLIC KEY")
    if len(der) != len(_SPKI_PREFIX) + 64 or not der.startswith(_SPKI_PREFIX):
        raise SM2KeyError("not an SM2 SubjectPublicKeyInfo (curve OID 1.2.156.10197.1.301)")
    return der[len(_SPKI_PREFIX) :]


def private_pem(secret: bytes, public: bytes) -> str:
    """PKCS#8 PEM of a private scalar (32 bytes) with its public key."""
    if len(secret) != 32 or len(public) != 64:
        raise SM2KeyError("an SM2 private key is 32 bytes and its public key 64")
    return _pem("PRIVATE KEY", _P8_PREFIX + secret + _P8_MIDDLE + public)


def private_from_pem(pem: str) -> tuple[bytes, bytes]:
    """(scalar, ``X ‖ Y``) from a PKCS#8 PEM written by :func:`private_pem`."""
    der = _unpem(pem, "PRIVATE KEY")
    if (
        len(der) != len(_P8_PREFIX) + 32 + len(_P8_MIDDLE) + 64
        or not der.startswith(_P8_PREFIX)
        or der[len(_P8_PREFIX) + 32 : len(_P8_PREFIX) + 32 + len(_P8_MIDDLE)] != _P8_MIDDLE
    ):
        raise SM2KeyError("not an SM2 PKCS#8 private key")
    secret = der[len(_P8_PREFIX) : len(_P8_PREFIX) + 32]
    return secret, der[-64:]


def _lib() -> Any:
    from gmalglib import sm2 as gm_sm2

    return gm_sm2


def generate() -> tuple[bytes, bytes]:
    """A fresh key pair: (32-byte scalar, 64-byte ``X ‖ Y``)."""
    secret, public = _lib().SM2().generate_keypair()
    return bytes(secret), bytes(public)[-64:]


class Signer:
    """A private key parsed once: every assertion of a process reuses its key object."""

    def __init__(self, pem: str) -> None:
        secret, public = private_from_pem(pem)
        self.public = public
        self._key = _lib().SM2(secret, uid=DEFAULT_USER_ID)

    def sign(self, message: bytes) -> bytes:
        """Raw ``r ‖ s`` of SM2-with-SM3 over ``message`` with the default user ID."""
        return bytes(self._key.sign(message))


@functools.lru_cache(maxsize=4096)
def _verifier(public: bytes) -> Any:
    """A public key object per key, parsed once (the point is checked on the curve here)."""
    return _lib().SM2(pk=b"\x04" + public, uid=DEFAULT_USER_ID)


def is_valid_public(public: bytes) -> bool:
    """Whether ``X ‖ Y`` is a point of the SM2 curve (checked at enrolment, not per proof)."""
    return len(public) == 64 and bool(_lib().SM2.is_pk_valid(b"\x04" + public))


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    """Whether ``signature`` (raw ``r ‖ s``) is SM2-with-SM3 of ``message`` by ``public``."""
    if len(signature) != SIGNATURE_BYTES or len(public) != 64:
        return False
    try:
        return bool(_verifier(public).verify(message, signature))
    except Exception:  # noqa: BLE001 - a key off the curve or a malformed signature is a no
        return False


def jwk(public: bytes) -> dict[str, str]:
    """The JWK members of API.md: ``kty: EC``, ``crv: SM2``, ``x``, ``y`` (base64url)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")

    return {"kty": "EC", "crv": CURVE, "x": b64(public[:32]), "y": b64(public[32:])}
