"""A whole step-up under ``IDV_CRYPTO_PROFILE=gm`` through the real stack (API.md,
"Commercial-cryptography profile"; GB/T 39786-2021 §8.4: identity authentication, and the
confidentiality and integrity of important data and logs).

Signatures are checked with ``gmalg``, a pure-Python SM2 that shares no code with the library
idv signs with, against the JWKS idv publishes.
"""

from __future__ import annotations

import base64
import functools
import json
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

import gmalg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from sqlalchemy import String, Text, select

from idv_client import AssertionVerifier
from idv_client.errors import AssertionInvalid
from service.crypto import profile, sm2
from service.crypto.keyring import KeyRing, write_key_file
from service.settings import Settings
from service.storage import audit
from service.storage.tables import clients, metadata
from tests.http.flow import PHONE, User


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verify_with_gmalg(token: str, jwks: dict) -> dict:
    """Check an SM2 assertion the way an independent relying party would; return its claims."""
    header_b64, payload_b64, signature_b64 = token.split(".")
    header = json.loads(_unb64(header_b64))
    assert header == {"alg": "SM2", "kid": header["kid"], "typ": "idv-assertion+jwt"}
    [jwk] = [k for k in jwks["keys"] if k["kid"] == header["kid"]]
    assert jwk == {
        "kty": "EC",
        "crv": "SM2",
        "x": jwk["x"],
        "y": jwk["y"],
        "kid": header["kid"],
        "alg": "SM2",
        "use": "sig",
    }
    public = b"\x04" + _unb64(jwk["x"]) + _unb64(jwk["y"])
    signature = _unb64(signature_b64)
    assert len(signature) == 64  # raw r ‖ s
    checker = gmalg.SM2(pk=public, uid=b"1234567812345678")
    signed = f"{header_b64}.{payload_b64}".encode()
    assert checker.verify(signed, signature[:32], signature[32:])
    return json.loads(_unb64(payload_b64))


