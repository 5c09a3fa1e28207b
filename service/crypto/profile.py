"""Crypto profiles: which algorithms idv chooses where it chooses one (GB/T 39786-2021).

``intl`` (the default): AES-256-GCM data keys, HMAC-SHA256 keyed lookups and audit MACs,
SHA-256 for the audit chain and API-key hashes, ES256 assertion keys.

``gm`` (``IDV_CRYPTO_PROFILE=gm``): SM4-GCM data keys (GB/T 32907), HMAC-SM3 keyed lookups and
audit MACs, SM3 for the audit chain and API-key hashes (GB/T 32905), SM2 assertion keys
(GB/T 32918). SM3 and SM4 come from pyca/cryptography; SM2 from ``gmalglib`` (the ``gm``
extra), which :func:`require_library` checks at start.

Every stored value names its key id or is tried under each profile, so values written under
one profile stay readable under the other (API.md, "Commercial-cryptography profile").
TOTP is not a profile choice: it stays RFC 6238 (HMAC-SHA1) for the apps people have.
"""

from __future__ import annotations

import hashlib
import hmac as std_hmac
import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as pyca_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

INTL = "intl"
GM = "gm"
PROFILES = (INTL, GM)

# Algorithm names stored beside data keys (absent: AES-256-GCM, as every key before profiles).
AES_GCM = "AES-256-GCM"
SM4_GCM = "SM4-GCM"
DATA_KEY_BYTES = {AES_GCM: 32, SM4_GCM: 16}


class ProfileUnavailable(Exception):
    """The profile's library is not installed."""


def require_library(profile: str) -> None:
    """Refuse a profile whose library is missing (checked at start, one clear line)."""
    if profile != GM:
        return
    try:
        import gmalglib  # noqa: F401
    except ImportError:
        raise ProfileUnavailable(
            "the gm profile needs the SM2 library: pip install 'idv[gm]' (gmalglib)"
        ) from None


def sm3(data: bytes) -> bytes:
    """SM3 digest (GB/T 32905-2016)."""
    digest = hashes.Hash(hashes.SM3())
    digest.update(data)
    return digest.finalize()


def hmac_sm3(key: bytes, data: bytes) -> bytes:
    """HMAC-SM3 (RFC 2104 over SM3)."""
    mac = pyca_hmac.HMAC(key, hashes.SM3())
    mac.update(data)
    return mac.finalize()


def keyed_hash(profile: str, key: bytes, data: bytes) -> bytes:
    """The profile's keyed hash: HMAC-SM3 under ``gm``, HMAC-SHA256 otherwise."""
    if profile == GM:
        return hmac_sm3(key, data)
    return std_hmac.new(key, data, hashlib.sha256).digest()


def plain_hash(profile: str, data: bytes) -> str:
    """The profile's hash, hex: SM3 under ``gm``, SHA-256 otherwise."""
    if profile == GM:
        return sm3(data).hex()
    return hashlib.sha256(data).hexdigest()


def data_key_alg(profile: str) -> str:
    """The algorithm of new data keys under ``profile``."""
    return SM4_GCM if profile == GM else AES_GCM


def sm4_gcm_encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """``nonce(12) ‖ ciphertext ‖ tag(16)`` under SM4-GCM: the layout AESGCM values have."""
    nonce = os.urandom(12)
    enc = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    enc.authenticate_additional_data(aad)
    body = enc.update(plaintext) + enc.finalize()
    return nonce + body + enc.tag


def sm4_gcm_decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Open a value written by :func:`sm4_gcm_encrypt`; raises on a wrong key, tag or context."""
    if len(blob) < 28:
        raise ValueError("ciphertext too short")
    nonce, body, tag = blob[:12], blob[12:-16], blob[-16:]
    dec = Cipher(algorithms.SM4(key), modes.GCM(nonce, tag)).decryptor()
    dec.authenticate_additional_data(aad)
    return dec.update(body) + dec.finalize()
