"""Client (tenant) records: API keys are stored only as SHA-256 hashes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, bindparam, select, update

from service.domain.clock import as_utc
from service.storage.lean import Lean
from service.storage.tables import clients


@dataclass(frozen=True)
class ClientRecord:
    """A caller of the API and its own tenant."""

    id: str
    name: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    issuer: str | None = None  # the tenant's name in authenticator apps (otpauth issuer)
    sms_regions: frozenset[str] = frozenset()  # empty: any region (issue 20 item 4)
    # The tenant's WebAuthn relying party (idv clients webauthn); None: no passkeys.
    webauthn_rp_id: str | None = None
    webauthn_origins: tuple[str, ...] = ()


def _record(row) -> ClientRecord:  # type: ignore[no-untyped-def]
    return record_of(row)


def record_of(row, prefix: str = "") -> ClientRecord:  # type: ignore[no-untyped-def]
    """A client from a row; ``prefix`` when its columns are labelled (``c_id``, ...)."""
    opt = lambda v: as_utc(v) if v is not None else None  # noqa: E731
    col = lambda name: getattr(row, prefix + name)  # noqa: E731
    return ClientRecord(
        id=col("id"),
        name=col("name"),
        scopes=tuple(col("scopes").split()),
        created_at=as_utc(col("created_at")),
        expires_at=opt(col("expires_at")),
        revoked_at=opt(col("revoked_at")),
        last_used_at=opt(col("last_used_at")),
        issuer=col("issuer"),
        sms_regions=frozenset(filter(None, (col("sms_regions") or "").split(","))),
        webauthn_rp_id=col("webauthn_rp_id"),
        webauthn_origins=tuple(json.loads(col("webauthn_origins") or "[]")),
    )


def insert(
    conn: Connection,
    *,
    client_id: str,
    name: str,
    key_hash: str,
    scopes: list[str],
    now: datetime,
    expires_at: datetime | None,
    issuer: str | None = None,
) -> None:
    """Store a new client."""
    conn.execute(
        clients.insert().values(
            id=client_id,
            name=name,
            key_hash=key_hash,
            scopes=" ".join(scopes),
            created_at=now,
            expires_at=expires_at,
            issuer=issuer,
        )
    )


_BY_KEY_HASH = Lean(select(clients).where(clients.c.key_hash == bindparam("key_hash")))


def by_key_hash(conn: Connection, key_hash: str) -> ClientRecord | None:
    """The client whose API key hashes to ``key_hash`` (every request: statement pre-built)."""
    row = _BY_KEY_HASH.first(conn, {"key_hash": key_hash})
    return _record(row) if row else None


def by_id(conn: Connection, client_id: str) -> ClientRecord | None:
    """The client with this id."""
    row = conn.execute(select(clients).where(clients.c.id == client_id)).first()
    return _record(row) if row else None


def all_clients(conn: Connection) -> list[ClientRecord]:
    """Every client, oldest first."""
    return [_record(r) for r in conn.execute(select(clients).order_by(clients.c.created_at))]


def set_issuer(conn: Connection, client_id: str, issuer: str) -> bool:
    """Set the tenant's name in authenticator apps; True if the client exists."""
    res = conn.execute(update(clients).where(clients.c.id == client_id).values(issuer=issuer))
    return res.rowcount == 1


def set_webauthn(conn: Connection, client_id: str, rp_id: str, origins: list[str]) -> bool:
    """Set the tenant's WebAuthn RP id and allowed origins; True if the client exists."""
    res = conn.execute(
        update(clients)
        .where(clients.c.id == client_id)
        .values(webauthn_rp_id=rp_id, webauthn_origins=json.dumps(origins))
    )
    return res.rowcount == 1


def revoke(conn: Connection, client_id: str, now: datetime) -> bool:
    """Revoke a client's key; True if it existed and was live."""
    res = conn.execute(
        update(clients)
        .where(clients.c.id == client_id, clients.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )
    return res.rowcount == 1


def touch(conn: Connection, client_id: str, now: datetime) -> None:
    """Record last use, at most once a minute (no write on every request)."""
    conn.execute(
        update(clients)
        .where(
            clients.c.id == client_id,
            (clients.c.last_used_at.is_(None))
            | (clients.c.last_used_at < now - timedelta(minutes=1)),
        )
        .values(last_used_at=now)
    )


def set_sms_regions(conn: Connection, client_id: str, regions: frozenset[str]) -> bool:
    """Set the regions a tenant may text (empty: any); True if the client exists."""
    res = conn.execute(
        update(clients)
        .where(clients.c.id == client_id)
        .values(sms_regions=",".join(sorted(regions)) or None)
    )
    return res.rowcount == 1
