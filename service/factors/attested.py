"""Attested proofing: a tenant vouches, with a short JWS, that it checked the person itself.

The tenant compared the face with the ID photo, read the national network identity credential,
checked an ID document or saw the person in front of a counter (``method``), and signs that with a
key it registered (``idv clients attestation-key``). Pure: no framework, no storage; the clock is
passed in.

RFC 8725: an explicit algorithm list matched to the key's own algorithm (never ``none``, never an
algorithm named by the token alone), explicit typing (``typ: idv-attestation+jwt``, so an
assertion or any other JWT of the tenant cannot pass for one), the key chosen by ``kid`` among
the tenant's own keys only, and ``iss``/``aud`` always checked. The token is bound to one
subject and one verification, fresh (``iat``), and single-use per tenant (``jti``, recorded by
the caller in the proof's transaction).
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeGuard

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from service.domain.errors import InvalidRequest
from service.domain.policy import attestation_counts
from service.domain.policy_file import ATTESTED_METHODS
from service.factors import device
from service.factors.ports import Attempt, Check, FactorPort
from service.factors.spec import FactorSpec, Input, fields

TYP = "idv-attestation+jwt"
ALGORITHMS = device.ALGORITHMS  # ES256, EdDSA: the same keys a device may hold
MAX_AGE_SECONDS = 300  # iat at most 5 minutes old ...
MAX_AHEAD_SECONDS = 60  # ... and at most a minute ahead (the tenant's clock may run fast)
MAX_JTI = 128
MAX_TOKEN = 8192
METHODS = ATTESTED_METHODS
# An accepted attestation adds the ``amr`` value of its method where RFC 8176 registers one
# (§2 "face": facial recognition), and nothing otherwise.
METHOD_AMR = {"face": "face"}


@dataclass(frozen=True)
class TenantKey:
    """One registered public key of a tenant."""

    kid: str
    alg: str
    public_pem: str


@dataclass(frozen=True)
class Attestation:
    """What an accepted attestation says: how the person was checked, and its single-use id."""

    method: str
    jti: str
    iat: float


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def parse_public_key(pem: str) -> TenantKey:
    """A tenant's PEM SubjectPublicKeyInfo as a ``TenantKey``: its algorithm read from the key
    (P-256 → ES256, Ed25519 → EdDSA), canonical PEM, and ``kid`` its RFC 7638 thumbprint, so
    registering the same key twice names it the same. ``InvalidRequest`` for anything else."""
    try:
        loaded = serialization.load_pem_public_key(pem.encode("utf-8"))
    except (ValueError, TypeError, UnicodeError, AttributeError):
        raise InvalidRequest("not a PEM public key (ES256 on P-256, or EdDSA on Ed25519)") from None
    if isinstance(loaded, ed25519.Ed25519PublicKey):
        alg = "EdDSA"
        raw = loaded.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        members: dict[str, str] = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
    elif isinstance(loaded, ec.EllipticCurvePublicKey) and isinstance(loaded.curve, ec.SECP256R1):
        alg = "ES256"
        numbers = loaded.public_numbers()
        members = {
            "crv": "P-256",
            "kty": "EC",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
    else:
        raise InvalidRequest("an attestation key is ES256 (P-256) or EdDSA (Ed25519)")
    # RFC 7638 §3: the required members, sorted, no whitespace, SHA-256.
    canonical = json.dumps(members, sort_keys=True, separators=(",", ":")).encode()
    kid = _b64url(hashlib.sha256(canonical).digest())
    return TenantKey(kid, alg, device.normalize_pem(pem, alg))


def _number(value: Any) -> TypeGuard[int | float]:
    """A JSON number (RFC 7519 NumericDate), and not a boolean."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def verify(
    token: str,
    keys: Iterable[TenantKey],
    *,
    client_id: str,
    audience: str,
    subject: str,
    verification_id: str,
    now: datetime,
) -> Attestation | None:
    """The attestation ``token`` carries, or None when it does not hold. Never raises.

    ``keys`` are the presenting tenant's own keys; ``client_id`` must be its ``iss``,
    ``audience`` (idv's ``IDV_ISSUER``) its ``aud``, ``subject`` its ``sub`` and
    ``verification_id`` its ``verification_id``. ``iat`` must lie within 300 s before and
    60 s after ``now``; ``exp`` and ``nbf``, when present, hold at ``now``.
    """
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN:
        return None
    try:
        header = jwt.get_unverified_header(token)
        typ, kid = header.get("typ"), header.get("kid")
        if not isinstance(typ, str) or typ.lower() != TYP or not isinstance(kid, str):
            return None
        key = next((k for k in keys if k.kid == kid), None)
        # RFC 8725 §3.1: the key decides the algorithm; the token's header only has to agree.
        if key is None or key.alg not in ALGORITHMS or header.get("alg") != key.alg:
            return None
        claims = jwt.decode(
            token,
            device.load_public_key(key.public_pem, key.alg),
            algorithms=[key.alg],
            audience=audience,
            issuer=client_id,
            # Times are checked below against the clock passed in, not PyJWT's own.
            options={
                "require": ["iss", "aud", "sub", "iat", "jti"],
                "verify_iat": False,
                "verify_exp": False,
                "verify_nbf": False,
            },
        )
    except (jwt.PyJWTError, InvalidRequest, ValueError, TypeError, KeyError, AttributeError):
        return None
    return _claims(claims, subject, verification_id, now.timestamp())


def _claims(
    claims: dict[str, Any], subject: str, verification_id: str, now: float
) -> Attestation | None:
    """The binding, freshness and shape checks of a signed attestation's claims."""
    iat, jti, method = claims.get("iat"), claims.get("jti"), claims.get("method")
    if claims.get("sub") != subject or claims.get("verification_id") != verification_id:
        return None
    if not isinstance(method, str) or method not in METHODS:
        return None
    if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI:
        return None
    if not _number(iat) or not -MAX_AHEAD_SECONDS <= now - iat <= MAX_AGE_SECONDS:
        return None
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if exp is not None and (not _number(exp) or exp <= now):
        return None
    if nbf is not None and (not _number(nbf) or nbf > now):
        return None
    return Attestation(method, jti, float(iat))


def check_proof(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """A tenant's attestation, signed by one of its own keys and bound to this subject and
    verification; it counts only when its method completes some option (API.md, Recovery)."""
    record = attempt.record
    found = verify(
        proof["attestation"],
        port.tenant_keys(),
        client_id=record.client_id,
        audience=port.issuer,
        subject=attempt.subject.subject_id,
        verification_id=record.id,
        now=port.now,
    )
    rules = port.policy.action(record.action)
    if found is None or not attestation_counts(rules, attempt.options, found.method):
        return Check(False)
    return Check(
        True,
        lambda p: p.use_jti(found.jti),
        method=found.method,
        amr=(METHOD_AMR[found.method],) if found.method in METHOD_AMR else (),
    )


SPEC = FactorSpec(
    name="attested",
    phone_bound=False,  # the person's face or presence in front of the tenant
    challenge=None,
    proof_fields=fields(
        attestation=Input(
            str, 8192, description="attested: the tenant's JWS (typ idv-attestation+jwt)"
        )
    ),
    amr=(),  # the method's value (``face``) is added per proof, where RFC 8176 registers one
    replay="the token's jti, accepted once per tenant",
    stores="nothing per subject; the tenant's public keys (idv clients attestation-key)",
    enrollable=False,
    verify=check_proof,
    tenant_keyed=True,
)
