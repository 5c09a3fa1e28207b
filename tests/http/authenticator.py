"""A software WebAuthn authenticator for the tests: real responses, built by hand.

It does what a browser and a platform or roaming authenticator do together: attestation
``none`` registration responses (RegistrationResponseJSON) and assertions signed with an EC P-256
key (AuthenticationResponseJSON), per WebAuthn Level 2 §6.1 (authenticator data), §6.5.4
(attested credential data), §5.8.1 (client data) and §8.7 (none attestation). CBOR comes from
``cbor2`` (a dependency of py_webauthn); the COSE key is RFC 9053 EC2 (kty 2, alg -7, crv 1).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
from dataclasses import dataclass, field

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40  # authenticator data flags (§6.1)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class Authenticator:
    """One credential on one authenticator.

    ``uv``: it verifies the user (PIN, biometrics); ``synced``: backup-eligible and backed up
    (a synced passkey, BE and BS set); ``counter``: it keeps a signature counter (synced
    passkeys typically send 0).
    """

    origin: str
    rp_id: str
    uv: bool = True
    synced: bool = False
    counter: bool = True
    key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    credential_id: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    sign_count: int = 0
    user_handle: str = ""

    def _flags(self, extra: int = 0, uv: bool | None = None) -> int:
        flags = UP | extra
        if self.uv if uv is None else uv:
            flags |= UV
        if self.synced:
            flags |= BE | BS
        return flags

    def _cose_key(self) -> bytes:
        numbers = self.key.public_key().public_numbers()
        return cbor2.dumps(
            {
                1: 2,
                3: -7,
                -1: 1,
                -2: numbers.x.to_bytes(32, "big"),
                -3: numbers.y.to_bytes(32, "big"),
            }
        )

    def _client_data(self, kind: str, challenge: str, origin: str | None) -> bytes:
        return json.dumps(
            {
                "type": kind,
                "challenge": challenge,
                "origin": origin or self.origin,
                "crossOrigin": False,
            }
        ).encode()

    def create(self, options: dict, *, origin: str | None = None, rp_id: str | None = None) -> dict:
        """``navigator.credentials.create()`` on these creation options, as JSON."""
        self.user_handle = options["user"]["id"]
        rp_hash = hashlib.sha256((rp_id or options["rp"]["id"]).encode()).digest()
        counter = 1 if self.counter else 0
        attested = (
            b"\x00" * 16  # AAGUID: none attestation may zero it (§6.5.1)
            + struct.pack(">H", len(self.credential_id))
            + self.credential_id
            + self._cose_key()
        )
        auth_data = rp_hash + bytes([self._flags(AT)]) + struct.pack(">I", counter) + attested
        self.sign_count = counter
        attestation = cbor2.dumps({"fmt": "none", "attStmt": {}, "authData": auth_data})
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(
                    self._client_data("webauthn.create", options["challenge"], origin)
                ),
                "attestationObject": b64url(attestation),
                "transports": ["internal", "hybrid"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }

    def get(
        self,
        options: dict,
        *,
        origin: str | None = None,
        rp_id: str | None = None,
        uv: bool | None = None,
        sign_count: int | None = None,
        challenge: str | None = None,
    ) -> dict:
        """``navigator.credentials.get()`` on these request options, as JSON (the counter goes
        up by one unless ``sign_count`` says otherwise, e.g. a clone replaying an old value)."""
        if sign_count is None and self.counter:
            self.sign_count += 1
        count = sign_count if sign_count is not None else (self.sign_count if self.counter else 0)
        rp_hash = hashlib.sha256((rp_id or options["rpId"]).encode()).digest()
        auth_data = rp_hash + bytes([self._flags(uv=uv)]) + struct.pack(">I", count)
        client_data = self._client_data("webauthn.get", challenge or options["challenge"], origin)
        signature = self.key.sign(
            auth_data + hashlib.sha256(client_data).digest(), ec.ECDSA(hashes.SHA256())
        )
        return {
            "id": b64url(self.credential_id),
            "rawId": b64url(self.credential_id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data),
                "authenticatorData": b64url(auth_data),
                "signature": b64url(signature),
                "userHandle": self.user_handle,
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        }
