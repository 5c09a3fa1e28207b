"""TOTP verifier (RFC 6238): secrets, provisioning URIs and drift-tolerant code checks.

Pure: no Flask, no SQL. The caller passes the server's clock as ``now`` and records the
step returned by :func:`matching_step` so the same code is never accepted twice.
"""

from __future__ import annotations

import hmac
import io

import pyotp
import segno

from service.domain.errors import InvalidRequest
from service.factors.spec import FactorSpec, Input, fields

STEP_SECONDS = 30  # RFC 6238 §5.2: a 30-second time step
DIGITS = 6  # RFC 4226 §5.3: at least 6 digits
DRIFT_STEPS = 1  # RFC 6238 §5.2: at most one step of clock drift each way


def new_secret() -> str:
    """Return a fresh base32 TOTP secret of 160 bits (RFC 4226 §4 recommends 160 bits)."""
    return pyotp.random_base32(32)  # 32 base32 characters = 160 bits


def check_account_label(label: str | None) -> None:
    """An account label for authenticator apps: printable, no colon (Google's Key Uri Format:
    the label is ``issuer:account`` and neither part may hold a colon)."""
    if label is not None and (":" in label or not label.isprintable() or not label.strip()):
        raise InvalidRequest("a totp label is printable text without ':'")


def provisioning_uri(secret: str, account_name: str, issuer: str) -> str:
    """Return the ``otpauth://totp/...`` URI an authenticator app imports (Key Uri Format)."""
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    return totp.provisioning_uri(name=account_name, issuer_name=issuer)


def qr_svg(uri: str) -> str:
    """Return a standalone SVG document of a QR code that encodes ``uri``."""
    buffer = io.BytesIO()
    segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=True)
    return buffer.getvalue().decode("utf-8")


class _TOTP(pyotp.TOTP):
    """pyotp's TOTP with the base32 secret decoded once, not once per candidate code."""

    _key: bytes | None = None

    def __init__(self, secret: str) -> None:
        super().__init__(secret, digits=DIGITS, interval=STEP_SECONDS)

    def byte_secret(self) -> bytes:
        if self._key is None:
            self._key = super().byte_secret()  # pyotp's decoding and its errors, once
        return self._key


def _is_well_formed(code: object) -> bool:
    return isinstance(code, str) and len(code) == DIGITS and code.isascii() and code.isdigit()


def matching_step(secret: str, code: str, now: float) -> int | None:
    """Return the time-step counter whose TOTP equals ``code``, or None.

    ``code`` must be exactly six ASCII digits; anything else is None, never an exception.
    Steps T-1, T and T+1 are tried, T = floor(now / 30) on the server's clock
    (RFC 6238 §5.2 one step of drift; ASVS 6.5.8 never a client-supplied time).
    The caller stores the returned step and refuses it a second time (RFC 6238 §5.2).
    """
    if not _is_well_formed(code):
        return None
    totp = _TOTP(secret)
    current = int(now // STEP_SECONDS)
    matched: int | None = None
    # Compare against every candidate without stopping early, in constant time per comparison.
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step < 0:
            continue
        expected = totp.generate_otp(step)
        if hmac.compare_digest(expected.encode("ascii"), code.encode("ascii")) and matched is None:
            matched = step
    return matched


SPEC = FactorSpec(
    name="totp",
    phone_bound=True,  # THREATS.md T1: the authenticator app lives on the phone
    challenge=None,
    proof_fields=fields(code=Input(str, 64)),
    amr=("otp",),  # RFC 8176 §2
    replay="the (factor, time step) row: RFC 6238 §5.2, a code accepted once",
    stores="the 160-bit base32 secret",
    activate_fields=fields(code=Input(str, 16)),
    enrolled_fields=fields(
        secret=Input(str, description="TOTP only, shown once"),
        otpauth_uri=Input(str),
        qr_svg=Input(str),
    ),
    replaces="pending",
)
