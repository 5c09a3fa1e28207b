"""Passkeys: WebAuthn credentials (W3C Web Authentication Level 2/3) through py_webauthn.

Pure: no framework, no storage; challenges and handles are passed in. The relying party is the
tenant's (``idv clients webauthn``): every ceremony checks its RP id hash and that the client data
came from one of its origins, the challenge idv issued (single-use, recorded by the caller),
user presence always and user verification where the action asks for it (WebAuthn §7.2).

A passkey lives on the phone, and a synced one on the unlocked phone too (THREATS.md T1), so it
is phone-bound like the device key: it never replaces the PIN in a sensitive option, and
recovery revokes it. ``transports`` are unsigned hints and a phone used over ``hybrid`` looks
like a roaming key, so no passkey is trusted as off-phone (that would need verified attestation
and an AAGUID allow-list).

NIST SP 800-63B-4 accepts syncable passkeys at AAL2; the ``amr`` says which kind answered:
``hwk`` for a credential that is not backup-eligible, ``swk`` for a synced one (BE flag), and
``user`` when the authenticator verified the user (RFC 8176 §2).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import parse_authenticator_data
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AttestationConveyancePreference,
    AttestationFormat,
    AuthenticatorSelectionCriteria,
    AuthenticatorTransport,
    CredentialDeviceType,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from service.domain.clock import rfc3339
from service.domain.errors import FactorNotAllowed, InvalidCode, InvalidRequest
from service.domain.phone import mask_phone
from service.factors.ports import (
    Attempt,
    Check,
    FactorPort,
    Issued,
    Prepared,
    StoredFactor,
    Subject,
    Verification,
)
from service.factors.spec import FactorSpec, Input, fields

CHALLENGE_BYTES = 32  # WebAuthn §13.4.3 asks for at least 16 random bytes; ASVS 6.7.2
HANDLE_BYTES = 32  # WebAuthn §14.6.1: user.id is random, never personal data (at most 64)
CEREMONY_SECONDS = 300  # a registration or authentication challenge lives 5 minutes
TIMEOUT_MS = CEREMONY_SECONDS * 1000
MAX_CREDENTIAL_CHARS = 64 * 1024  # a RegistrationResponseJSON with a full attestation chain fits
_TRANSPORTS = {t.value for t in AuthenticatorTransport}
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def b64url(data: bytes) -> str:
    """Base64url without padding (WebAuthn's JSON encoding of binary fields)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str) -> bytes:
    """Base64url with or without padding; ``binascii.Error``/``ValueError`` when it is not."""
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def check_relying_party(rp_id: str, origins: list[str]) -> tuple[str, list[str]]:
    """A tenant's RP id (a lowercase domain, WebAuthn §5.1.2) and the origins its ceremonies may
    come from: ``https://`` origins whose host is the RP id or a subdomain of it (§5.1.3),
    ``http://localhost`` for development. ``InvalidRequest`` for anything else."""
    rp_id = rp_id.strip().lower()
    if not 0 < len(rp_id) <= 253 or not all(_LABEL.match(p) for p in rp_id.split(".")):
        raise InvalidRequest(f"an RP id is a domain name such as loans.example, not {rp_id!r}")
    if not origins:
        raise InvalidRequest("give at least one --origin")
    checked = []
    for origin in origins:
        parsed = urlsplit(origin.strip())
        host, port = parsed.hostname or "", parsed.port if parsed.netloc else None
        local = parsed.scheme == "http" and host == rp_id == "localhost"
        if (parsed.scheme != "https" and not local) or parsed.path not in ("", "/"):
            raise InvalidRequest(f"an origin is https://HOST[:PORT], not {origin!r}")
        if parsed.query or parsed.fragment or parsed.username or parsed.password:
            raise InvalidRequest(f"an origin is https://HOST[:PORT], not {origin!r}")
        if host != rp_id and not host.endswith("." + rp_id):
            raise InvalidRequest(f"origin {origin!r} is not on the RP id {rp_id!r} or under it")
        checked.append(f"{parsed.scheme}://{host}" + (f":{port}" if port else ""))
    return rp_id, checked


@dataclass(frozen=True)
class Credential:
    """A registered passkey: what idv keeps (encrypted) in the factor's row."""

    credential_id: str  # base64url of the raw id
    public_key: str  # base64url of the COSE_Key
    sign_count: int
    transports: tuple[str, ...]
    backup_eligible: bool
    backup_state: bool
    aaguid: str
    fmt: str  # the attestation format that was verified ("none" accepted)
    user_handle: str  # the subject's WebAuthn user.id (base64url), random

    def to_json(self) -> str:
        """The stored form."""
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> Credential:
        """The stored form read back."""
        data = json.loads(text)
        data["transports"] = tuple(data["transports"])
        return cls(**data)


@dataclass(frozen=True)
class Authentication:
    """What a verified assertion says."""

    credential_id: str
    sign_count: int
    backup_eligible: bool
    user_verified: bool

    @property
    def amr(self) -> tuple[str, ...]:
        """RFC 8176 §2: ``hwk`` (device-bound) or ``swk`` (synced), and ``user`` after UV."""
        kind = "swk" if self.backup_eligible else "hwk"
        return (kind, "user") if self.user_verified else (kind,)


def new_challenge() -> bytes:
    """A fresh ceremony challenge."""
    return secrets.token_bytes(CHALLENGE_BYTES)


def new_user_handle() -> str:
    """A fresh random WebAuthn user handle (base64url), never derived from the subject id."""
    return b64url(secrets.token_bytes(HANDLE_BYTES))


def registration_options(
    *,
    rp_id: str,
    rp_name: str,
    user_handle: str,
    user_name: str,
    challenge: bytes,
    exclude: list[str],
) -> dict[str, Any]:
    """PublicKeyCredentialCreationOptions in their JSON form (binary fields base64url).

    Attestation ``none`` is asked for (no AAGUID allow-list is kept, so a verified chain would
    change nothing); a discoverable credential is preferred; ``exclude`` lists the subject's
    passkeys so an authenticator is not registered twice.
    """
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=rp_name,
        user_id=unb64url(user_handle),
        user_name=user_name,
        user_display_name=user_name,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        attestation=AttestationConveyancePreference.NONE,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.PREFERRED,
        ),
        exclude_credentials=[PublicKeyCredentialDescriptor(id=unb64url(c)) for c in exclude],
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def verify_registration(
    credential: dict[str, Any],
    *,
    challenge: bytes,
    rp_id: str,
    origins: list[str],
    user_handle: str,
) -> Credential | None:
    """The credential a RegistrationResponseJSON registers, or None when it does not verify
    (origin, RP id hash, challenge, user presence, attestation). Never raises."""
    if not _small(credential) or not isinstance(credential.get("response"), dict):
        return None
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origins,
        )
    except (WebAuthnException, ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None
    hints = credential["response"].get("transports") or []
    transports = tuple(t for t in hints if isinstance(t, str) and t in _TRANSPORTS)
    return Credential(
        credential_id=b64url(verified.credential_id),
        public_key=b64url(verified.credential_public_key),
        sign_count=verified.sign_count,
        transports=transports,
        backup_eligible=verified.credential_device_type == CredentialDeviceType.MULTI_DEVICE,
        backup_state=verified.credential_backed_up,
        aaguid=verified.aaguid,
        fmt=AttestationFormat(verified.fmt).value,
        user_handle=user_handle,
    )


def authentication_options(
    *, rp_id: str, challenge: bytes, allow: list[Credential], user_verification: bool
) -> dict[str, Any]:
    """PublicKeyCredentialRequestOptions in JSON form: the subject's passkeys in
    ``allowCredentials`` and ``userVerification`` ``required`` when the action asks for it."""
    options = generate_authentication_options(
        rp_id=rp_id,
        challenge=challenge,
        timeout=TIMEOUT_MS,
        allow_credentials=[
            PublicKeyCredentialDescriptor(
                id=unb64url(c.credential_id),
                transports=[AuthenticatorTransport(t) for t in c.transports] or None,
            )
            for c in allow
        ],
        user_verification=(
            UserVerificationRequirement.REQUIRED
            if user_verification
            else UserVerificationRequirement.PREFERRED
        ),
    )
    result: dict[str, Any] = json.loads(options_to_json(options))
    return result


def credential_id_of(credential: dict[str, Any]) -> str | None:
    """The ``rawId`` an AuthenticationResponseJSON names (base64url), or None."""
    raw = credential.get("rawId") if isinstance(credential, dict) else None
    return raw.rstrip("=") if isinstance(raw, str) and raw else None


def challenge_of(credential: dict[str, Any]) -> str | None:
    """The challenge the client data of a response claims (base64url), to pick the one issued
    challenge it answers; the signature check then proves it. None when unreadable."""
    try:
        data = json.loads(unb64url(credential["response"]["clientDataJSON"]))
        challenge = data["challenge"]
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    return challenge.rstrip("=") if isinstance(challenge, str) else None


def verify_authentication(
    credential: dict[str, Any],
    stored: Credential,
    *,
    challenge: bytes,
    rp_id: str,
    origins: list[str],
    user_verification: bool,
) -> Authentication | None:
    """What an AuthenticationResponseJSON proves, or None when it does not verify: origin, RP
    id hash, challenge, user presence, user verification when ``user_verification``, the
    signature by ``stored``'s key, and a ``userHandle`` (when sent) equal to the subject's.

    The signature counter is NOT judged here (see ``counter_regressed``): a clone is told apart
    from a forgery only once the signature holds. Never raises.
    """
    if not _small(credential) or not isinstance(credential.get("response"), dict):
        return None
    handle = credential["response"].get("userHandle")
    if handle not in (None, "") and (
        not isinstance(handle, str) or handle.rstrip("=") != stored.user_handle
    ):
        return None
    try:
        verified = verify_authentication_response(
            credential=credential,
            expected_challenge=challenge,
            expected_rp_id=rp_id,
            expected_origin=origins,
            credential_public_key=unb64url(stored.public_key),
            credential_current_sign_count=0,  # judged by counter_regressed, after the signature
            require_user_verification=user_verification,
        )
        be = parse_authenticator_data(
            unb64url(credential["response"]["authenticatorData"])
        ).flags.be
    except (WebAuthnException, ValueError, TypeError, KeyError, AttributeError, binascii.Error):
        return None
    if b64url(verified.credential_id) != stored.credential_id:
        return None
    return Authentication(
        stored.credential_id, verified.new_sign_count, bool(be), bool(verified.user_verified)
    )


def counter_regressed(stored: int, new: int) -> bool:
    """WebAuthn §6.1.1: where the authenticator keeps a counter (either value non-zero), it
    must grow; one that does not is a possible clone of the authenticator."""
    return (stored > 0 or new > 0) and new <= stored


def _small(credential: Any) -> bool:
    """A JSON object of a sane size (request bodies are capped at 1 MiB anyway)."""
    if not isinstance(credential, dict):
        return False
    try:
        return len(json.dumps(credential)) <= MAX_CREDENTIAL_CHARS
    except (TypeError, ValueError):
        return False


# -- in idv's flows, through the port (registration, request options, proofs) ----------------
# The tenant's relying party (``idv clients webauthn``); the subject's random WebAuthn user
# handle; the pending registration's challenge, in the pending factor's encrypted row (bound to
# the subject, single-use, 5 minutes); the verification's issued challenges (challenge rows,
# like a device nonce); the signature counter's compare-and-set.
CEREMONY = timedelta(seconds=CEREMONY_SECONDS)


def relying_party(port: FactorPort) -> tuple[str, list[str]]:
    """The tenant's RP id and origins; a tenant without them has no passkeys (API.md)."""
    client = port.client
    if not client.webauthn_rp_id or not client.webauthn_origins:
        raise FactorNotAllowed("this client has no WebAuthn relying party (idv clients webauthn)")
    return client.webauthn_rp_id, list(client.webauthn_origins)


def credentials(
    port: FactorPort, factors: list[StoredFactor]
) -> list[tuple[StoredFactor, Credential]]:
    """The stored credentials of the active passkeys among ``factors``, with their rows."""
    return [
        (f, Credential.from_json(port.open(f)))
        for f in factors
        if f.type == SPEC.name and f.status == "active"
    ]


def prepare(port: FactorPort, factor_id: str, body: Mapping[str, Any]) -> Prepared:
    """A pending passkey: creation options with a fresh challenge bound to this factor (so to
    the subject), kept in the pending row until activation spends it."""
    rp_id, _ = relying_party(port)
    challenge = new_challenge()
    label = body.get("label")
    options: dict[str, Any] = {}

    def bind(port: FactorPort, subject: Subject) -> None:
        # WebAuthn §14.6.1: user.id is a random handle, the same for all the subject's passkeys
        # (so an authenticator keeps one credential per account), never the subject id.
        handle = port.webauthn_handle(subject, new_user_handle())
        expires = port.now + CEREMONY
        pending = {"challenge": b64url(challenge), "expires": expires.timestamp()}
        port.replace_secret(
            factor_id, port.seal(factor_id, json.dumps(pending | {"handle": handle}))
        )
        phone = port.phone(subject)
        existing = credentials(port, port.factors(subject))
        client = port.client
        options.update(
            registration_options(
                rp_id=rp_id,
                rp_name=client.issuer or client.name,
                user_handle=handle,
                # What the authenticator shows: the label given, else the masked phone.
                user_name=label or (mask_phone(phone) if phone else "idv"),
                challenge=challenge,
                exclude=[c.credential_id for _, c in existing],
            )
        )

    return Prepared("{}", "pending", after_insert=bind, shown=lambda _p, _s: {"options": options})


def activate(port: FactorPort, factor: StoredFactor, body: Mapping[str, Any]) -> None:
    """Verify the RegistrationResponseJSON against the pending registration and store the
    credential; ``InvalidCode`` when it does not verify or the challenge expired."""
    credential = body.get("credential")
    if not isinstance(credential, dict):
        raise InvalidRequest("a passkey is activated with 'credential' (RegistrationResponseJSON)")
    rp_id, origins = relying_party(port)
    pending = json.loads(port.open(factor))
    if "challenge" not in pending or pending["expires"] <= port.now.timestamp():
        raise InvalidCode("the registration expired; enrol the passkey again")
    registered = verify_registration(
        credential,
        challenge=unb64url(pending["challenge"]),
        rp_id=rp_id,
        origins=origins,
        user_handle=pending["handle"],
    )
    if registered is None:
        raise InvalidCode("the passkey registration does not verify")
    secret_ct = port.seal(factor.id, registered.to_json())
    # Pending → active once: the registration challenge is spent with it (single use).
    if not port.activate_credential(factor.id, secret_ct, registered.sign_count):
        raise InvalidCode("the registration was already used")


def issue_challenge(port: FactorPort, record: Verification, subject: Subject) -> Issued:
    """Request options for the subject's active passkeys; user verification required for
    the actions the policy marks sensitive (API.md, Passkeys)."""
    rp_id, _ = relying_party(port)
    rule = port.policy.action(record.action)
    allow = [
        c
        for _, c in credentials(port, port.factors(subject))
        if not (rule.device_bound_keys and c.backup_eligible)  # only those that can count
    ]
    raw = new_challenge()
    expires = min(port.now + CEREMONY, record.expires_at)
    port.add_challenge(record.id, SPEC.name, b64url(raw), expires)
    options = authentication_options(
        rp_id=rp_id, challenge=raw, allow=allow, user_verification=rule.sensitive
    )
    return Issued({"factor": SPEC.name, "options": options, "expires_at": rfc3339(expires)})


def check_proof(port: FactorPort, proof: Mapping[str, Any], attempt: Attempt) -> Check:
    """An assertion by one of the subject's passkeys over a live challenge of this
    verification, checked against the tenant's relying party; single use of the challenge and
    the counter's compare-and-set together. Never raises for a wrong proof."""
    client = port.client
    if not client.webauthn_rp_id:
        return Check(False)
    credential = proof["credential"]
    claimed_id, claimed_challenge = credential_id_of(credential), challenge_of(credential)
    issued = next((cid for cid, text in attempt.live if text == claimed_challenge), None)
    match = next(
        ((f, c) for f, c in credentials(port, attempt.candidates) if c.credential_id == claimed_id),
        None,
    )
    if issued is None or match is None or claimed_challenge is None:
        return Check(False)
    factor, stored = match
    rule = port.policy.action(attempt.record.action)
    result = verify_authentication(
        credential,
        stored,
        challenge=unb64url(claimed_challenge),
        rp_id=client.webauthn_rp_id,
        origins=list(client.webauthn_origins),
        user_verification=rule.sensitive,
    )
    if result is None:
        return Check(False)
    if result.backup_eligible and rule.device_bound_keys:
        return Check(False)  # a synced passkey where the policy asks for a device-bound key
    seen, new = factor.sign_count or 0, result.sign_count
    if counter_regressed(seen, new):  # WebAuthn §6.1.1: refused, and audited as a possible clone
        detail = {"factor_id": factor.id, "sign_count": new}
        return Check(False, alarm="passkey.clone_suspected", detail=detail)
    fid = factor.id
    return Check(
        True,
        lambda p: p.use_challenge(issued) and p.advance_sign_count(fid, seen, new),
        amr=result.amr,
    )


SPEC = FactorSpec(
    name="passkey",
    # THREATS.md T1: a passkey lives on the phone (a synced one on the unlocked phone too).
    phone_bound=True,
    challenge="webauthn",
    proof_fields=fields(
        credential=Input(dict, description="passkey: the AuthenticationResponseJSON")
    ),
    amr=(),  # hwk or swk, and user, come from each proof (Authentication.amr)
    replay="the challenge row it answers, used once, and the signature counter's compare-and-set",
    stores="the credential id, COSE public key, transports, backup flags; the counter column",
    enrol_fields=fields(),
    enrolled_fields=fields(
        options=Input(
            dict,
            description="passkey: PublicKeyCredentialCreationOptions (JSON form) for "
            "navigator.credentials.create()",
        )
    ),
    challenge_fields=fields(
        options=Input(
            dict,
            description="passkey: PublicKeyCredentialRequestOptions (JSON form) for "
            "navigator.credentials.get()",
        )
    ),
    activate_fields=fields(
        credential=Input(dict, description="passkey: the RegistrationResponseJSON")
    ),
    # Like a TOTP set-up: a new registration voids one never finished (no pile of pending rows).
    replaces="pending",
    verify=check_proof,
    prepare=prepare,
    activate=activate,
    issue_challenge=issue_challenge,
)
