"""Helpers that drive the contract the way a caller's backend and a user's app would."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pyotp
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from service.factors.device import _b64url

PHONE = "+8613800138000"
PIN = "739184"


@dataclass
class Device:
    """A user's app holding a key pair."""

    key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
    alg: str
    factor_id: str = ""

    @classmethod
    def new(cls, alg: str = "ES256") -> Device:
        key = (
            ec.generate_private_key(ec.SECP256R1())
            if alg == "ES256"
            else (ed25519.Ed25519PrivateKey.generate())
        )
        return cls(key, alg)

    def public_pem(self) -> str:
        return (
            self.key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, challenge: str) -> str:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return _b64url(self.key.sign(challenge.encode(), ec.ECDSA(hashes.SHA256())))
        return _b64url(self.key.sign(challenge.encode()))


@dataclass
class User:
    """A subject with whatever factors a test gave it."""

    http: object
    auth: dict
    subject_id: str = "alice"
    totp_secret: str = ""
    totp_factor: str = ""
    device: Device | None = None
    sms_file: Path | None = None
    clock: object = None  # a time_machine traveller: TOTP needs a fresh 30 s step per use

    def advance(self, seconds: float) -> None:
        """Move the shared clock on (server and this app alike)."""
        self.clock.shift(seconds)

    def put(self, phone: str = PHONE, **extra):
        return self.http.put(
            f"/v1/subjects/{self.subject_id}", json={"phone": phone, **extra}, headers=self.auth
        )

    def enroll(self, body: dict):
        return self.http.post(
            f"/v1/subjects/{self.subject_id}/factors", json=body, headers=self.auth
        )

    def start(self, action: str, **context):
        r = self.http.post(
            "/v1/verifications",
            headers=self.auth,
            json={"subject_id": self.subject_id, "action": action, "context": context},
        )
        return r

    def prove(self, vid: str, body: dict):
        return self.http.post(f"/v1/verifications/{vid}/proofs", json=body, headers=self.auth)

    def challenge(self, vid: str, factor: str):
        return self.http.post(
            f"/v1/verifications/{vid}/challenges", json={"factor": factor}, headers=self.auth
        )

    # -- factor set-up ------------------------------------------------------------------------
    def add_pin(self, pin: str = PIN, assertion: str | None = None):
        body = {"type": "knowledge", "secret": pin}
        if assertion:
            body["assertion"] = assertion
        r = self.enroll(body)
        assert r.status_code == 201, r.json
        return r.json

    def add_totp(self, assertion: str | None = None):
        body = {"type": "totp"} if not assertion else {"type": "totp", "assertion": assertion}
        r = self.enroll(body)
        assert r.status_code == 201, r.json
        self.totp_secret, self.totp_factor = r.json["secret"], r.json["factor_id"]
        code = pyotp.TOTP(self.totp_secret).at(time.time())
        a = self.http.post(
            f"/v1/subjects/{self.subject_id}/factors/{self.totp_factor}/activate",
            json={"code": code},
            headers=self.auth,
        )
        assert a.status_code == 200, a.json
        self.advance(30)  # the activation code was this step's one use
        return r.json

    def add_device(self, alg: str = "ES256", assertion: str | None = None):
        dev = Device.new(alg)
        body = {"type": "device", "public_key": dev.public_pem(), "alg": alg, "label": "phone"}
        if assertion:
            body["assertion"] = assertion
        r = self.enroll(body)
        assert r.status_code == 201, r.json
        dev.factor_id = r.json["factor_id"]
        self.device = dev
        return r.json

    # -- proofs ---------------------------------------------------------------------------------
    def totp_code(self, offset: int = 0) -> str:
        return pyotp.TOTP(self.totp_secret).at(time.time() + offset)

    def last_sms_code(self) -> str:
        assert self.sms_file is not None
        lines = self.sms_file.read_text().strip().splitlines()
        return json.loads(lines[-1])["code"]

    def prove_factor(self, vid: str, factor: str):
        if factor == "totp":
            result = self.prove(vid, {"factor": "totp", "code": self.totp_code()})
            self.advance(30)  # RFC 6238 §5.2: the next TOTP proof needs the next step
            return result
        if factor == "knowledge":
            return self.prove(vid, {"factor": "knowledge", "secret": PIN})
        if factor == "sms":
            assert self.challenge(vid, "sms").status_code == 200
            return self.prove(vid, {"factor": "sms", "code": self.last_sms_code()})
        assert self.device is not None
        ch = self.challenge(vid, "device").json["challenge"]
        return self.prove(
            vid,
            {
                "factor": "device",
                "factor_id": self.device.factor_id,
                "signature": self.device.sign(ch),
            },
        )

    def step_up(self, action: str, factors: list[str]) -> str:
        """Run a verification with ``factors`` and return the assertion."""
        r = self.start(action)
        assert r.status_code == 201 and r.json["status"] == "pending", r.json
        vid = r.json["verification_id"]
        result = None
        for factor in factors:
            result = self.prove_factor(vid, factor)
            assert result.status_code == 200 and result.json["accepted"], (factor, result.json)
        assert result is not None and result.json["status"] == "satisfied", result.json
        return result.json["assertion"]

    # -- helpers added for the policy, threat and carrier suites --------------------------------
    def add_all_factors(self) -> None:
        """Phone + TOTP + PIN + device, each later one behind an ``enroll_factor`` step-up."""
        self.add_totp()
        self.add_pin(assertion=self.step_up("enroll_factor", ["totp"]))
        self.add_device(assertion=self.step_up("enroll_factor", ["totp", "knowledge"]))

    def step_up_first(self, action: str) -> str:
        """Complete the first option the verification offers and return the assertion."""
        r = self.start(action)
        assert r.status_code == 201 and r.json["status"] == "pending", r.json
        vid, option = r.json["verification_id"], r.json["options"][0]
        result = None
        for factor in option:
            result = self.prove_factor(vid, factor)
            assert result.status_code == 200 and result.json["accepted"], (factor, result.json)
        assert result is not None and result.json["status"] == "satisfied", result.json
        return result.json["assertion"]

    def factors(self):
        return self.http.get(f"/v1/subjects/{self.subject_id}/factors", headers=self.auth)

    def remove_factor(self, factor_id: str, assertion: str | None = None):
        body = {"assertion": assertion} if assertion else None
        return self.http.delete(
            f"/v1/subjects/{self.subject_id}/factors/{factor_id}", json=body, headers=self.auth
        )

    def sms_messages(self) -> list[dict]:
        """Every message the SMS file sink received, oldest first."""
        if self.sms_file is None or not self.sms_file.exists():
            return []
        return [json.loads(line) for line in self.sms_file.read_text().splitlines() if line]

    def attempt(self, vid: str, factor: str):
        """Try one factor the way an attacker's script would: no assertion on the outcome.

        Returns the challenge response when the challenge is refused, else the proof response.
        """
        if factor in ("sms", "device"):
            ch = self.challenge(vid, factor)
            if ch.status_code != 200:
                return ch
        if factor == "sms":
            return self.prove(vid, {"factor": "sms", "code": self.last_sms_code()})
        if factor == "device":
            assert self.device is not None
            body = {
                "factor_id": self.device.factor_id,
                "signature": self.device.sign(ch.json["challenge"]),
            }
            return self.prove(vid, {"factor": "device", **body})
        return self.prove_factor(vid, factor)


