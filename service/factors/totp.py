"""TOTP verifier (RFC 6238): secrets, provisioning URIs and drift-tolerant code checks.

Pure: no Flask, no SQL. The caller passes the server's clock as ``now`` and records the
step returned by :func:`matching_step` so the same code is never accepted twice.
"""

from __future__ import annotations

import base64
import hmac
import io
from collections.abc import Callable, Mapping
from typing import Any

import pyotp
import segno

from service.domain.errors import InvalidCode, InvalidRequest
from service.domain.phone import mask_phone
from service.factors.ports import (
    Attempt,
    Check,
    FactorPort,
    Guessing,
    Prepared,
    StoredFactor,
    Subject,
)
from service.factors.spec import FactorSpec, Input, fields

STEP_SECONDS = 30  # RFC 6238 §5.2: a 30-second time step
DIGITS = 6  # RFC 4226 §5.3: at least 6 digits
DRIFT_STEPS = 1  # RFC 6238 §5.2: at most one step of clock drift each way
MIN_SECRET_BYTES = 14  # pyotp's floor (112 bits), kept: a shorter secret is refused


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


def _key(secret: str) -> bytes:
    """The secret's bytes: base32, padded and case-folded as pyotp's ``byte_secret`` reads it
    (a malformed secret raises ``binascii.Error``, one under 112 bits ``ValueError``, as
    there; every secret idv writes has 160: ``new_secret``)."""
    key = base64.b32decode(secret + "=" * (-len(secret) % 8), casefold=True)
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a TOTP secret needs at least {MIN_SECRET_BYTES * 8} bits")
    return key


def _code(key: bytes, counter: int) -> bytes:
    """The HOTP value of ``counter`` (RFC 4226 §5.3: HMAC-SHA-1, dynamic truncation, the low
    ``DIGITS`` decimal digits) as ASCII. One C call for the MAC: pyotp's ``generate_otp`` builds
    an ``hmac.HMAC`` object per code, three codes a proof (tests/unit/test_factor_totp.py checks
    this against pyotp and RFC 6238's test vectors)."""
    mac = hmac.digest(key, counter.to_bytes(8, "big"), "sha1")
    offset = mac[-1] & 0x0F
    value = int.from_bytes(mac[offset : offset + 4], "big") & 0x7FFFFFFF
    return b"%0*d" % (DIGITS, value % 10**DIGITS)


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
    key = _key(secret)
    given = code.encode("ascii")
    current = int(now // STEP_SECONDS)
    matched: int | None = None
    # Compare against every candidate without stopping early, in constant time per comparison.
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if step < 0:
            continue
        if hmac.compare_digest(_code(key, step), given) and matched is None:
            matched = step
    return matched


def prepare(port: FactorPort, factor_id: str, body: Mapping[str, Any]) -> Prepared:
    """A pending TOTP: a new secret, shown once with its URI and QR code."""
    label = body.get("label")
    check_account_label(label)
    secret = new_secret()

    def shown(port: FactorPort, subject: Subject) -> dict[str, Any]:
        # What the authenticator app shows: the tenant (``idv clients issuer``) and the person
        # (the label given, else the masked phone), never the subject id (issue 21).
        phone = port.phone(subject)
        account = label or (mask_phone(phone) if phone else factor_id)
        uri = provisioning_uri(secret, account, port.client.issuer or port.issuer)
        return {"secret": secret, "otpauth_uri": uri, "qr_svg": qr_svg(uri)}

    return Prepared(secret, "pending", shown=shown)


def activate(port: FactorPort, factor: StoredFactor, body: Mapping[str, Any]) -> None:
    """A current code activates a pending TOTP and counts as that code's one use."""
    code = body.get("code")
    if not isinstance(code, str):
        raise InvalidRequest("a totp factor is activated with 'code'")
    step = matching_step(port.open(factor), code, port.now.timestamp())
    if step is None or not port.use_totp_step(factor.id, step):
        raise InvalidCode("the code does not match")
    port.activate(factor.id)


def _uses_step(factor_id: str, step: int) -> Callable[[FactorPort], bool]:
    return lambda port: port.use_totp_step(factor_id, step)


def verify(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """A current code of one of the subject's TOTP factors."""
    for f in attempt.candidates:
        step = matching_step(port.open(f), proof["code"], port.now.timestamp())
        if step is not None:
            # RFC 6238 §5.2: the unique (factor, step) row is the one-use guard.
            return Check(True, _uses_step(f.id, step))
    return Check(False)


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
    verify=verify,
    prepare=prepare,
    activate=activate,
    # RFC 6238 §5.2: the current step and one each way are accepted; codes change every 30 s.
    guessing=Guessing(10**DIGITS, 1 + 2 * DRIFT_STEPS, changing=True),
)
