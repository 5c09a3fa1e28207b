"""idv quickstart: set up TOTP, put a PIN behind a step-up, step up for a sensitive action and
verify the assertion where the action happens.

Run it against a live idv (``idv serve``) with a ``verify`` key::

    idv clients create quickstart --scope verify        # the key is the last line
    IDV_URL=http://127.0.0.1:8080 IDV_API_KEY=idv_... python client/examples/quickstart.py

It plays the person's authenticator app itself (RFC 6238, below) so it runs unattended; in your
app the person scans ``otpauth_uri`` (or ``qr_svg``) and types the codes. It creates one subject
with a random id and a random test phone number, and exits 0 when the assertion verified.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import secrets
import struct
import sys
import time

from idv_client import (
    AssertionVerifier,
    IdvClient,
    IdvError,
    ProofResult,
    RateLimited,
    StepUpRequired,
)

STEP = 30  # RFC 6238 §4: the default time step of authenticator apps
PIN = "739184"  # what the person chooses; idv refuses guessable ones with WeakSecret


# -- the person's authenticator app (RFC 6238 with HMAC-SHA1, 6 digits) ----------------------------
def totp_code(secret_b32: str, step: int) -> str:
    """The code an authenticator app shows during time step ``step`` (RFC 4226 §5.3)."""
    key = base64.b32decode(secret_b32.upper() + "=" * (-len(secret_b32) % 8))
    digest = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    number = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"{number % 10**6:06d}"


def next_code(secret_b32: str, used_step: int) -> tuple[str, int]:
    """Wait for the app's next code: idv accepts each code once, ever (RFC 6238 §5.2), so a
    second proof within the same 30 s needs the code of the following step."""
    step = int(time.time()) // STEP
    if step <= used_step:
        wait = (used_step + 1) * STEP - time.time()
        print(f"   waiting {wait:.0f} s for the authenticator's next code ...")
        time.sleep(max(0.0, wait) + 0.2)
        step = used_step + 1
    return totp_code(secret_b32, step), step


def require_satisfied(proof: ProofResult, what: str) -> str:
    """The assertion of a satisfied verification, or exit naming what went wrong."""
    if not proof.accepted:
        sys.exit(f"{what}: not accepted ({proof.attempts_left} tries left)")
    if proof.status != "satisfied" or not proof.assertion:
        sys.exit(f"{what}: verification is {proof.status}, needs {proof.satisfied} and more")
    return proof.assertion


def main() -> int:
    """The whole walk-through; 0 when the final assertion verified."""
    logging.basicConfig(level=logging.WARNING)  # idv_client logs retries; never a secret
    with IdvClient.from_env() as idv:
        me = idv.whoami()  # me.client_id is the `aud` of our assertions
        subject = "qs-" + secrets.token_hex(6)
        phone = f"+86139{secrets.randbelow(10**8):08d}"  # a test number; use the person's own
        print(f"1. subject {subject} with phone {idv.put_subject(subject, phone).phone}")

        # TOTP set-up: the first factor beside the phone needs no step-up during onboarding.
        totp = idv.enroll_totp(subject, label="quickstart")
        if not totp.secret:
            sys.exit("idv shows the TOTP secret once, at enrolment: none came")
        step = int(time.time()) // STEP
        idv.activate_factor(subject, totp.factor_id, totp_code(totp.secret, step))
        print("   TOTP active (the activation code counts as that code's one use)")

        # The PIN behind a step-up: once the subject has a TOTP, adding a factor needs an
        # `enroll_factor` assertion (API.md), here from the authenticator's next code.
        v = idv.start_verification(subject, "enroll_factor")
        print(f"2. enroll_factor step-up, options {v.options}")
        code, step = next_code(totp.secret, step)
        enroll = require_satisfied(idv.prove_totp(v.verification_id, code), "enroll_factor")
        idv.enroll_knowledge(subject, PIN, assertion=enroll)
        print("   PIN set")

        # A sensitive action: PIN + TOTP (SMS never suffices for it, NIST SP 800-63B-4).
        v = idv.start_verification(
            subject,
            "payment_password_reset",
            context={"ip": "203.0.113.7", "user_agent": "idv-quickstart"},
        )
        if v.status == "denied":  # e.g. recent_sim_change: say why and until when
            sys.exit(f"held: {v.reasons} until {v.held_until}")
        print(f"3. payment_password_reset, options {v.options}")
        pin = idv.prove_pin(v.verification_id, PIN)
        print(f"   PIN accepted={pin.accepted}, satisfied so far {pin.satisfied}")
        code, step = next_code(totp.secret, step)
        assertion = require_satisfied(idv.prove_totp(v.verification_id, code), "payment reset")

        # Where the payment password is actually reset: verify before acting, once only.
        verifier = AssertionVerifier(idv.base_url, me.client_id)
        claims = verifier.verify(
            assertion,
            subject=subject,
            action="payment_password_reset",
            acr="aal2",  # at least two factors
            max_age=300,  # authenticated in the last 5 minutes (RFC 9470)
            consume=True,  # a second use of the same assertion is "replayed"
        )
        verifier.close()
        print(f"4. assertion verified: acr={claims['acr']} amr={claims['amr']}; reset allowed")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except RateLimited as exc:
        sys.exit(f"idv is rate limiting this caller; retry in {exc.retry_after} s")
    except StepUpRequired as exc:
        sys.exit(f"idv wants a step-up first: {exc.message}")
    except IdvError as exc:
        sys.exit(f"idv said {exc.code}: {exc.message}")
    except ValueError as exc:  # IDV_URL or IDV_API_KEY unset
        sys.exit(str(exc))
