"""The key ring: data-encryption keys, the lookup (HMAC) key and the assertion signing keys.

Stored as one JSON document, either in ``IDV_KEYS`` or in a key file (default
``$IDV_DATA_DIR/keys.json``) that the embedded default generates on first start with 0600
permissions. Every key has a key id so keys can rotate (PIPL art. 51, GB/T 39786: the
algorithms sit behind ids and names so a GM profile can be added later).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

CIPHERTEXT_VERSION = "v1"


class KeyRingError(Exception):
    """The key material is missing, malformed or cannot decrypt a value."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


@dataclass(frozen=True)
class SigningKey:
    """An assertion signing key (ES256 on P-256, or EdDSA on Ed25519)."""

    kid: str
    alg: str
    private_pem: str
    created_at: str
    retired_at: str | None = None

    def private_key(self) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
        """The loaded private key object (parsed once per process)."""
        return _load_private(self.private_pem)


@functools.lru_cache(maxsize=16)
def _load_private(pem: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    return key


def new_signing_key(alg: str = "ES256", now: datetime | None = None) -> SigningKey:
    """Generate a signing key with a fresh key id."""
    if alg == "ES256":
        private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = ec.generate_private_key(
            ec.SECP256R1()
        )
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d")
    return SigningKey(
        kid=f"sk-{stamp}-{secrets.token_hex(4)}",
        alg=alg,
        private_pem=pem,
        created_at=(now or datetime.now(UTC)).isoformat(),
    )


@dataclass
class KeyRing:
    """Data keys (AES-256-GCM), one active; the lookup key; signing keys, the last one active."""

    data_keys: dict[str, bytes]
    active_data_kid: str
    lookup_key: bytes
    signing_keys: list[SigningKey]

    # -- encryption at rest -------------------------------------------------------------
    def encrypt(self, plaintext: str, context: str) -> str:
        """AES-GCM encrypt under the active data key; ``context`` is bound as associated data."""
        nonce = os.urandom(12)
        ct = AESGCM(self.data_keys[self.active_data_kid]).encrypt(
            nonce, plaintext.encode(), context.encode()
        )
        return f"{CIPHERTEXT_VERSION}:{self.active_data_kid}:{_b64(nonce + ct)}"

    def decrypt(self, token: str, context: str) -> str:
        """Decrypt a value written by :meth:`encrypt` under any known data key."""
        try:
            version, kid, body = token.split(":", 2)
            if version != CIPHERTEXT_VERSION:
                raise ValueError(version)
            raw = _unb64(body)
            pt = AESGCM(self.data_keys[kid]).decrypt(raw[:12], raw[12:], context.encode())
        except Exception as exc:  # noqa: BLE001 - any failure is the same failure to the caller
            raise KeyRingError("cannot decrypt a stored value (wrong key or context)") from exc
        return pt.decode()

    @staticmethod
    def key_id_of(token: str) -> str:
        """The data key id a ciphertext was written under."""
        return token.split(":", 2)[1]

    # -- keyed hashes -------------------------------------------------------------------
    def lookup_hash(self, purpose: str, value: str) -> str:
        """HMAC-SHA256 of ``value`` for lookups and pseudonyms (irreversible without the key)."""
        return hmac.new(
            self.lookup_key, f"{purpose}\x00{value}".encode(), hashlib.sha256
        ).hexdigest()

    def derived_key(self, purpose: str) -> bytes:
        """A 32-byte key derived from the lookup key for one purpose (e.g. SMS code digests)."""
        return hmac.new(self.lookup_key, f"derive\x00{purpose}".encode(), hashlib.sha256).digest()

    # -- signing ------------------------------------------------------------------------
    @property
    def active_signing_key(self) -> SigningKey:
        """The key new assertions are signed with: the newest not retired."""
        live = [k for k in self.signing_keys if k.retired_at is None]
        return (live or self.signing_keys)[-1]

    # -- (de)serialisation --------------------------------------------------------------
    def to_json(self) -> str:
        """The JSON document stored in the key file."""
        return json.dumps(
            {
                "version": 1,
                "data_keys": {kid: _b64(k) for kid, k in self.data_keys.items()},
                "active_data_key": self.active_data_kid,
                "lookup_key": _b64(self.lookup_key),
                "signing_keys": [k.__dict__ for k in self.signing_keys],
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> KeyRing:
        """Parse the key document; raise ``KeyRingError`` naming what is wrong."""
        try:
            doc = json.loads(text)
            data_keys = {kid: _unb64(v) for kid, v in doc["data_keys"].items()}
            ring = cls(
                data_keys=data_keys,
                active_data_kid=doc["active_data_key"],
                lookup_key=_unb64(doc["lookup_key"]),
                signing_keys=[SigningKey(**k) for k in doc["signing_keys"]],
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyRingError(f"malformed key document: {exc}") from None
        if ring.active_data_kid not in data_keys:
            raise KeyRingError("active_data_key names no data key")
        if any(len(k) != 32 for k in data_keys.values()) or len(ring.lookup_key) < 32:
            raise KeyRingError("data keys must be 32 bytes and the lookup key at least 32")
        if not ring.signing_keys:
            raise KeyRingError("no signing key")
        return ring

    @classmethod
    def generate(cls) -> KeyRing:
        """A fresh key ring: one data key, a lookup key and one ES256 signing key."""
        kid = f"dk-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        return cls(
            data_keys={kid: AESGCM.generate_key(bit_length=256)},
            active_data_kid=kid,
            lookup_key=secrets.token_bytes(32),
            signing_keys=[new_signing_key("ES256")],
        )

    def add_data_key(self) -> str:
        """Add a data key and make it active; old keys stay for decrypting (rotation)."""
        kid = f"dk-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        self.data_keys[kid] = AESGCM.generate_key(bit_length=256)
        self.active_data_kid = kid
        return kid


def write_key_file(path: Path, ring: KeyRing) -> None:
    """Write the key file atomically with 0600 permissions (directory 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(ring.to_json())
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def load_key_ring(path: Path, inline_json: str | None, *, create: bool) -> KeyRing:
    """Load the key ring from ``IDV_KEYS`` or the key file, generating the file if allowed."""
    if inline_json:
        return KeyRing.from_json(inline_json)
    if path.is_file():
        return KeyRing.from_json(path.read_text())
    if not create:
        raise KeyRingError(f"no key file at {path} (set IDV_KEY_FILE or IDV_KEYS)")
    ring = KeyRing.generate()
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its keys
        return KeyRing.from_json(path.read_text())
    with os.fdopen(fd, "w") as fh:
        fh.write(ring.to_json())
    return ring