@dataclass
class SM2Device:
    """A phone whose secure element holds an SM2 key (signed with the independent gmalg)."""

    secret: bytes
    public: bytes
    alg: str = "SM2"
    factor_id: str = ""

    @classmethod
    def new(cls) -> SM2Device:
        secret, public = gmalg.SM2().generate_keypair()
        return cls(secret, public[-64:])

    def public_pem(self) -> str:
        return sm2.public_pem(self.public)

    def sign(self, challenge: str) -> str:
        r, s = gmalg.SM2(sk=self.secret, uid=b"1234567812345678").sign(challenge.encode())
        return base64.urlsafe_b64encode(r + s).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key ring generated under the gm profile (SM4 data key, SM2 signing key)."""
    path = tmp_path_factory.mktemp("gmkeys") / "keys.json"
    write_key_file(path, KeyRing.generate(profile.GM))
    return path


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, crypto_profile=profile.GM)


def test_step_up_under_gm_yields_an_sm2_assertion_an_independent_sm2_verifies(
    user: User, http, auth, ctx
) -> None:
    user.add_totp()
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    assertion = user.step_up("payment_password_reset", ["totp", "knowledge"])
    jwks = http.get("/.well-known/jwks.json").json
    claims = verify_with_gmalg(assertion, jwks)
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    assert claims["sub"] == "alice" and claims["aud"] == client_id
    assert claims["action"] == "payment_password_reset" and claims["acr"] == "aal2"
    assert claims["amr"] == ["otp", "pin", "mfa"]
    assert claims["exp"] - claims["iat"] <= 300
    # idv_client (gm extra) checks it with the same claim checks as ES256.
    transport = httpx.WSGITransport(app=http.application)
    rp = AssertionVerifier("http://idv", client_id, http=httpx.Client(transport=transport))
    assert rp.verify(assertion, subject="alice", action="payment_password_reset")["sub"] == "alice"
    with pytest.raises(Exception, match="wrong_subject|another subject"):
        rp.verify(assertion, subject="bob", action="payment_password_reset")
    forged = assertion[:-4] + ("AAAA" if not assertion.endswith("AAAA") else "BBBB")
    with pytest.raises(Exception, match="signature"):
        rp.verify(forged, subject="alice", action="payment_password_reset")
    # idv consumes its own SM2 assertions (here as the enrolment gate of a new device).
    device = SM2Device.new()
    body = {"type": "device", "public_key": device.public_pem(), "alg": "SM2", "label": "SE"}
    assert user.enroll(body).status_code == 403  # no assertion: step_up_required
    enrol = user.step_up("enroll_factor", ["totp", "knowledge"])
    r = user.enroll({**body, "assertion": enrol})
    assert r.status_code == 201, r.json
    assert user.enroll({**body, "assertion": enrol}).status_code == 403  # accepted once


def test_sm2_device_binding_login(user: User) -> None:
    device = SM2Device.new()
    r = user.enroll({"type": "device", "public_key": device.public_pem(), "alg": "SM2"})
    assert r.status_code == 201, r.json
    device.factor_id = r.json["factor_id"]
    user.device = device  # type: ignore[assignment]
    vid = user.start("login").json["verification_id"]
    challenge = user.challenge(vid, "device").json["challenge"]
    wrong = SM2Device.new().sign(challenge)
    bad = user.prove(vid, {"factor": "device", "factor_id": device.factor_id, "signature": wrong})
    assert bad.status_code == 200 and bad.json["accepted"] is False
    vid = user.start("login").json["verification_id"]
    result = user.prove_factor(vid, "device")
    assert result.json["accepted"] and result.json["status"] == "satisfied", result.json


@pytest.mark.parametrize(
    "pem",
    [
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        sm2.public_pem(bytes(64)),  # not a point of the curve
    ],
)
def test_sm2_device_key_that_is_not_an_sm2_point_is_a_400(user: User, pem: str) -> None:
    r = user.enroll({"type": "device", "public_key": pem, "alg": "SM2"})
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_database_dump_holds_no_clear_phone_and_gm_hashes(user: User, http, auth, ctx) -> None:
    user.add_totp()
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    national = PHONE[3:]  # 13800138000
    found = []
    with ctx.engine.connect() as conn:
        for table in metadata.sorted_tables:
            columns = [c for c in table.c if isinstance(c.type, String | Text)]
            for row in conn.execute(select(*columns)) if columns else ():
                for column, value in zip(columns, row, strict=True):
                    if value and national in str(value):
                        found.append(f"{table.name}.{column.name}")
        key_hashes = set(conn.execute(select(clients.c.key_hash)).scalars())
        # GB/T 39786 §8.4: the audit trail verifies, and its entries are SM3 / HMAC-SM3.
        assert audit.verify_chain(conn, ctx.keys.derived_keys("audit-mac")) == []
        entries = audit.entries(conn)
    assert found == []
    assert entries and all(audit.entry_hash(e, profile.GM) == e["hash"] for e in entries)
    api_key = auth["Authorization"].split()[1]
    assert profile.sm3(api_key.encode()).hex() in key_hashes  # issued under gm: SM3


def test_jwks_lists_only_the_sm2_key_of_a_gm_key_ring(http) -> None:
    [key] = http.get("/.well-known/jwks.json").json["keys"]
    assert key["crv"] == "SM2" and key["alg"] == "SM2" and key["kty"] == "EC"
    assert len(_unb64(key["x"])) == len(_unb64(key["y"])) == 32


def test_malformed_sm2_assertions_are_refused_never_a_500(user: User, http, auth) -> None:
    user.add_totp()
    good = user.step_up("enroll_factor", ["totp"])
    head, payload, signature = good.split(".")
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    transport = httpx.WSGITransport(app=http.application)
    rp = AssertionVerifier("http://idv", client_id, http=httpx.Client(transport=transport))
    for bad in (
        f"{head}.{payload}.{signature}é",
        f"{head}.{payload}é.{signature}",
        f"{head}.{payload}.{signature[:-2]}",
        f"{head}.{payload}.!!!!",
        f"{head}..{signature}",
        f"{head}.{signature}",
    ):
        r = user.enroll({"type": "knowledge", "secret": "739184", "assertion": bad})
        assert r.status_code == 403 and r.json["error"] == "step_up_required", (bad, r.json)
        with pytest.raises(AssertionInvalid):
            rp.verify(bad, subject="alice", action="enroll_factor")
    assert (
        user.enroll({"type": "knowledge", "secret": "739184", "assertion": good}).status_code == 201
    )


def _openssl_sm2() -> bool:
    try:
        out = subprocess.run(
            ["openssl", "genpkey", "-algorithm", "SM2"], capture_output=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0


@pytest.mark.skipif(not _openssl_sm2(), reason="no openssl with SM2")
def test_openssl_sm2_device_and_assertion_interoperate(user: User, http, tmp_path: Path) -> None:
    """OpenSSL (a third SM2 implementation) as the phone and as the relying party."""
    key = tmp_path / "sm2.pem"
    run = functools.partial(subprocess.run, check=True, capture_output=True, timeout=30)
    run(["openssl", "genpkey", "-algorithm", "SM2", "-out", str(key)])
    pem = run(["openssl", "pkey", "-in", str(key), "-pubout"]).stdout.decode()
    r = user.enroll({"type": "device", "public_key": pem, "alg": "SM2"})
    assert r.status_code == 201, r.json
    vid = user.start("login").json["verification_id"]
    challenge = user.challenge(vid, "device").json["challenge"]
    (tmp_path / "challenge").write_text(challenge)
    der = run(
        ["openssl", "dgst", "-sm3", "-sign", str(key), "-sigopt", "distid:1234567812345678",
         str(tmp_path / "challenge")]
    ).stdout  # fmt: skip
    rs = b"".join(n.to_bytes(32, "big") for n in decode_dss_signature(der))
    signature = base64.urlsafe_b64encode(rs).rstrip(b"=").decode()
    proof = {"factor": "device", "factor_id": r.json["factor_id"], "signature": signature}
    result = user.prove(vid, proof).json
    assert result["accepted"] and result["status"] == "satisfied", result
    # ... and OpenSSL verifies the SM2 assertion against the JWKS key.
    head, payload, sig = result["assertion"].split(".")
    jwk = next(k for k in http.get("/.well-known/jwks.json").json["keys"] if k["alg"] == "SM2")
    (tmp_path / "idv.pem").write_text(sm2.public_pem(_unb64(jwk["x"]) + _unb64(jwk["y"])))
    (tmp_path / "signed").write_text(f"{head}.{payload}")
    raw = _unb64(sig)
    r_s = (int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    (tmp_path / "sig.der").write_bytes(encode_dss_signature(*r_s))
    check = subprocess.run(
        ["openssl", "dgst", "-sm3", "-verify", str(tmp_path / "idv.pem"), "-sigopt",
         "distid:1234567812345678", "-signature", str(tmp_path / "sig.der"),
         str(tmp_path / "signed")],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert check.returncode == 0 and "Verified OK" in check.stdout, check.stdout + check.stderr
