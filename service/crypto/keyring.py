"""The key ring: data-encryption keys, the lookup (HMAC) key and the assertion signing keys.

Stored as one JSON document, either in ``IDV_KEYS`` or in a key file (default
``$IDV_DATA_DIR/keys.json``) that the embedded default generates on first start with 0600
permissions. Every key has a key id so keys can rotate (PIPL art. 51, GB/T 39786: the
algorithms sit behind ids and names so a GM profile can be added later).
"""

from __future__ import annotations

import base64
import functools
import json
import os
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.crypto import profile as cp
from service.crypto import sm2

CIPHERTEXT_VERSION = "v1"


class KeyRingError(Exception):
    """The key material is missing, malformed or cannot decrypt a value."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text.encode(), validate=True)


@dataclass(frozen=True)
class SigningKey:
    """An assertion signing key (ES256 on P-256, EdDSA on Ed25519, or SM2 on the SM2 curve)."""

    kid: str
    alg: str
    private_pem: str
    created_at: str
    retired_at: str | None = None

    def private_key(self) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
        """The loaded private key object (parsed once per process); not for SM2 keys."""
        return _load_private(self.private_pem)

    def sm2_signer(self) -> sm2.Signer:
        """The SM2 key object (parsed once per process: it signs every satisfied proof)."""
        return _load_sm2(self.private_pem)


@functools.lru_cache(maxsize=16)
def _load_sm2(pem: str) -> sm2.Signer:
    return sm2.Signer(pem)


@functools.lru_cache(maxsize=16)
def _aesgcm(key: bytes) -> AESGCM:
    """The AES-GCM cipher of a data key, built once (the key schedule, not once per value)."""
    return AESGCM(key)


@functools.lru_cache(maxsize=16)
def _load_private(pem: str) -> ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey)
    return key


def new_signing_key(alg: str = "ES256", now: datetime | None = None) -> SigningKey:
    """Generate a signing key with a fresh key id."""
    if alg == "ES256":
        private: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | None
        private = ec.generate_private_key(ec.SECP256R1())
    elif alg == "EdDSA":
        private = ed25519.Ed25519PrivateKey.generate()
    elif alg == sm2.ALG:
        private = None
    else:
        raise ValueError(f"unsupported signing algorithm {alg!r}")
    if private is None:
        pem = sm2.private_pem(*sm2.generate())
    else:
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
    """Data keys (AES-256-GCM or SM4-GCM), one active; the lookup key; signing keys, the last
    one active.

    ``profile`` (``IDV_CRYPTO_PROFILE``, not stored) picks the algorithms of new keys and of
    keyed hashes; ``lookup_profiles`` (stored) lists every profile whose keyed hashes may still
    be in the database, so lookups try each until ``idv keys rotate`` has rewritten them.
    """

    data_keys: dict[str, bytes]
    active_data_kid: str
    lookup_key: bytes
    signing_keys: list[SigningKey]
    data_key_algs: dict[str, str] = field(default_factory=dict)
    lookup_profiles: list[str] = field(default_factory=lambda: [cp.INTL])
    profile: str = cp.INTL

    # -- encryption at rest -------------------------------------------------------------
    def data_key_alg(self, kid: str) -> str:
        """The algorithm of a data key (keys from before profiles are AES-256-GCM)."""
        return self.data_key_algs.get(kid, cp.AES_GCM)

    def encrypt(self, plaintext: str, context: str) -> str:
        """AEAD-encrypt under the active data key; ``context`` is bound as associated data."""
        kid = self.active_data_kid
        if self.data_key_alg(kid) == cp.SM4_GCM:
            blob = cp.sm4_gcm_encrypt(self.data_keys[kid], plaintext.encode(), context.encode())
        else:
            nonce = os.urandom(12)
            blob = nonce + _aesgcm(self.data_keys[kid]).encrypt(
                nonce, plaintext.encode(), context.encode()
            )
        return f"{CIPHERTEXT_VERSION}:{kid}:{_b64(blob)}"

    def decrypt(self, token: str, context: str) -> str:
        """Decrypt a value written by :meth:`encrypt` under any known data key."""
        try:
            version, kid, body = token.split(":", 2)
            if version != CIPHERTEXT_VERSION:
                raise ValueError(version)
            raw = _unb64(body)
            if self.data_key_alg(kid) == cp.SM4_GCM:
                pt = cp.sm4_gcm_decrypt(self.data_keys[kid], raw, context.encode())
            else:
                pt = _aesgcm(self.data_keys[kid]).decrypt(raw[:12], raw[12:], context.encode())
        except Exception as exc:  # noqa: BLE001 - any failure is the same failure to the caller
            raise KeyRingError("cannot decrypt a stored value (wrong key or context)") from exc
        return pt.decode()

    @staticmethod
    def key_id_of(token: str) -> str:
        """The data key id a ciphertext was written under."""
        return token.split(":", 2)[1]

    # -- keyed hashes -------------------------------------------------------------------
    def _lookup_key_for(self, profile: str) -> bytes:
        """The lookup key of a profile: the stored key (HMAC-SHA256), or for ``gm`` a key
        derived from it with HMAC-SM3 (GM/T 0091-style derivation; no second secret to keep)."""
        if profile == cp.GM:
            return cp.hmac_sm3(self.lookup_key, b"idv-gm-lookup-key")
        return self.lookup_key

    def lookup_hash(self, purpose: str, value: str, profile: str | None = None) -> str:
        """Keyed hash of ``value`` for lookups and pseudonyms (irreversible without the key):
        HMAC-SHA256, or HMAC-SM3 under ``gm``. New values are written with this one."""
        profile = profile or self.profile
        data = f"{purpose}\x00{value}".encode()
        return cp.keyed_hash(profile, self._lookup_key_for(profile), data).hex()

    def lookup_hashes(self, purpose: str, value: str) -> list[str]:
        """Every hash ``value`` may be stored under: the profile's first, then those of each
        other profile that has written values not yet rewritten (a SIM swap finds them all)."""
        profiles = [self.profile, *(p for p in self.lookup_profiles if p != self.profile)]
        return [self.lookup_hash(purpose, value, p) for p in profiles]

    def derived_key(self, purpose: str, profile: str | None = None) -> bytes:
        """A 32-byte key derived from the lookup key for one purpose (e.g. SMS code digests),
        with HMAC-SM3 under ``gm``."""
        profile = profile or self.profile
        key = self._lookup_key_for(profile)
        return cp.keyed_hash(profile, key, f"derive\x00{purpose}".encode())

    def derived_keys(self, purpose: str) -> dict[str, bytes]:
        """``derived_key`` under every profile (the audit chain checks entries of each)."""
        return {p: self.derived_key(purpose, p) for p in cp.PROFILES}

    # -- signing ------------------------------------------------------------------------
    @property
    def active_signing_key(self) -> SigningKey:
        """The key new assertions are signed with: the newest not retired."""
        live = [k for k in self.signing_keys if k.retired_at is None]
        return (live or self.signing_keys)[-1]

    # -- (de)serialisation --------------------------------------------------------------
    def to_json(self) -> str:
        """The JSON document stored in the key file."""
        doc = {
            "version": 1,
            "data_keys": {kid: _b64(k) for kid, k in self.data_keys.items()},
            "active_data_key": self.active_data_kid,
            "lookup_key": _b64(self.lookup_key),
            "signing_keys": [k.__dict__ for k in self.signing_keys],
        }
        if self.data_key_algs:
            doc["data_key_algs"] = self.data_key_algs
        if self.lookup_profiles != [cp.INTL]:
            doc["lookup_profiles"] = self.lookup_profiles
        return json.dumps(doc, indent=2)

    @classmethod
    def from_json(cls, text: str, profile: str = cp.INTL) -> KeyRing:
        """Parse the key document; raise ``KeyRingError`` naming what is wrong."""
        try:
            doc = json.loads(text)
            data_keys = {kid: _unb64(v) for kid, v in doc["data_keys"].items()}
            ring = cls(
                data_keys=data_keys,
                active_data_kid=doc["active_data_key"],
                lookup_key=_unb64(doc["lookup_key"]),
                signing_keys=[SigningKey(**k) for k in doc["signing_keys"]],
                data_key_algs=dict(doc.get("data_key_algs") or {}),
                lookup_profiles=list(doc.get("lookup_profiles") or [cp.INTL]),
                profile=profile,
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise KeyRingError(f"malformed key document: {exc}") from None
        if ring.active_data_kid not in data_keys:
            raise KeyRingError("active_data_key names no data key")
        if (
            any(
                len(k) != cp.DATA_KEY_BYTES.get(ring.data_key_alg(kid), -1)
                for kid, k in data_keys.items()
            )
            or len(ring.lookup_key) < 32
        ):
            raise KeyRingError(
                "data keys must be 32 bytes (16 for SM4-GCM) and the lookup key at least 32"
            )
        if not ring.signing_keys:
            raise KeyRingError("no signing key")
        if not set(ring.lookup_profiles) <= set(cp.PROFILES):
            raise KeyRingError(f"lookup_profiles must name profiles of {cp.PROFILES}")
        return ring

    @classmethod
    def generate(cls, profile: str = cp.INTL) -> KeyRing:
        """A fresh key ring for ``profile``: one data key, a lookup key and one signing key."""
        ring = cls(
            data_keys={},
            active_data_kid="",
            lookup_key=secrets.token_bytes(32),
            signing_keys=[new_signing_key(sm2.ALG if profile == cp.GM else "ES256")],
            lookup_profiles=[profile],
            profile=profile,
        )
        ring.add_data_key()
        return ring

    def add_data_key(self) -> str:
        """Add a data key of the profile's algorithm and make it active; old keys stay for
        decrypting (rotation)."""
        kid = f"dk-{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(4)}"
        alg = cp.data_key_alg(self.profile)
        self.data_keys[kid] = secrets.token_bytes(cp.DATA_KEY_BYTES[alg])
        if alg != cp.AES_GCM:
            self.data_key_algs[kid] = alg
        self.active_data_kid = kid
        return kid

    def adopt_profile(self) -> list[str]:
        """Make the ring ready for its profile: an active data key and signing key of the
        profile's algorithms, and the profile among ``lookup_profiles``. Returns what changed
        (empty when nothing did); the caller saves the ring."""
        changed = []
        if self.data_key_alg(self.active_data_kid) != cp.data_key_alg(self.profile):
            changed.append(f"data key {self.add_data_key()}")
        signing_alg = sm2.ALG if self.profile == cp.GM else None
        if signing_alg and self.active_signing_key.alg != signing_alg:
            key = new_signing_key(signing_alg)
            self.signing_keys.append(key)
            changed.append(f"signing key {key.kid}")
        if self.profile not in self.lookup_profiles:
            self.lookup_profiles.insert(0, self.profile)
            changed.append(f"lookup profile {self.profile}")
        return changed


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


def load_key_ring(
    path: Path, inline_json: str | None, *, create: bool, profile: str = cp.INTL
) -> KeyRing:
    """Load the key ring from ``IDV_KEYS`` or the key file, generating the file if allowed."""
    if inline_json:
        return KeyRing.from_json(inline_json, profile)
    if path.is_file():
        return KeyRing.from_json(path.read_text(), profile)
    if not create:
        raise KeyRingError(f"no key file at {path} (set IDV_KEY_FILE or IDV_KEYS)")
    ring = KeyRing.generate(profile)
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its keys
        return KeyRing.from_json(path.read_text(), profile)
    with os.fdopen(fd, "w") as fh:
        fh.write(ring.to_json())
    return ring


def adopt_profile(path: Path, inline_json: str | None, profile: str) -> list[str]:
    """At start: give the key ring what ``profile`` needs (``KeyRing.adopt_profile``) and
    save it. The read-modify-write holds an exclusive lock beside the key file so instances
    starting together on one host add one set of keys, not one each. Keys from ``IDV_KEYS``
    cannot be written: they must already hold the profile's keys."""
    ring = load_key_ring(path, inline_json, create=True, profile=profile)
    if any(k.alg == sm2.ALG for k in ring.signing_keys):
        try:  # SM2 keys are signed with and published whatever the profile
            cp.require_library(cp.GM)
        except cp.ProfileUnavailable as exc:
            raise KeyRingError(f"the key ring holds SM2 signing keys, and {exc}") from None
    if not KeyRing.from_json(ring.to_json(), profile).adopt_profile():
        return []
    if inline_json:
        raise KeyRingError(
            f"IDV_KEYS has no active keys of the {profile} profile: add them with "
            f"IDV_CRYPTO_PROFILE={profile} `idv keys rotate` on a key file and copy it over"
        )
    import fcntl

    with open(path.with_name(f".{path.name}.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        ring = KeyRing.from_json(path.read_text(), profile)
        changed = ring.adopt_profile()
        if changed:
            write_key_file(path, ring)
    return changed
