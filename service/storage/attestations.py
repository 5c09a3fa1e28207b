"""Tenants' attestation keys and the attestation ``jti``s already accepted."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, bindparam, select

from service.factors.attested import TenantKey
from service.storage.lean import Lean
from service.storage.replay import insert_once
from service.storage.tables import attestation_jtis, attestation_keys


def add_key(conn: Connection, client_id: str, key: TenantKey, now: datetime) -> bool:
    """Register a tenant's public key; False when that key was registered already."""
    return insert_once(
        conn,
        attestation_keys,
        client_id=client_id,
        kid=key.kid,
        alg=key.alg,
        public_key=key.public_pem,
        created_at=now,
    )


_KEYS = Lean(
    select(attestation_keys.c.kid, attestation_keys.c.alg, attestation_keys.c.public_key).where(
        attestation_keys.c.client_id == bindparam("client_id")
    )
)


def keys_of(conn: Connection, client_id: str) -> list[TenantKey]:
    """Every attestation key of this tenant (and never another tenant's)."""
    return [
        TenantKey(r.kid, r.alg, r.public_key) for r in _KEYS.all(conn, {"client_id": client_id})
    ]


def use_jti(conn: Connection, client_id: str, jti: str, now: datetime) -> bool:
    """Record an accepted attestation's ``jti``; False when this tenant used it before."""
    return insert_once(conn, attestation_jtis, client_id=client_id, jti=jti, used_at=now)
