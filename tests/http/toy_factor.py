"""A toy factor, defined outside idv, to show that a factor is one plug-in (issue 22).

The person enrols a word; a challenge is a server nonce; the proof is HMAC-SHA256(word, nonce).
It is not a real authenticator (a word typed into a page is a password): it only exercises every
hook (prepare, issue_challenge, verify) and the single use of a challenge row, through the port,
with no file of idv changed. ``test_toy_factor.py`` plugs it in with ``IDV_EXTRA_FACTORS``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from service.domain.clock import rfc3339
from service.domain.errors import InvalidRequest
from service.factors.ports import (
    Attempt,
    Check,
    FactorPort,
    Issued,
    Prepared,
    Subject,
    Verification,
    uses_challenge,
)
from service.factors.spec import FactorSpec, Input, fields

NAME = "toy"


def answer(word: str, nonce: str) -> str:
    """What the person's side sends back for ``nonce``."""
    return hmac.new(word.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def prepare(port: FactorPort, factor_id: str, body: Mapping[str, Any]) -> Prepared:
    word = body.get("word")
    if not isinstance(word, str) or len(word) < 8:
        raise InvalidRequest("a toy factor needs 'word' (8 characters at least)")
    return Prepared(word)


def issue_challenge(port: FactorPort, record: Verification, subject: Subject) -> Issued:
    nonce = secrets.token_urlsafe(32)
    expires = min(port.now + timedelta(minutes=2), record.expires_at)
    port.add_challenge(record.id, NAME, nonce, expires)
    return Issued({"factor": NAME, "challenge": nonce, "expires_at": rfc3339(expires)})


def verify(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    for factor in attempt.candidates:
        word = port.open(factor)
        for challenge_id, nonce in attempt.live:
            if hmac.compare_digest(answer(word, nonce), proof["answer"]):
                return Check(True, uses_challenge(challenge_id))
    return Check(False)


SPEC = FactorSpec(
    name=NAME,
    phone_bound=False,
    challenge="nonce",
    proof_fields=fields(answer=Input(str, 64)),
    amr=("kba",),  # RFC 8176 §2, the nearest registered value for a test
    replay="the challenge row it answers, used once",
    stores="the enrolled word",
    enrol_fields=fields(word=Input(str, 200)),
    challenge_fields=fields(challenge=Input(str, description="toy: the nonce to answer")),
    verify=verify,
    prepare=prepare,
    issue_challenge=issue_challenge,
)
