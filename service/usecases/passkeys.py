"""Passkeys in idv's flows: registration options and activation, request options, proofs.

The ceremonies are verified by the pure ``service.factors.passkey``; this module reads and writes
what they need: the tenant's relying party (``idv clients webauthn``), the subject's random
WebAuthn user handle, the pending registration's challenge (in the pending factor's encrypted
row: bound to the subject, single-use, 5 minutes), the verification's issued challenges (the
``challenges`` table, like a device nonce) and the signature counter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import FactorNotAllowed, InvalidCode, InvalidRequest
from service.domain.phone import mask_phone
from service.factors import passkey
from service.storage import factors as factor_store
from service.storage import replay
from service.storage import subjects as subject_store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.storage.verifications import VerificationRecord
from service.usecases.prepared import Prepared
from service.usecases.subjects import phone_of

CEREMONY = timedelta(seconds=passkey.CEREMONY_SECONDS)


def relying_party(client: ClientRecord) -> tuple[str, list[str]]:
    """The tenant's RP id and origins; a tenant without them has no passkeys (API.md)."""
    if not client.webauthn_rp_id or not client.webauthn_origins:
        raise FactorNotAllowed("this client has no WebAuthn relying party (idv clients webauthn)")
    return client.webauthn_rp_id, list(client.webauthn_origins)


def credentials(
    ctx: ServiceContext, factors: list[factor_store.FactorRecord]
) -> list[tuple[factor_store.FactorRecord, passkey.Credential]]:
    """The stored credentials of the active passkeys among ``factors``, with their factor ids."""
    return [
        (f, passkey.Credential.from_json(ctx.keys.decrypt(f.secret_ct, f"factor:{f.id}")))
        for f in factors
        if f.type == "passkey" and f.status == "active"
    ]


def prepare(ctx: ServiceContext, client: ClientRecord, factor_id: str, body: dict) -> Prepared:
    """A pending passkey: creation options with a fresh challenge bound to this factor (so to
    the subject), kept in the pending row until activation spends it."""
    rp_id, _ = relying_party(client)
    challenge = passkey.new_challenge()
    label = body.get("label")
    options: dict[str, Any] = {}

    def bind(conn: Connection, subject: SubjectRecord) -> None:
        # WebAuthn §14.6.1: user.id is a random handle, the same for all the subject's passkeys
        # (so an authenticator keeps one credential per account), never the subject id.
        handle = subject_store.webauthn_handle(conn, subject.pk, passkey.new_user_handle())
        expires = ctx.clock() + CEREMONY
        pending = {"challenge": passkey.b64url(challenge), "expires": expires.timestamp()}
        factor_store.replace_secret(
            conn,
            factor_id,
            ctx.keys.encrypt(json.dumps(pending | {"handle": handle}), f"factor:{factor_id}"),
        )
        phone = phone_of(ctx, subject)
        existing = credentials(ctx, factor_store.for_subject(conn, subject.pk))
        options.update(
            passkey.registration_options(
                rp_id=rp_id,
                rp_name=client.issuer or client.name,
                user_handle=handle,
                # What the authenticator shows: the label given, else the masked phone.
                user_name=label or (mask_phone(phone) if phone else "idv"),
                challenge=challenge,
                exclude=[c.credential_id for _, c in existing],
            )
        )

    return Prepared("{}", "pending", after_insert=bind, shown=lambda _: {"options": options})


def activate(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    factor: factor_store.FactorRecord,
    body: dict[str, Any],
    now: datetime,
) -> None:
    """Verify the RegistrationResponseJSON against the pending registration and store the
    credential; ``InvalidCode`` when it does not verify or the challenge expired."""
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise InvalidRequest("a passkey is activated with 'credential' (RegistrationResponseJSON)")
    rp_id, origins = relying_party(client)
    pending = json.loads(ctx.keys.decrypt(factor.secret_ct, f"factor:{factor.id}"))
    if "challenge" not in pending or pending["expires"] <= now.timestamp():
        raise InvalidCode("the registration expired; enrol the passkey again")
    registered = passkey.verify_registration(
        credential,
        challenge=passkey.unb64url(pending["challenge"]),
        rp_id=rp_id,
        origins=origins,
        user_handle=pending["handle"],
    )
    if registered is None:
        raise InvalidCode("the passkey registration does not verify")
    secret_ct = ctx.keys.encrypt(registered.to_json(), f"factor:{factor.id}")
    # Pending → active once: the registration challenge is spent with it (single use).
    if not factor_store.activate_credential(conn, factor.id, secret_ct, registered.sign_count, now):
        raise InvalidCode("the registration was already used")


def challenge(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    record: VerificationRecord,
    subject: SubjectRecord,
    now: datetime,
) -> dict[str, Any]:
    """Request options for the subject's active passkeys; user verification required for
    the actions the policy marks sensitive (API.md, Passkeys)."""
    rp_id, _ = relying_party(client)
    rule = ctx.policy.action(record.action)
    allow = [
        c
        for _, c in credentials(ctx, factor_store.for_subject(conn, subject.pk))
        if not (rule.device_bound_keys and c.backup_eligible)  # only those that can count
    ]
    raw = passkey.new_challenge()
    expires = min(now + CEREMONY, record.expires_at)
    replay.add_challenge(
        conn,
        verification_id=record.id,
        factor="passkey",
        digest=passkey.b64url(raw),
        now=now,
        expires_at=expires,
    )
    options = passkey.authentication_options(
        rp_id=rp_id,
        challenge=raw,
        allow=allow,
        user_verification=rule.sensitive,
    )
    return {"factor": "passkey", "options": options, "expires_at": rfc3339(expires)}


@dataclass(frozen=True)
class Verdict:
    """A passkey proof judged: accepted, or refused (``cloned`` when the signature held but the
    counter did not grow)."""

    accepted: bool
    factor_id: str | None = None
    challenge_id: int | None = None
    seen_count: int = 0
    new_count: int = 0
    amr: tuple[str, ...] = ()
    cloned: bool = False


def judge(
    ctx: ServiceContext,
    client: ClientRecord,
    record: VerificationRecord,
    credential: dict[str, Any],
    candidates: list[factor_store.FactorRecord],
    live: list[tuple[int, str]],
) -> Verdict:
    """Verify an AuthenticationResponseJSON against the live challenges of this verification
    and the subject's active passkeys. Never raises for a wrong proof."""
    if not client.webauthn_rp_id:
        return Verdict(False)
    rp_id, origins = client.webauthn_rp_id, list(client.webauthn_origins)
    claimed_id = passkey.credential_id_of(credential)
    claimed_challenge = passkey.challenge_of(credential)
    issued = next((cid for cid, text in live if text == claimed_challenge), None)
    match = next(
        ((f, c) for f, c in credentials(ctx, candidates) if c.credential_id == claimed_id), None
    )
    if issued is None or match is None or claimed_challenge is None:
        return Verdict(False)
    factor, stored = match
    result = passkey.verify_authentication(
        credential,
        stored,
        challenge=passkey.unb64url(claimed_challenge),
        rp_id=rp_id,
        origins=origins,
        user_verification=ctx.policy.action(record.action).sensitive,
    )
    if result is None:
        return Verdict(False)
    if result.backup_eligible and ctx.policy.action(record.action).device_bound_keys:
        return Verdict(False)  # a synced passkey where the policy asks for a device-bound key
    seen = factor.sign_count or 0
    if passkey.counter_regressed(seen, result.sign_count):
        return Verdict(False, factor.id, issued, seen, result.sign_count, cloned=True)
    return Verdict(True, factor.id, issued, seen, result.sign_count, result.amr)
