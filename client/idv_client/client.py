"""``IdvClient``: one method per route of the idv HTTP contract (API.md), blocking (httpx).

The routes, bodies, retries and errors are described once in ``_api`` and ``_core``; this module
only sends and sleeps. ``AsyncIdvClient`` (``idv_client.aio``) has the same methods.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, TypeVar

import httpx

from idv_client import _api as api
from idv_client._core import Call, ClientBase, Exchange
from idv_client.errors import IdvError
from idv_client.models import (
    CarrierEventResult,
    Challenge,
    ClientInfo,
    EnrolledFactor,
    Factor,
    FactorStatus,
    ProofResult,
    Subject,
    Verification,
)
from idv_client.types import CarrierEventType, DeviceAlg, FactorType

T = TypeVar("T")


class IdvClient(ClientBase[httpx.BaseTransport]):
    """A client of one idv deployment with one API key (``IdvClient.from_env()`` reads
    ``IDV_URL`` and ``IDV_API_KEY``).

    Connections are pooled (one ``httpx.Client``); every attempt has ``timeout`` seconds. GETs,
    and POSTs (each with its own ``Idempotency-Key``, reused on retries), are retried up to
    ``retries`` times on transport errors, 502/503/504 and, for POSTs, 409 ``conflict``; PUT and
    DELETE only when the connection never opened. Errors raise a subclass of ``IdvError`` (see
    README, "Methods"). Use it as a context manager or call ``close()``.
    """

    def _open(self, client_kwargs: dict[str, Any], transport: httpx.BaseTransport | None) -> None:
        self._http = httpx.Client(**client_kwargs, transport=transport)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> IdvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self, call: Call[T]) -> T:
        exchange = Exchange(call, self._options)
        while True:
            try:
                response = self._http.request(**exchange.request())
            except httpx.HTTPError as exc:
                time.sleep(exchange.after_error(exc))
                continue
            pause = exchange.after_response(response)
            if pause is None:
                return exchange.result(response)
            time.sleep(pause)

    # -- client and subjects --------------------------------------------------------------------
    def whoami(self) -> ClientInfo:
        """``GET /v1/client``: who this key is; ``client_id`` is the ``aud`` of its assertions."""
        return self._run(api.whoami())

    def put_subject(self, subject_id: str, phone: str, *, assertion: str | None = None) -> Subject:
        """Create a subject or set its phone (a ``change_phone`` assertion once it has a factor
        other than SMS); ``created`` is True for a new subject."""
        return self._run(api.put_subject(subject_id, phone, assertion))

    def delete_subject(self, subject_id: str, *, assertion: str | None = None) -> None:
        """Erase a subject's personal data and factors (the audit trail stays, pseudonymised);
        once it has a factor other than SMS, with a ``delete_account`` assertion."""
        self._run(api.delete_subject(subject_id, assertion))

    def export_subject(self, subject_id: str) -> dict[str, Any]:
        """What idv holds about the subject, for a person's access request (PIPL art. 45)."""
        return self._run(api.export_subject(subject_id))

    def admin_erase_subject(
        self, subject_id: str, *, operator: str, tenant: str | None = None
    ) -> None:
        """Support desk (scope ``admin``): erase a subject without its step-up; ``operator``
        names the person at the desk (``Idv-Operator``; audited and alerted)."""
        self._run(api.admin_erase_subject(subject_id, operator, tenant))

    # -- factors --------------------------------------------------------------------------------
    def enroll_totp(
        self, subject_id: str, *, label: str | None = None, assertion: str | None = None
    ) -> EnrolledFactor:
        """A pending TOTP factor: show ``secret``/``otpauth_uri``/``qr_svg`` once, then
        ``activate_factor`` with a current code. ``label``: what the authenticator app shows
        beside the tenant's name (e.g. the masked phone), never the subject id."""
        return self._run(api.enroll_totp(subject_id, label, assertion))

    def activate_factor(self, subject_id: str, factor_id: str, code: str) -> FactorStatus:
        """Activate a pending TOTP factor (raises ``InvalidCode``)."""
        return self._run(api.activate_factor(subject_id, factor_id, {"code": code}))

    def enroll_knowledge(
        self, subject_id: str, secret: str, *, assertion: str | None = None
    ) -> EnrolledFactor:
        """A PIN or passphrase the user chose (raises ``WeakSecret`` for guessable ones)."""
        return self._run(api.enroll_knowledge(subject_id, secret, assertion))

    def enroll_device(
        self,
        subject_id: str,
        public_key_pem: str,
        alg: DeviceAlg,
        *,
        label: str | None = None,
        assertion: str | None = None,
    ) -> EnrolledFactor:
        """A device key: PEM SubjectPublicKeyInfo, ``alg`` ``ES256``, ``EdDSA`` (or ``SM2``)."""
        return self._run(api.enroll_device(subject_id, public_key_pem, alg, label, assertion))

    def enroll_recovery_codes(
        self, subject_id: str, *, assertion: str | None = None
    ) -> EnrolledFactor:
        """A new set of recovery codes (``codes``, shown once; the old set is void)."""
        return self._run(api.enroll_recovery_codes(subject_id, assertion))

    def enroll_passkey(
        self, subject_id: str, *, label: str | None = None, assertion: str | None = None
    ) -> EnrolledFactor:
        """A pending passkey: hand ``options`` to ``navigator.credentials.create()``."""
        return self._run(api.enroll_passkey(subject_id, label, assertion))

    def activate_passkey(
        self, subject_id: str, factor_id: str, credential: dict[str, Any]
    ) -> FactorStatus:
        """Activate a pending passkey with the browser's RegistrationResponseJSON."""
        return self._run(api.activate_factor(subject_id, factor_id, {"credential": credential}))

    def finish_passkey(
        self, subject_id: str, factor_id: str, credential: dict[str, Any]
    ) -> FactorStatus:
        """Finish a passkey's registration: ``activate_passkey`` under the name of the
        ceremony's second half (``credential``: ``navigator.credentials.create()``'s answer,
        serialised with ``PublicKeyCredential.toJSON()``)."""
        return self.activate_passkey(subject_id, factor_id, credential)

    def list_factors(self, subject_id: str) -> list[Factor]:
        """The subject's factors (never a secret; ``remaining`` for recovery codes)."""
        return self._run(api.list_factors(subject_id))

    def remove_factor(
        self, subject_id: str, factor_id: str, *, assertion: str | None = None
    ) -> None:
        """Remove a factor (an ``enroll_factor`` assertion once the subject has a strong one)."""
        self._run(api.remove_factor(subject_id, factor_id, assertion))

    # -- verifications --------------------------------------------------------------------------
    def start_verification(
        self, subject_id: str, action: str, *, context: dict[str, Any] | None = None
    ) -> Verification:
        """Start a step-up for ``action``; ``status`` is ``pending`` (see ``options``) or
        ``denied`` (see ``reasons`` and ``held_until``)."""
        return self._run(api.start_verification(subject_id, action, context))

    def get_verification(self, verification_id: str) -> Verification:
        """The verification's current status, options, reasons and times (never the assertion)."""
        return self._run(api.get_verification(verification_id))

    def send_challenge(self, verification_id: str, factor: FactorType) -> Challenge:
        """``sms``: a code goes to the phone; ``device``: a ``challenge`` string to sign;
        ``passkey``: request ``options`` for ``navigator.credentials.get()``."""
        return self._run(api.send_challenge(verification_id, factor))

    def passkey_challenge(self, verification_id: str) -> Challenge:
        """Request ``options`` for ``navigator.credentials.get()`` (``allowCredentials``: the
        subject's passkeys; ``userVerification: "required"`` for sensitive actions)."""
        return self.send_challenge(verification_id, "passkey")

    def prove(self, verification_id: str, factor: FactorType, **fields: Any) -> ProofResult:
        """Submit any proof (the typed ``prove_*`` helpers name the fields). A wrong one answers
        ``accepted=False`` with ``attempts_left``, not an exception."""
        return self._run(api.prove(verification_id, factor, fields))

    def prove_totp(self, verification_id: str, code: str) -> ProofResult:
        """The code of the authenticator app."""
        return self.prove(verification_id, "totp", code=code)

    def prove_sms(self, verification_id: str, code: str) -> ProofResult:
        """The code sent by ``send_challenge(verification_id, "sms")``."""
        return self.prove(verification_id, "sms", code=code)

    def prove_pin(self, verification_id: str, secret: str) -> ProofResult:
        """The PIN or passphrase (factor ``knowledge``)."""
        return self.prove(verification_id, "knowledge", secret=secret)

    def prove_device(self, verification_id: str, factor_id: str, signature: str) -> ProofResult:
        """The device's signature of the challenge (base64url: DER for ES256, raw for EdDSA)."""
        return self.prove(verification_id, "device", factor_id=factor_id, signature=signature)

    def prove_recovery_code(self, verification_id: str, code: str) -> ProofResult:
        """One recovery code (case, spaces and hyphens do not matter)."""
        return self.prove(verification_id, "recovery_code", code=code)

    def prove_attested(self, verification_id: str, attestation: str) -> ProofResult:
        """The tenant's attestation JWS (``typ: idv-attestation+jwt``) that it checked the
        person itself (face, eID, ID document, in person)."""
        return self.prove(verification_id, "attested", attestation=attestation)

    def prove_passkey(self, verification_id: str, credential: dict[str, Any]) -> ProofResult:
        """The browser's AuthenticationResponseJSON."""
        return self.prove(verification_id, "passkey", credential=credential)

    def cancel_recovery(self, verification_id: str, assertion: str) -> Verification:
        """Cancel a ``waiting`` delayed recovery with a ``cancel_recovery`` assertion."""
        return self._run(api.cancel_recovery(verification_id, assertion))

    # -- carrier and keys -----------------------------------------------------------------------
    def report_carrier_event(
        self, phone: str, type: CarrierEventType, occurred_at: datetime | str
    ) -> CarrierEventResult:
        """Scope ``carrier``: a SIM event for a phone (applies to every tenant's subject)."""
        return self._run(api.report_carrier_event(phone, type, occurred_at))

    def jwks(self) -> dict[str, Any]:
        """``GET /.well-known/jwks.json``."""
        return self._run(api.jwks())


__all__ = ["IdvClient", "IdvError"]