def carrier_event(http, carrier_auth: dict, phone: str, kind: str, occurred_at: str):
    """POST one carrier signal (scope ``carrier``)."""
    return http.post(
        "/v1/carrier-events",
        json={"phone": phone, "type": kind, "occurred_at": occurred_at},
        headers=carrier_auth,
    )


def now_rfc3339(offset_seconds: float = 0) -> str:
    """The shared (time-machine) clock as RFC 3339 UTC, plus ``offset_seconds``."""
    from datetime import UTC, datetime, timedelta

    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def verified_claims(http, auth: dict, token: str) -> dict:
    """Verify an assertion exactly as a caller would: JWKS, explicit algorithms, aud, iss."""
    import jwt

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "idv-assertion+jwt" and header["kid"]
    key = jwt.PyJWKSet.from_dict(http.get("/.well-known/jwks.json").json)[header["kid"]]
    audience = http.get("/v1/client", headers=auth).json["client_id"]
    return jwt.decode(
        token, key.key, algorithms=["ES256", "EdDSA"], audience=audience, issuer="idv"
    )


def policy_variant(settings, tmp_path: Path, section: str, old: str, new: str):
    """``settings`` with a copy of its policy whose ``section`` has its first ``old`` text
    replaced by ``new`` (a test of one rule under an otherwise default policy)."""
    from dataclasses import replace

    text = Path(settings.policy_file).read_text(encoding="utf-8")
    start = text.index(section)
    at = text.index(old, start)
    path = tmp_path / "policy.toml"
    path.write_text(text[:at] + new + text[at + len(old) :], encoding="utf-8")
    return replace(settings, policy_file=path)
