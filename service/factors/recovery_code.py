"""Recovery codes: NIST SP 800-63B-4 look-up secrets for the person who lost the phone.

Pure: no framework, no storage. A set is ``CODE_COUNT`` codes, each ``CODE_LENGTH`` symbols of
Crockford's base32 alphabet (32 symbols, so 5 bits each: 80 random bits per code, above the 64
bits NIST SP 800-63B-4 asks of a look-up secret) drawn from ``secrets`` (an approved random bit
generator), shown once in groups of four (``7K3M-Q9XD-2HVR-8BNC``) and meant to be printed or
written down, never kept on the phone.

Storage (ASVS 6.5.2: codes under 112 bits are stored hashed): only ``digest`` is kept, an
HMAC-SHA256 under a key derived from idv's key ring and bound to the set's factor id. A copy of
the database therefore reveals no code, and without the key ring nobody can test guesses offline
against it (a plain or even slow hash of 80 bits would still be an offline target; a keyed one is
none). Each code is accepted once: the proof's transaction marks its row used with one
conditional UPDATE (``storage.recovery_codes.use``), never a read-then-write (ASVS 6.5.1).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from typing import Any

from service.factors.ports import Attempt, Check, FactorPort, Guessing, Prepared, Subject
from service.factors.spec import FactorSpec, Input, fields

CODE_COUNT = 10
CODE_LENGTH = 16
GROUP = 4
# Crockford's base32: digits and letters without I, L, O and U, so nothing reads as another.
ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
BITS_PER_CODE = CODE_LENGTH * 5  # 32 symbols = 5 bits each: 80 bits
# Crockford's decoding rules: the letters people write for 0 and 1 read as 0 and 1.
_LOOKALIKES = str.maketrans({"O": "0", "I": "1", "L": "1"})
_IGNORED = str.maketrans("", "", " -\t")
MAX_INPUT = 64  # a code typed with spaces and hyphens is well under this
_DIGEST_CONTEXT = b"idv-recovery-code-v1\x00"


def new_codes(count: int = CODE_COUNT) -> list[str]:
    """A fresh set of ``count`` distinct codes, formatted for display (groups of four)."""
    codes: list[str] = []
    while len(codes) < count:
        raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_LENGTH))
        code = "-".join(raw[i : i + GROUP] for i in range(0, CODE_LENGTH, GROUP))
        if code not in codes:  # 2**-80 per pair; a set must still never repeat a code
            codes.append(code)
    return codes


def normalize(typed: str) -> str | None:
    """The canonical form of a typed code, or None when it cannot be one.

    Case-insensitive; spaces and hyphens are ignored; O reads as 0 and I or L as 1 (Crockford).
    """
    if not isinstance(typed, str) or len(typed) > MAX_INPUT:
        return None
    text = typed.translate(_IGNORED).upper().translate(_LOOKALIKES)
    if len(text) != CODE_LENGTH or any(ch not in ALPHABET for ch in text):
        return None
    return text


def digest(key: bytes, factor_id: str, code: str) -> str:
    """The keyed hash stored for ``code`` of the set ``factor_id`` (hex HMAC-SHA256).

    ``code`` may be typed or displayed form; it is normalised first. ``ValueError`` when it is
    no code at all.
    """
    canonical = normalize(code)
    if canonical is None:
        raise ValueError("not a recovery code")
    message = _DIGEST_CONTEXT + factor_id.encode() + b"\x00" + canonical.encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def prepare(port: FactorPort, factor_id: str, body: Mapping[str, Any]) -> Prepared:
    """A new set; the codes live only as keyed hashes, the factor row holds no secret."""
    codes = new_codes()

    def store_digests(port: FactorPort, subject: Subject) -> None:
        key = port.derived_key("recovery-code")
        port.add_code_set(factor_id, [digest(key, factor_id, c) for c in codes])

    return Prepared(
        "recovery_code:v1", after_insert=store_digests, shown=lambda _p, _s: {"codes": codes}
    )


def verify(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """A recovery code of the subject's set: whether it is one (unused) is decided by the
    single-use UPDATE itself, in the proof's transaction (ASVS 6.5.1); a code that matches no
    unused row is a failed proof like any wrong code."""
    code, candidates = proof["code"], attempt.candidates
    if not candidates or normalize(code) is None:
        return Check(False)
    newest = candidates[-1]
    hashed = digest(port.derived_key("recovery-code"), newest.id, code)
    return Check(True, lambda p: p.use_code(newest.id, hashed))


SPEC = FactorSpec(
    name="recovery_code",
    phone_bound=False,  # printed or written down, kept off the phone
    challenge=None,
    proof_fields=fields(
        code=Input(str, 64, description="typed with or without spaces and hyphens")
    ),
    amr=("otp",),  # RFC 8176 §2: a look-up secret is a one-time password
    replay="the code's row marked used by one conditional UPDATE (ASVS 6.5.1)",
    stores="nothing in the factor row; keyed hashes of the codes in recovery_codes",
    enrolled_fields=fields(
        codes=Input(
            list,
            description="recovery_code only: the 10 codes of the new set, shown once (keep "
            "them off the phone: print them or write them down)",
        )
    ),
    off_phone=True,
    replaces="any",
    verify=verify,
    prepare=prepare,
    # NIST SP 800-63B-4 look-up secrets: CODE_COUNT codes of at least 64 random bits, each
    # accepted once (the figures assume 64 bits, the floor NIST sets).
    guessing=Guessing(2**64, CODE_COUNT, changing=False),
    single_use_set=True,
)
