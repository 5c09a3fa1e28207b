"""SMS one-time codes (NIST SP 800-63B out-of-band, a *restricted* authenticator) and senders.

Code generation and checking are pure. The senders are the only I/O here: a development file
sink, an HTTP webhook to an SMS gateway, and a null sender. No sender ever puts the code in an
exception message or a log line.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import threading
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from service import outbound
from service.crypto.profile import INTL, keyed_hash
from service.domain.clock import rfc3339
from service.domain.errors import ServiceUnavailable
from service.domain.phone import mask_phone
from service.factors.ports import (
    Attempt,
    Check,
    FactorPort,
    Guessing,
    Issued,
    Subject,
    Verification,
    uses_challenge,
)
from service.factors.spec import FactorSpec, Input, fields

CODE_DIGITS = 6  # NIST SP 800-63B §3.1.3.1 (out-of-band): at least 6 digits
CODE_TTL_SECONDS = 300  # NIST SP 800-63B: at most 10 minutes; ASVS 6.5.5

_DIGEST_CONTEXT = b"idv-sms-code-v1\x00"


class SmsDeliveryError(Exception):
    """The SMS gateway did not accept the message. The message never contains the code."""


def new_code() -> str:
    """Return a fresh uniformly random code of six digits, zero-padded."""
    return str(secrets.randbelow(10**CODE_DIGITS)).zfill(CODE_DIGITS)


def _is_well_formed(code: object) -> bool:
    return isinstance(code, str) and len(code) == CODE_DIGITS and code.isascii() and code.isdigit()


def code_digest(key: bytes, verification_id: str, code: str, profile: str = INTL) -> str:
    """Return the hex HMAC-SHA256 (HMAC-SM3 under the ``gm`` profile) of ``code`` bound to
    ``verification_id``.

    ASVS 6.5.2: a code of under 112 bits is stored hashed; ASVS 6.6.2: it is bound to the
    request it was issued for, so a code for one verification never proves another.
    """
    # The code has a fixed length and comes last, so the concatenation is unambiguous.
    message = _DIGEST_CONTEXT + verification_id.encode("utf-8") + b"\x00" + code.encode("utf-8")
    return keyed_hash(profile, key, message).hex()


def code_matches(
    key: bytes, verification_id: str, code: str, digest: str, profile: str = INTL
) -> bool:
    """Return whether ``code`` is the one ``digest`` was made from, in constant time.

    Malformed codes (not exactly six ASCII digits) and malformed digests are simply False.
    """
    if not _is_well_formed(code) or not isinstance(digest, str) or not digest.isascii():
        return False
    expected = code_digest(key, verification_id, code, profile)
    return hmac.compare_digest(expected.encode("ascii"), digest.encode("ascii"))


def message_text(code: str) -> str:
    """Return the SMS body: the code, its lifetime and a warning never to share it (NIST)."""
    minutes = CODE_TTL_SECONDS // 60
    return (
        f"Your idv verification code is {code}. It expires in {minutes} minutes. "
        "Never share it: idv staff will never ask for it."
    )


class SmsSender(Protocol):
    """Something that delivers a text message to a phone number."""

    def send(self, to: str, code: str, text: str) -> None:
        """Deliver ``text`` (which contains ``code``) to the E.164 number ``to``."""


class NullSender:
    """A sender that drops every message: used when no sender is configured."""

    def send(self, to: str, code: str, text: str) -> None:
        """Do nothing."""


class FileSender:
    """Development sender: appends one JSON line per message to a file."""

    def __init__(self, path: str) -> None:
        """Remember ``path``; its parent directory is created on the first send."""
        self.path = path
        self._lock = threading.Lock()

    def send(self, to: str, code: str, text: str) -> None:
        """Append ``{"to", "code", "text", "sent_at"}`` as one JSON line (sent_at RFC 3339 UTC)."""
        sent_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
        line = json.dumps({"to": to, "code": code, "text": text, "sent_at": sent_at})
        with self._lock:
            parent = os.path.dirname(self.path)
            if parent:
                os.makedirs(parent, exist_ok=True)
            # Opened in append mode each time so log rotation or deletion is picked up.
            with open(self.path, "a", encoding="utf-8") as sink:
                sink.write(line + "\n")


class WebhookSender:
    """Sender that POSTs ``{"to", "code", "text"}`` as JSON to an SMS gateway, once."""

    def __init__(self, url: str, timeout: float = 3.0) -> None:
        """Check that ``url`` is http(s) and remember it with the ``timeout`` (seconds) that
        bounds the whole exchange, not each read (``service.outbound``)."""
        try:
            outbound.check_url(url)
        except ValueError:
            raise ValueError(
                "SMS webhook URL must be an absolute http:// or https:// URL"
            ) from None
        self.url = url
        self.timeout = timeout

    def send(self, to: str, code: str, text: str) -> None:
        """POST the message; raise SmsDeliveryError on a network error, timeout or non-2xx.

        No retry: a slow gateway may already have delivered the message, so the caller
        decides whether to issue a new code. No redirect is followed: the code goes to the
        configured gateway and nowhere else. Errors never carry the code or the URL.
        """
        body = json.dumps({"to": to, "code": code, "text": text}).encode("utf-8")
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        try:
            answer = outbound.post(self.url, body, headers, timeout=self.timeout)
        except outbound.OutboundTimeout:
            raise SmsDeliveryError("SMS webhook unreachable: timeout") from None
        except outbound.OutboundError as exc:
            raise SmsDeliveryError(f"SMS webhook unreachable: {exc}") from None
        if not 200 <= answer.status < 300:
            raise SmsDeliveryError(f"SMS webhook answered HTTP {answer.status}")


def sender_from_spec(spec: str | None) -> SmsSender:
    """Build the sender an ``IDV_SMS_SENDER`` value names.

    ``None`` or ``""`` → NullSender; ``file:PATH`` → FileSender; ``webhook:URL`` (http or https)
    → WebhookSender. Anything else raises ValueError.
    """
    if not spec:
        return NullSender()
    kind, sep, rest = spec.partition(":")
    if sep and kind == "file":
        if not rest:
            raise ValueError("IDV_SMS_SENDER 'file:' needs a path, e.g. file:/tmp/idv-sms.jsonl")
        return FileSender(rest)
    if sep and kind == "webhook":
        return WebhookSender(rest)
    raise ValueError("IDV_SMS_SENDER must be empty, 'file:PATH' or 'webhook:http(s)://...'")


# NIST SP 800-63B-4 out-of-band code: a proof is checked against the newest live challenges of
# its verification (``replay.live_challenges``), each a new code.
CODES_PER_PROOF = 5


def issue_challenge(port: FactorPort, record: Verification, subject: Subject) -> Issued:
    """Issue an SMS code, stored only as an HMAC bound to the verification; sent after the
    commit."""
    phone = port.phone(subject)
    assert phone is not None and subject.phone_hash is not None  # sms implies a phone
    # ASVS 6.6.3: SMS sends are limited per tenant and phone (keyed hash, never the number),
    # per phone across tenants, per tenant, and to the tenant's regions.
    port.charge_sms(phone, subject, record.action)
    code = new_code()
    expires = port.now + timedelta(seconds=CODE_TTL_SECONDS)
    digest = code_digest(port.derived_key("sms-code"), record.id, code, port.key_profile)
    port.add_challenge(record.id, "sms", digest, expires)
    port.audit("sms.sent", subject, {"verification_id": record.id})

    def send() -> None:
        try:
            port.send_sms(phone, code, message_text(code))
        except SmsDeliveryError:
            raise ServiceUnavailable("the SMS gateway did not accept the message") from None

    answer = {"factor": "sms", "sent_to": mask_phone(phone), "expires_at": rfc3339(expires)}
    return Issued(answer, after_commit=send)


def verify(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """The code of one of this verification's live SMS challenges."""
    key = port.derived_key("sms-code")
    for challenge_id, digest in attempt.live:
        if code_matches(key, attempt.record.id, proof["code"], digest, port.key_profile):
            return Check(True, uses_challenge(challenge_id))
    return Check(False)


SPEC = FactorSpec(
    name="sms",
    # THREATS.md T1: the SIM travels with the phone; carrier signals take SMS away.
    phone_bound=True,
    challenge="code",
    proof_fields=fields(code=Input(str, 64)),
    amr=("sms",),  # RFC 8176 §2
    replay="the challenge row of the code, used once",
    stores="nothing: the subject's phone number is the factor",
    challenge_fields=fields(sent_to=Input(str, description="sms: the masked phone")),
    enrollable=False,
    verify=verify,
    issue_challenge=issue_challenge,
    # NIST SP 800-63B-4: 6 digits, a new code per send, checked against the live ones.
    guessing=Guessing(
        10**CODE_DIGITS, 1, changing=True, codes_per_proof=CODES_PER_PROOF, sent=True
    ),
    phone_number=True,
)
