"""SM2 assertions for ``AssertionVerifier``: idv's ``gm`` profile (``pip install './client[gm]'``).

No JOSE ``alg`` is registered for SM2, so PyJWT cannot verify these itself. idv's contract
(API.md, "Commercial-cryptography profile") fixes the form: header ``alg: "SM2"``; signature
SM2 with SM3 and the default user ID ``1234567812345678`` (GB/T 32918, GM/T 0009) over the JWS
signing input, raw ``r ‖ s`` (64 bytes) base64url; JWKS entry ``{"kty": "EC", "crv": "SM2",
"x", "y", "kid", "alg": "SM2", "use": "sig"}``. This module checks the signature and hands
the claims to PyJWT with the same claim checks as every other algorithm.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import jwt

ALG = "SM2"
DEFAULT_USER_ID = b"1234567812345678"  # GM/T 0009-2012 §10

try:
    from gmalglib import sm2 as _gm_sm2
except ImportError:  # the gm extra is not installed: SM2 is simply not offered
    _gm_sm2 = None

AVAILABLE = _gm_sm2 is not None


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class SM2Key:
    """An SM2 public key from idv's JWKS (the duck type of ``jwt.PyJWK`` the verifier uses)."""

    key: Any
    key_id: str
    algorithm_name: str = ALG


def key_from_jwk(entry: dict[str, Any]) -> SM2Key | None:
    """An ``SM2Key`` for an SM2 JWK when the gm extra is installed; None otherwise."""
    if _gm_sm2 is None or entry.get("kty") != "EC" or entry.get("crv") != "SM2":
        return None
    if entry.get("alg", ALG) != ALG:
        return None
    try:
        x, y = _b64url_decode(entry["x"]), _b64url_decode(entry["y"])
        if len(x) != 32 or len(y) != 32 or not _gm_sm2.SM2.is_pk_valid(b"\x04" + x + y):
            return None
        # Parsed once per JWKS fetch: every verification reuses the key object.
        return SM2Key(key=_gm_sm2.SM2(pk=b"\x04" + x + y, uid=DEFAULT_USER_ID), key_id=entry["kid"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None


def decode(token: str, key: Any, **kwargs: Any) -> dict[str, Any]:
    """``jwt.decode`` for SM2: the same keyword arguments, the same exceptions. The signature is
    checked here; ``exp``, ``iat``, ``aud``, ``iss`` and required claims by PyJWT."""
    if key is None or not hasattr(key, "verify"):
        raise jwt.InvalidKeyError("not an SM2 key")
    try:
        signing_input, _, signature = token.rpartition(".")
        message = signing_input.encode("ascii")
        sig = _b64url_decode(signature)
    except (ValueError, binascii.Error):  # UnicodeEncodeError is a ValueError
        raise jwt.DecodeError("malformed signature") from None
    if len(sig) != 64 or not key.verify(message, sig):
        raise jwt.InvalidSignatureError("Signature verification failed")
    options: Any = {
        "verify_signature": False,  # done above; every claim check stays on
        "verify_exp": True,
        "verify_iat": True,
        "verify_nbf": True,
        "verify_aud": True,
        "verify_iss": True,
        **kwargs.pop("options", {}),
    }
    kwargs.pop("algorithms", None)
    return jwt.decode(token, options=options, **kwargs)
