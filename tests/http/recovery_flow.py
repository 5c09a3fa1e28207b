"""Helpers for the recovery-code and attested-proofing suites: a test policy whose actions offer
the new factors (written by the test, independent of the default policy's actions), a tenant's
attestation signer, and the CLI that registers its key."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import jwt
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from service.cli import cli
from service.settings import packaged_policy_file

# The shapes of API.md's Recovery actions, under test names: the other branch defines the
# real ones; these suites only need options made of the new factors.
TEST_ACTIONS = """
[actions.test_recover]
description = "test: lost phone (PIN, recovery codes, the tenant's own check)"
acr = "aal2"
sensitive = true
options = [["knowledge", "recovery_code"], ["knowledge", "attested"], ["recovery_code", "attested"]]

[actions.test_codes]
description = "test: a recovery code alone"
acr = "aal1"
options = [["recovery_code"]]

[actions.test_attest]
description = "test: an attestation alone"
acr = "aal1"
options = [["attested"]]
"""


def settings_with_test_actions(settings, tmp_path, extra: str = ""):
    """``settings`` whose policy is the default one plus ``TEST_ACTIONS`` (and ``extra``)."""
    path = tmp_path / "policy.toml"
    path.write_text(packaged_policy_file().read_text() + TEST_ACTIONS + extra)
    return replace(settings, policy_file=path)


def register_key(settings, client_id: str, pem: str, tmp_path):
    """``idv clients attestation-key CLIENT_ID PEM_FILE``, as an operator would run it."""
    pem_file = tmp_path / f"att-{time.monotonic_ns()}.pem"
    pem_file.write_text(pem)
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
        "IDV_POLICY_FILE": str(settings.policy_file),
    }
    return CliRunner().invoke(
        cli, ["clients", "attestation-key", client_id, str(pem_file)], env=env
    )


@dataclass
class Tenant:
    """A tenant's back office holding an attestation key."""

    client_id: str
    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    kid: str = ""
    issuer: str = "idv"  # idv's IDV_ISSUER: the attestation's audience

    @classmethod
    def new(cls, client_id: str, alg: str = "ES256") -> Tenant:
        key = (
            ec.generate_private_key(ec.SECP256R1())
            if alg == "ES256"
            else ed25519.Ed25519PrivateKey.generate()
        )
        return cls(client_id, key)

    @property
    def alg(self) -> str:
        return "ES256" if isinstance(self.key, ec.EllipticCurvePrivateKey) else "EdDSA"

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def attest(
        self, subject: str, verification_id: str, method: str = "face", jti: str = "", **claims
    ) -> str:
        body = {
            "iss": self.client_id,
            "aud": self.issuer,
            "sub": subject,
            "verification_id": verification_id,
            "method": method,
            "iat": int(time.time()),
            "jti": jti or f"att-{time.monotonic_ns()}",
        } | claims
        headers = {"typ": "idv-attestation+jwt", "kid": self.kid}
        return jwt.encode(body, self.key, algorithm=self.alg, headers=headers)


def client_id_of(http, auth) -> str:
    return http.get("/v1/client", headers=auth).json["client_id"]


def audit_rows(ctx, event: str) -> list:
    """The audit entries of one event, oldest first."""
    from sqlalchemy import select

    from service.storage.tables import audit_log

    with ctx.engine.connect() as conn:
        return list(
            conn.execute(
                select(audit_log).where(audit_log.c.event == event).order_by(audit_log.c.id)
            )
        )
