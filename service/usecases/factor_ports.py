"""The ``FactorPort`` the use cases hand to a factor's hooks (``service.factors.ports``).

One object per request: the service context, the tenant, the request's clock and, inside a
transaction, its connection. Factor modules reach storage only through it, so they import no
SQL and no Flask, and a new factor needs no branch here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.policy_file import Policy
from service.factors.attested import TenantKey
from service.factors.ports import StoredFactor, Subject
from service.storage import attestations as attestation_store
from service.storage import audit as audit_store
from service.storage import factors as factor_store
from service.storage import recovery_codes as code_store
from service.storage import replay
from service.storage import subjects as subject_store
from service.storage.clients import ClientRecord
from service.storage.subjects import SubjectRecord
from service.usecases import sms_budget
from service.usecases.subjects import phone_of, subject_ref


@dataclass
class Port:
    """``FactorPort`` over a ``ServiceContext``; ``conn`` is None outside a transaction (an
    argon2 check runs there), and the storage operations then refuse to run."""

    ctx: ServiceContext
    client: ClientRecord
    now: datetime
    conn: Connection | None = None

    def bound(self, conn: Connection) -> Port:
        """The same port inside ``conn``'s transaction."""
        return Port(self.ctx, self.client, self.now, conn)

    @property
    def _conn(self) -> Connection:
        if self.conn is None:
            raise RuntimeError(
                "a factor's storage operation ran outside the use case's transaction"
            )
        return self.conn

    # -- configuration and keys ---------------------------------------------------------------
    @property
    def issuer(self) -> str:
        return self.ctx.settings.issuer

    @property
    def policy(self) -> Policy:
        return self.ctx.policy

    @property
    def key_profile(self) -> str:
        return self.ctx.keys.profile

    def open(self, factor: StoredFactor) -> str:
        return self.ctx.keys.decrypt(factor.secret_ct, f"factor:{factor.id}")

    def seal(self, factor_id: str, text: str) -> str:
        return self.ctx.keys.encrypt(text, f"factor:{factor_id}")

    def derived_key(self, purpose: str) -> bytes:
        return self.ctx.keys.derived_key(purpose)

    def phone(self, subject: Subject) -> str | None:
        assert isinstance(subject, SubjectRecord)
        return phone_of(self.ctx, subject)

    def slow_hash(self, secret: str) -> str:
        return self.ctx.argon2_slots.run(self.ctx.hasher.hash, secret)

    def slow_verify(self, stored: str | None, secret: str) -> tuple[bool, str | None]:
        return self.ctx.argon2_slots.run(self.ctx.hasher.verify, stored, secret)

    def send_sms(self, phone: str, code: str, text: str) -> None:
        self.ctx.sms.send(phone, code, text)

    # -- the transaction's storage ------------------------------------------------------------
    def factors(self, subject: Subject) -> list[StoredFactor]:
        return list(factor_store.for_subject(self._conn, subject.pk))

    def replace_secret(self, factor_id: str, secret_ct: str) -> None:
        factor_store.replace_secret(self._conn, factor_id, secret_ct)

    def activate(self, factor_id: str) -> None:
        factor_store.activate(self._conn, factor_id, self.now)

    def activate_credential(self, factor_id: str, secret_ct: str, sign_count: int) -> bool:
        return factor_store.activate_credential(
            self._conn, factor_id, secret_ct, sign_count, self.now
        )

    def add_challenge(
        self, verification_id: str, factor: str, digest: str, expires_at: datetime
    ) -> None:
        replay.add_challenge(
            self._conn,
            verification_id=verification_id,
            factor=factor,
            digest=digest,
            now=self.now,
            expires_at=expires_at,
        )

    def use_challenge(self, challenge_id: int) -> bool:
        return replay.use_challenge(self._conn, challenge_id, self.now)

    def use_totp_step(self, factor_id: str, step: int) -> bool:
        return replay.use_totp_step(self._conn, factor_id, step, self.now)

    def advance_sign_count(self, factor_id: str, seen: int, new: int) -> bool:
        return factor_store.advance_sign_count(self._conn, factor_id, seen, new)

    def webauthn_handle(self, subject: Subject, fresh: str) -> str:
        return subject_store.webauthn_handle(self._conn, subject.pk, fresh)

    def add_code_set(self, factor_id: str, digests: list[str]) -> None:
        code_store.add_set(self._conn, factor_id, digests)

    def use_code(self, factor_id: str, digest: str) -> bool:
        return code_store.use(self._conn, factor_id, digest, self.now)

    def tenant_keys(self) -> list[TenantKey]:
        return attestation_store.keys_of(self._conn, self.client.id)

    def use_jti(self, jti: str) -> bool:
        return attestation_store.use_jti(self._conn, self.client.id, jti, self.now)

    def charge_sms(self, phone: str, subject: Subject, action: str) -> None:
        assert subject.phone_hash is not None
        limits = self.ctx.policy.action(action).limits
        sms_budget.charge(
            self.ctx, self._conn, self.client, phone, subject.phone_hash, limits, self.now
        )

    def audit(self, event: str, subject: Subject, detail: dict[str, Any]) -> None:
        audit_store.append(
            self._conn,
            event=event,
            outcome="ok",
            now=self.now,
            client_id=self.client.id,
            subject_ref=subject_ref(self.ctx, self.client.id, subject.subject_id),
            detail=detail,
        )
