"""``AsyncIdvClient``: the methods of ``IdvClient`` as coroutines (httpx.AsyncClient).

Routes, bodies, retries and errors come from the same ``_api`` and ``_core`` as the blocking
client, so both behave alike; each method's documentation is on ``IdvClient``.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any, TypeVar

import httpx

from idv_client import _api as api
from idv_client._core import Call, ClientBase, Exchange
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


class AsyncIdvClient(ClientBase[httpx.AsyncBaseTransport]):
    """``IdvClient`` for asyncio: the same constructor (an ``httpx.AsyncBaseTransport``),
    ``from_env()``, methods, retries and exceptions; ``async with`` or ``await aclose()``."""

    def _open(
        self, client_kwargs: dict[str, Any], transport: httpx.AsyncBaseTransport | None
    ) -> None:
        self._http = httpx.AsyncClient(**client_kwargs, transport=transport)

    async def aclose(self) -> None:
        """Close the pooled connections."""
        await self._http.aclose()

    async def __aenter__(self) -> AsyncIdvClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, call: Call[T]) -> T:
        exchange = Exchange(call, self._options)
        while True:
            try:
                response = await self._http.request(**exchange.request())
            except httpx.HTTPError as exc:
                await asyncio.sleep(exchange.after_error(exc))
                continue
            pause = exchange.after_response(response)
            if pause is None:
                return exchange.result(response)
            await asyncio.sleep(pause)

    # -- client and subjects --------------------------------------------------------------------
    async def whoami(self) -> ClientInfo:
        """Async ``IdvClient.whoami``."""
        return await self._run(api.whoami())

    async def put_subject(
        self, subject_id: str, phone: str, *, assertion: str | None = None
    ) -> Subject:
        """Async ``IdvClient.put_subject``."""
        return await self._run(api.put_subject(subject_id, phone, assertion))

    async def delete_subject(self, subject_id: str, *, assertion: str | None = None) -> None:
        """Async ``IdvClient.delete_subject``."""
        await self._run(api.delete_subject(subject_id, assertion))

    async def export_subject(self, subject_id: str) -> dict[str, Any]:
        """Async ``IdvClient.export_subject``."""
        return await self._run(api.export_subject(subject_id))

    async def admin_erase_subject(
        self, subject_id: str, *, operator: str, tenant: str | None = None
    ) -> None:
        """Async ``IdvClient.admin_erase_subject``."""
        await self._run(api.admin_erase_subject(subject_id, operator, tenant))

    # -- factors --------------------------------------------------------------------------------
    async def enroll_totp(
        self, subject_id: str, *, label: str | None = None, assertion: str | None = None
    ) -> EnrolledFactor:
        """Async ``IdvClient.enroll_totp``."""
        return await self._run(api.enroll_totp(subject_id, label, assertion))

    async def activate_factor(self, subject_id: str, factor_id: str, code: str) -> FactorStatus:
        """Async ``IdvClient.activate_factor``."""
        return await self._run(api.activate_factor(subject_id, factor_id, {"code": code}))

    async def enroll_knowledge(
        self, subject_id: str, secret: str, *, assertion: str | None = None
    ) -> EnrolledFactor:
        """Async ``IdvClient.enroll_knowledge``."""
        return await self._run(api.enroll_knowledge(subject_id, secret, assertion))

    async def enroll_device(
        self,
        subject_id: str,
        public_key_pem: str,
        alg: DeviceAlg,
        *,
        label: str | None = None,
        assertion: str | None = None,
    ) -> EnrolledFactor:
        """Async ``IdvClient.enroll_device``."""
        return await self._run(api.enroll_device(subject_id, public_key_pem, alg, label, assertion))

    async def enroll_recovery_codes(
        self, subject_id: str, *, assertion: str | None = None
    ) -> EnrolledFactor:
        """Async ``IdvClient.enroll_recovery_codes``."""
        return await self._run(api.enroll_recovery_codes(subject_id, assertion))

    async def enroll_passkey(
        self, subject_id: str, *, label: str | None = None, assertion: str | None = None
    ) -> EnrolledFactor:
        """Async ``IdvClient.enroll_passkey``."""
        return await self._run(api.enroll_passkey(subject_id, label, assertion))

    async def activate_passkey(
        self, subject_id: str, factor_id: str, credential: dict[str, Any]
    ) -> FactorStatus:
        """Async ``IdvClient.activate_passkey``."""
        return await self._run(
            api.activate_factor(subject_id, factor_id, {"credential": credential})
        )

    async def finish_passkey(
        self, subject_id: str, factor_id: str, credential: dict[str, Any]
    ) -> FactorStatus:
        """Async ``IdvClient.finish_passkey``."""
        return await self.activate_passkey(subject_id, factor_id, credential)

    async def list_factors(self, subject_id: str) -> list[Factor]:
        """Async ``IdvClient.list_factors``."""
        return await self._run(api.list_factors(subject_id))

    async def remove_factor(
        self, subject_id: str, factor_id: str, *, assertion: str | None = None
    ) -> None:
        """Async ``IdvClient.remove_factor``."""
        await self._run(api.remove_factor(subject_id, factor_id, assertion))

    # -- verifications --------------------------------------------------------------------------
    async def start_verification(
        self, subject_id: str, action: str, *, context: dict[str, Any] | None = None
    ) -> Verification:
        """Async ``IdvClient.start_verification``."""
        return await self._run(api.start_verification(subject_id, action, context))

    async def get_verification(self, verification_id: str) -> Verification:
        """Async ``IdvClient.get_verification``."""
        return await self._run(api.get_verification(verification_id))

    async def send_challenge(self, verification_id: str, factor: FactorType) -> Challenge:
        """Async ``IdvClient.send_challenge``."""
        return await self._run(api.send_challenge(verification_id, factor))

    async def passkey_challenge(self, verification_id: str) -> Challenge:
        """Async ``IdvClient.passkey_challenge``."""
        return await self.send_challenge(verification_id, "passkey")

    async def prove(self, verification_id: str, factor: FactorType, **fields: Any) -> ProofResult:
        """Async ``IdvClient.prove``."""
        return await self._run(api.prove(verification_id, factor, fields))

    async def prove_totp(self, verification_id: str, code: str) -> ProofResult:
        """Async ``IdvClient.prove_totp``."""
        return await self.prove(verification_id, "totp", code=code)

    async def prove_sms(self, verification_id: str, code: str) -> ProofResult:
        """Async ``IdvClient.prove_sms``."""
        return await self.prove(verification_id, "sms", code=code)

    async def prove_pin(self, verification_id: str, secret: str) -> ProofResult:
        """Async ``IdvClient.prove_pin``."""
        return await self.prove(verification_id, "knowledge", secret=secret)

    async def prove_device(
        self, verification_id: str, factor_id: str, signature: str
    ) -> ProofResult:
        """Async ``IdvClient.prove_device``."""
        return await self.prove(verification_id, "device", factor_id=factor_id, signature=signature)

    async def prove_recovery_code(self, verification_id: str, code: str) -> ProofResult:
        """Async ``IdvClient.prove_recovery_code``."""
        return await self.prove(verification_id, "recovery_code", code=code)

    async def prove_attested(self, verification_id: str, attestation: str) -> ProofResult:
        """Async ``IdvClient.prove_attested``."""
        return await self.prove(verification_id, "attested", attestation=attestation)

    async def prove_passkey(self, verification_id: str, credential: dict[str, Any]) -> ProofResult:
        """Async ``IdvClient.prove_passkey``."""
        return await self.prove(verification_id, "passkey", credential=credential)

    async def cancel_recovery(self, verification_id: str, assertion: str) -> Verification:
        """Async ``IdvClient.cancel_recovery``."""
        return await self._run(api.cancel_recovery(verification_id, assertion))

    # -- carrier and keys -----------------------------------------------------------------------
    async def report_carrier_event(
        self, phone: str, type: CarrierEventType, occurred_at: datetime | str
    ) -> CarrierEventResult:
        """Async ``IdvClient.report_carrier_event``."""
        return await self._run(api.report_carrier_event(phone, type, occurred_at))

    async def jwks(self) -> dict[str, Any]:
        """Async ``IdvClient.jwks``."""
        return await self._run(api.jwks())


__all__ = ["AsyncIdvClient"]
