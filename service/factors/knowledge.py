"""Knowledge factor: a PIN or passphrase the user chose, checked for guessability and hashed.

NIST SP 800-63B §3.1.1.2: no composition rules and no periodic change; instead refuse values
that are common, repetitive or sequential, and hash the rest with a memory-hard function.
Knowledge questions ("mother's maiden name") are never used (ASVS 6.4.2).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from typing import Any

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

from service.domain.errors import InvalidRequest, WeakSecret
from service.factors.ports import Attempt, Check, FactorPort, Guessing, Prepared
from service.factors.spec import FactorSpec, Input, fields

MAX_LENGTH = 256  # NIST SP 800-63B §3.1.1.2 asks verifiers to allow at least 64 characters
_DUMMY_SECRET = "idv-no-knowledge-factor"


def normalize(secret: str) -> str:
    """Return ``secret`` in Unicode NFKC form (NIST SP 800-63B §3.1.1.2)."""
    return unicodedata.normalize("NFKC", secret)


@lru_cache(maxsize=1)
def _common_secrets() -> frozenset[str]:
    """Load the shipped list of common PINs and passwords once (lowercase, one per line)."""
    text = resources.files("service.factors").joinpath("common_secrets.txt").read_text("utf-8")
    return frozenset(line.strip() for line in text.splitlines() if line.strip())


def _is_sequential(secret: str) -> bool:
    """True for a run of consecutive digits or letters, up or down, wrapping (890123, yzabc)."""
    if len(secret) < 2:
        return False
    if secret.isascii() and secret.isdigit():
        base, modulus = ord("0"), 10
    elif secret.isascii() and secret.isalpha():
        secret, base, modulus = secret.lower(), ord("a"), 26
    else:
        return False
    values = [ord(char) - base for char in secret]
    steps = {(b - a) % modulus for a, b in zip(values, values[1:], strict=False)}
    return steps == {1} or steps == {modulus - 1}


def check_strength(secret: str, min_length: int = 6) -> None:
    """Raise WeakSecret when the normalised ``secret`` is easy to guess; return None otherwise.

    Refused (NIST SP 800-63B §3.1.1.2 blocklist): fewer than ``min_length`` code points, one
    repeated character, an ascending or descending run of digits or letters, or a value from
    the shipped list of common PINs and passwords. Over 256 characters is InvalidRequest.
    Messages explain the rule and never echo the secret.
    """
    value = normalize(secret)
    if len(value) > MAX_LENGTH:
        raise InvalidRequest(f"secret must be at most {MAX_LENGTH} characters")
    if len(value) < min_length:
        raise WeakSecret(f"secret must be at least {min_length} characters")
    if len(set(value)) == 1:
        raise WeakSecret("secret must not be a single repeated character")
    if _is_sequential(value):
        raise WeakSecret("secret must not be a run of consecutive digits or letters")
    if value.casefold() in _common_secrets():
        raise WeakSecret("secret is too common: it appears in a list of frequently used secrets")


class KnowledgeHasher:
    """Argon2id hashing and checking of knowledge secrets (OWASP: m=19 MiB, t=2, p=1 minimum)."""

    def __init__(
        self, time_cost: int = 2, memory_cost_kib: int = 19456, parallelism: int = 1
    ) -> None:
        """Configure argon2id and precompute a dummy hash used when a subject has no secret."""
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        # ASVS 6.3.8: checking a subject with no knowledge factor costs the same argon2 work.
        self._dummy_hash = self._hasher.hash(_DUMMY_SECRET)

    def hash(self, secret: str) -> str:
        """Return the argon2id PHC string of the normalised ``secret``."""
        return self._hasher.hash(normalize(secret))

    def verify(self, stored: str | None, secret: str) -> tuple[bool, str | None]:
        """Check ``secret`` against ``stored``; return ``(ok, new_hash_or_None)``.

        ``new_hash`` is set when the secret matched and ``stored`` was made with other
        parameters, so the caller can upgrade it. ``stored=None`` costs a real argon2 check
        against a dummy hash and returns ``(False, None)`` (ASVS 6.3.8). Any argon2 error,
        including an unparsable ``stored``, is ``(False, None)``.
        """
        candidate = normalize(secret)
        try:
            if stored is None:
                self._hasher.verify(self._dummy_hash, candidate)
                return False, None
            self._hasher.verify(stored, candidate)
        except (VerificationError, InvalidHashError):  # VerifyMismatchError is a VerificationError
            return False, None
        if self._hasher.check_needs_rehash(stored):
            return True, self._hasher.hash(candidate)
        return True, None


def prepare(port: FactorPort, factor_id: str, body: Mapping[str, Any]) -> Prepared:
    """A chosen secret, checked for guessability and hashed (before the transaction)."""
    raw = body.get("secret")
    if not isinstance(raw, str):
        raise InvalidRequest("a knowledge factor needs 'secret'")
    check_strength(raw, port.policy.knowledge_min_length)
    return Prepared(port.slow_hash(raw))


def verify(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """The subject's PIN; argon2 runs even when it has none (ASVS 6.3.8: no timing tell)."""
    stored = attempt.candidates[0] if attempt.candidates else None
    ok, new_hash = port.slow_verify(port.open(stored) if stored else None, proof["secret"])
    if not ok or stored is None:
        return Check(False)
    rehash = (stored.id, port.seal(stored.id, new_hash)) if new_hash else None
    return Check(True, None, rehash)


SPEC = FactorSpec(
    name="knowledge",
    phone_bound=False,  # the PIN stays in the person's head
    challenge=None,
    proof_fields=fields(secret=Input(str, 1024)),
    amr=("pin",),  # RFC 8176 §2
    replay="none: a PIN is reused by design; the throttle and lockout guard it",
    stores="the argon2id hash of the secret",
    enrol_fields=fields(secret=Input(str, 1024)),
    off_phone=True,
    replaces="any",
    verify=verify,
    prepare=prepare,
    # A 6-digit PIN chosen uniformly (the list of common PINs refuses the ~1,000 likeliest):
    # a fixed secret, so the attacker never repeats a wrong guess.
    guessing=Guessing(10**6, 1, changing=False),
    slow_hash=True,
    resettable=True,
)
