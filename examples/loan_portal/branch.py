"""A DEMO STAND-IN for the tenant's own check of the person (API.md, Recovery, "Attested
proofing"): a real loan platform would compare the face at a branch or in its app against the
ID photo and only then sign an attestation. Here a button signs one at once, with a key the
portal generates at start-up and registers through ``idv clients attestation-key``.

Never ship this: anyone who can press the button "passes" the check. It exists so that the
recovery pages can be tried without a branch.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

RunIdv = Callable[[list[str]], subprocess.CompletedProcess]


@dataclass(frozen=True)
class DemoBranch:
    """The tenant's back office that signs ``idv-attestation+jwt`` tokens (ES256)."""

    client_id: str
    key: ec.EllipticCurvePrivateKey
    kid: str
    audience: str = "idv"  # idv's IDV_ISSUER

    def attest(self, subject_id: str, verification_id: str, method: str = "face") -> str:
        """A fresh attestation that the person of ``subject_id`` passed ``method`` just now,
        bound to one verification; ``jti`` is random so idv accepts it once."""
        claims = {
            "iss": self.client_id,
            "aud": self.audience,
            "sub": subject_id,
            "verification_id": verification_id,
            "method": method,
            "iat": int(time.time()),
            "jti": secrets.token_urlsafe(16),
        }
        headers = {"typ": "idv-attestation+jwt", "kid": self.kid}
        return jwt.encode(claims, self.key, algorithm="ES256", headers=headers)


def register_demo_branch(run_idv: RunIdv, client_id: str, workdir: Path) -> DemoBranch:
    """Generate a P-256 key, register its public half for ``client_id`` with the CLI (``run_idv``
    runs ``idv`` with the given arguments against the portal's idv) and return the signer."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem_file = workdir / "demo-branch.pem"
    pem_file.write_bytes(pem)
    done = run_idv(["clients", "attestation-key", client_id, str(pem_file)])
    if done.returncode != 0:
        raise RuntimeError("idv clients attestation-key failed: " + done.stderr.strip())
    return DemoBranch(client_id, key, done.stdout.strip().splitlines()[-1])
