"""``IdvClient``: one method per route of the idv HTTP contract (API.md)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx

from idv_client.errors import IdvError, TransportError, error_for
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

# Errors raised before a single byte of the request left this process: safe to retry any method.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_RETRY_STATUS = frozenset({502, 503, 504})


def _seg(value: str) -> str:
    """One URL path segment (subject and factor ids are the caller's strings)."""
    return quote(value, safe="")


def _rfc3339(value: datetime | str) -> str:
    if isinstance(value, str):
        return value
    if value.tzinfo is None:
        raise ValueError("occurred_at must be timezone-aware")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class IdvClient:
    """A client of one idv deployment with one API key.

    Connections are pooled and reused (one ``httpx.Client``); every call has ``timeout`` seconds.
    Retries happen only where they cannot do anything twice: GET requests (on transport errors
    and 502/503/504) and any request whose connection could not be opened. Use it as a context
    manager or call ``close()``.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retries = retries
        self.backoff = backoff
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": "idv-client-python/0.1",
            },
            timeout=timeout,
            transport=transport,
        )

    # -- plumbing -------------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> IdvClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        safe = method == "GET"
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, json=body)
            except _NOT_SENT as exc:
                if attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise TransportError(f"{method} {path}: {exc!r}") from exc
            except httpx.HTTPError as exc:  # the request may have reached idv: only GET again
                if safe and attempt < self.retries:
                    attempt += 1
                    time.sleep(self.backoff * 2 ** (attempt - 1))
                    continue
                raise TransportError(f"{method} {path}: {exc!r}") from exc
            if safe and response.status_code in _RETRY_STATUS and attempt < self.retries:
                attempt += 1
                time.sleep(self.backoff * 2 ** (attempt - 1))
                continue
            return self._result(response)

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        if response.status_code < 400:
            if response.status_code == 204 or not response.content:
                return None
            data = response.json()
            if isinstance(data, dict):
                data.setdefault("_status", response.status_code)
            return data
        code, message = None, response.reason_phrase
        try:
            data = response.json()
            code, message = data.get("error"), data.get("message", message)
        except ValueError:
            pass
        retry_after = None
        raw = response.headers.get("Retry-After")
        if raw and raw.strip().isdigit():
            retry_after = int(raw.strip())
        raise error_for(response.status_code, code, message, retry_after)

    @staticmethod
    def _strip(data: dict[str, Any]) -> dict[str, Any]:
        data.pop("_status", None)
        return data

    # -- client ---------------------------------------------------------------------------------
    def whoami(self) -> ClientInfo:
        """``GET /v1/client``: who this key is; ``client_id`` is the ``aud`` of its assertions."""
        return ClientInfo.from_json(self._strip(self._request("GET", "/v1/client")))

    # -- subjects -------------------------------------------------------------------------------
    def put_subject(self, subject_id: str, phone: str, *, assertion: str | None = None) -> Subject:
        """Create a subject or set its phone (a ``change_phone`` assertion once it has a strong
        factor)."""
        body: dict[str, Any] = {"phone": phone}
        if assertion:
            body["assertion"] = assertion
        data = self._request("PUT", f"/v1/subjects/{_seg(subject_id)}", body)
        created = data.pop("_status", 200) == 201
        return Subject.from_json({**data, "created": created})

    def delete_subject(self, subject_id: str) -> None:
        """Erase a subject's personal data and factors (the audit trail stays, pseudonymised)."""
        self._request("DELETE", f"/v1/subjects/{_seg(subject_id)}")

    # -- factors --------------------------------------------------------------------------------
    def _enroll(self, subject_id: str, body: dict[str, Any]) -> EnrolledFactor:
        data = self._request("POST", f"/v1/subjects/{_seg(subject_id)}/factors", body)
        return EnrolledFactor.from_json(self._strip(data))

    def enroll_totp(self, subject_id: str, *, assertion: str | None = None) -> EnrolledFactor:
        """A pending TOTP factor: show ``secret``/``otpauth_uri``/``qr_svg`` once, then
        ``activate_factor`` with a current code."""
        body: dict[str, Any] = {"type": "totp"}
        if assertion:
            body["assertion"] = assertion
        return self._enroll(subject_id, body)

    def activate_factor(self, subject_id: str, factor_id: str, code: str) -> FactorStatus:
        """Activate a pending TOTP factor (raises ``InvalidCode``)."""
        path = f"/v1/subjects/{_seg(subject_id)}/factors/{_seg(factor_id)}/activate"
        return FactorStatus.from_json(self._strip(self._request("POST", path, {"code": code})))

    def enroll_knowledge(
        self, subject_id: str, secret: str, *, assertion: str | None = None
    ) -> EnrolledFactor:
        """A PIN or passphrase the user chose (raises ``WeakSecret`` for guessable ones)."""
        body: dict[str, Any] = {"type": "knowledge", "secret": secret}
        if assertion:
            body["assertion"] = assertion
        return self._enroll(subject_id, body)

    def enroll_device(
        self,
        subject_id: str,
        public_key_pem: str,
        alg: str,
        *,
        label: str | None = None,
        assertion: str | None = None,
    ) -> EnrolledFactor:
        """A device key: PEM SubjectPublicKeyInfo, ``alg`` ``ES256`` or ``EdDSA``."""
        body: dict[str, Any] = {"type": "device", "public_key": public_key_pem, "alg": alg}
        if label is not None:
            body["label"] = label
        if assertion:
            body["assertion"] = assertion
        return self._enroll(subject_id, body)

    def list_factors(self, subject_id: str) -> list[Factor]:
        data = self._request("GET", f"/v1/subjects/{_seg(subject_id)}/factors")
        return [Factor.from_json(f) for f in data["factors"]]

    def remove_factor(
        self, subject_id: str, factor_id: str, *, assertion: str | None = None
    ) -> None:
        """Remove a factor (an ``enroll_factor`` assertion once the subject has a strong one)."""
        body = {"assertion": assertion} if assertion else None
        self._request("DELETE", f"/v1/subjects/{_seg(subject_id)}/factors/{_seg(factor_id)}", body)

    # -- verifications --------------------------------------------------------------------------
    def start_verification(
        self, subject_id: str, action: str, *, context: dict[str, Any] | None = None
    ) -> Verification:
        """Start a step-up for ``action``; ``status`` is ``pending`` (see ``options``) or
        ``denied`` (see ``reasons``)."""
        body: dict[str, Any] = {"subject_id": subject_id, "action": action}
        if context is not None:
            body["context"] = context
        return Verification.from_json(self._strip(self._request("POST", "/v1/verifications", body)))

    def send_challenge(self, verification_id: str, factor: str) -> Challenge:
        """``sms``: a code goes to the phone; ``device``: a ``challenge`` string to sign."""
        path = f"/v1/verifications/{_seg(verification_id)}/challenges"
        return Challenge.from_json(self._strip(self._request("POST", path, {"factor": factor})))

    def prove(self, verification_id: str, factor: str, **fields: str) -> ProofResult:
        """Submit a proof: ``code=`` (totp, sms), ``secret=`` (knowledge) or ``factor_id=`` and
        ``signature=`` (device). A wrong one answers ``accepted=False``, not an exception."""
        path = f"/v1/verifications/{_seg(verification_id)}/proofs"
        data = self._request("POST", path, {"factor": factor, **fields})
        return ProofResult.from_json(self._strip(data))

    def get_verification(self, verification_id: str) -> Verification:
        data = self._request("GET", f"/v1/verifications/{_seg(verification_id)}")
        return Verification.from_json(self._strip(data))

    # -- carrier --------------------------------------------------------------------------------
    def report_carrier_event(
        self, phone: str, type: str, occurred_at: datetime | str
    ) -> CarrierEventResult:
        """Scope ``carrier``: ``sim_swap``, ``sim_lost``, ``sim_unblocked`` or
        ``number_recycled`` for a phone (applies to every tenant's subject with it)."""
        body = {"phone": phone, "type": type, "occurred_at": _rfc3339(occurred_at)}
        data = self._request("POST", "/v1/carrier-events", body)
        return CarrierEventResult.from_json(self._strip(data))

    # -- ops ------------------------------------------------------------------------------------
    def jwks(self) -> dict[str, Any]:
        """``GET /.well-known/jwks.json``."""
        return self._strip(self._request("GET", "/.well-known/jwks.json"))


__all__ = ["IdvClient", "IdvError"]
