"""Signed assertions: the JWT a satisfied verification yields (API.md, Assertions).

RFC 8725: explicit algorithm list, explicit ``typ``, ``kid`` in the header, ``iss``/``aud``/
``exp`` always checked. RFC 8176: ``amr`` values. RFC 7517: the JWKS publishes current and
previous public keys.
"""

from __future__ import annotations

import base64
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from service.crypto import sm2
from service.crypto.keyring import KeyRing, SigningKey
from service.domain import jsontext
from service.domain.errors import StepUpRequired

TYP = "idv-assertion+jwt"
ALGORITHMS = ("ES256", "EdDSA", sm2.ALG)
# RFC 8176 §2 "user": a user-presence/verification test; it says how a factor was used, so it
# does not by itself make an authentication multi-factor.
_NOT_A_FACTOR = frozenset({"user"})


def amr_for(values: Iterable[str]) -> list[str]:
    """The ``amr`` claim from the RFC 8176 values the accepted factors contributed (each
    factor's values come from its module's ``SPEC``), with ``mfa`` for two or more."""
    ordered = sorted(set(values))
    kinds = [v for v in ordered if v not in _NOT_A_FACTOR]
    return ordered + ["mfa"] if len(kinds) > 1 else ordered


def issue(
    keys: KeyRing,
    *,
    issuer: str,
    audience: str,
    subject: str,
    action: str,
    acr: str,
    amr: Sequence[str],
    auth_time: datetime,
    now: datetime,
    ttl: int,
    jti: str,
) -> str:
    """Sign an assertion with the active signing key."""
    key = keys.active_signing_key
    iat = int(now.timestamp())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "action": action,
        "acr": acr,
        "amr": amr_for(amr),
        "auth_time": int(auth_time.timestamp()),
        "iat": iat,
        "exp": iat + min(ttl, 300),
        "jti": jti,
    }
    if key.alg == sm2.ALG:
        # API.md: header ``alg: "SM2"`` (no JOSE name is registered): SM2-with-SM3, default
        # user ID, raw ``r ‖ s`` (GM/T 0009).
        return _compact(key, claims, key.sm2_signer().sign)
    private = key.private_key()
    return _compact(key, claims, lambda message: _JOSE[key.alg].sign(message, private))


# PyJWT's own signers (RFC 7518 §3.4: ES256's raw ``r ‖ s``; RFC 8037: EdDSA), used directly:
# ``jwt.encode`` around them re-validated and re-serialised a header that never changes, a
# seventh of a TOTP proof's Python (issue 24). tests/unit/test_assertions.py holds the output
# to ``jwt.encode``'s, byte for byte.
_JOSE = {"ES256": ECAlgorithm(ECAlgorithm.SHA256), "EdDSA": OKPAlgorithm()}
_CLAIMS_JSON = jsontext.compact()  # what jwt.encode writes claims with
_HEADER_JSON = jsontext.compact(sort_keys=True)  # and headers


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


@functools.lru_cache(maxsize=32)
def _header(alg: str, kid: str) -> str:
    """The protected header of a key's assertions, encoded once (RFC 8725 §3.11: ``typ``)."""
    return _b64url(_HEADER_JSON({"alg": alg, "kid": kid, "typ": TYP}).encode())


def _compact(key: SigningKey, claims: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """The JWS compact serialisation (RFC 7515 §7.1) of ``claims`` under ``key``."""
    payload = _b64url(_CLAIMS_JSON(claims).encode())
    signing_input = f"{_header(key.alg, key.kid)}.{payload}"
    return f"{signing_input}.{_b64url(sign(signing_input.encode('ascii')))}"


def _decode_sm2(key: SigningKey, token: str) -> dict[str, Any]:
    """The claims of an SM2 assertion whose signature verifies; ``jwt.InvalidTokenError``
    otherwise (claims are then checked like any other assertion's)."""
    try:
        signing_input, _, signature = token.rpartition(".")
        message = signing_input.encode("ascii")
        payload = signing_input.split(".")[1]
        sig = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (ValueError, IndexError):  # binascii.Error and UnicodeError are ValueErrors
        raise jwt.InvalidTokenError("malformed SM2 assertion") from None
    if not sm2.verify(key.sm2_signer().public, message, sig):
        raise jwt.InvalidSignatureError("SM2 signature does not verify")
    if not isinstance(claims, dict):
        raise jwt.InvalidTokenError("claims are not an object")
    return claims


def public_jwk(key: SigningKey) -> dict[str, Any]:
    """The public JWK of a signing key, with ``kid``, ``alg`` and ``use``."""
    if key.alg == sm2.ALG:  # API.md: {"kty": "EC", "crv": "SM2", "x", "y", "kid", "alg", "use"}
        return {**sm2.jwk(key.sm2_signer().public), "kid": key.kid, "alg": key.alg, "use": "sig"}
    public = key.private_key().public_key()
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = json.loads(ECAlgorithm.to_jwk(public))
    else:
        jwk = json.loads(OKPAlgorithm.to_jwk(public))
    jwk.update({"kid": key.kid, "alg": key.alg, "use": "sig"})
    return jwk


def jwks(keys: KeyRing) -> dict[str, list[dict[str, Any]]]:
    """RFC 7517 key set: every key still listed in the key ring (current and previous)."""
    return {"keys": [public_jwk(k) for k in keys.signing_keys]}


def verify(
    keys: KeyRing,
    token: str,
    *,
    issuer: str,
    audience: str,
    subject: str,
    action: str,
    now: datetime,
) -> dict[str, Any]:
    """Check an assertion handed back to idv; raise ``StepUpRequired`` when it does not hold.

    Checks signature (explicit algorithms, ``kid`` known), ``typ``, ``iss``, ``aud``, ``exp``,
    ``sub`` and ``action`` (RFC 8725 §3.1, §3.8, §3.11). Single use is the caller's job.
    """
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise StepUpRequired(f"a valid {action} assertion is required") from None
    by_kid = {k.kid: k for k in keys.signing_keys}
    key = by_kid.get(header.get("kid", ""))
    if key is None or header.get("typ") != TYP or header.get("alg") != key.alg:
        raise StepUpRequired(f"a valid {action} assertion is required")
    required = ["exp", "iat", "jti", "sub", "aud", "iss"]
    try:
        if key.alg == sm2.ALG:
            claims = _decode_sm2(key, token)
            if any(claims.get(name) is None for name in required):
                raise jwt.MissingRequiredClaimError("a required claim")
            if claims["iss"] != issuer or claims["aud"] != audience:
                raise jwt.InvalidTokenError("wrong iss or aud")
            if not isinstance(claims["exp"], int):
                raise jwt.InvalidTokenError("exp is not a number")
        else:
            claims = jwt.decode(
                token,
                key.private_key().public_key(),
                algorithms=[key.alg],
                audience=audience,
                issuer=issuer,
                options={"require": required, "verify_iat": False},
                leeway=0,
            )
    except jwt.PyJWTError:
        raise StepUpRequired(f"a valid, unexpired {action} assertion is required") from None
    if claims["exp"] <= now.timestamp():
        raise StepUpRequired(f"the {action} assertion has expired")
    if claims.get("sub") != subject or claims.get("action") != action:
        raise StepUpRequired(f"the assertion is not for {action} on this subject")
    return claims
