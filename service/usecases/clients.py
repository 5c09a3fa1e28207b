"""Clients and API keys: created with a key shown once, stored hashed, revocable (T3)."""

from __future__ import annotations

import secrets
from datetime import datetime

from service.context import ServiceContext
from service.crypto import profile as crypto_profile
from service.domain.errors import InvalidRequest, Unauthorized
from service.storage import clients as store
from service.storage.clients import ClientRecord
from service.storage.db import read_only

SCOPES = ("verify", "carrier", "admin")
KEY_PREFIX = "idv_"


def hash_api_key(key: str, profile: str = crypto_profile.INTL) -> str:
    """SHA-256 of an API key (SM3 under the ``gm`` profile). Keys carry 256 random bits, so a
    fast hash is enough (ASVS 11.4: slow hashing is for low-entropy secrets)."""
    return crypto_profile.plain_hash(profile, key.encode())


def check_issuer(issuer: str) -> str:
    """A tenant's name for authenticator apps (``速借``): 1-64 characters, no colon and no control
    character. Google's Key Uri Format: the label is ``issuer:account`` and neither part may
    hold a colon, which some apps split on even when it is percent-encoded."""
    issuer = issuer.strip()
    if not 1 <= len(issuer) <= 64 or ":" in issuer or not issuer.isprintable():
        raise InvalidRequest("an issuer name is 1 to 64 printable characters without ':'")
    return issuer


def create_client(
    ctx: ServiceContext,
    name: str,
    scopes: list[str],
    expires_at: datetime | None = None,
    issuer: str | None = None,
) -> tuple[ClientRecord, str]:
    """Create a client; return it and its API key (the only time the key exists in clear)."""
    issuer = check_issuer(issuer) if issuer is not None else None
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidRequest("a client name of 1 to 200 characters is required")
    scopes = sorted(set(scopes or ["verify"]))
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise InvalidRequest(f"unknown scope(s): {', '.join(unknown)}; use {', '.join(SCOPES)}")
    client_id = "cl_" + secrets.token_hex(8)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        store.insert(
            conn,
            client_id=client_id,
            name=name,
            key_hash=hash_api_key(key, ctx.settings.crypto_profile),
            scopes=scopes,
            now=now,
            expires_at=expires_at,
            issuer=issuer,
        )
        record = store.by_id(conn, client_id)
    assert record is not None
    return record, key


def authenticate(ctx: ServiceContext, authorization: str | None) -> ClientRecord:
    """Resolve ``Authorization: Bearer <key>`` to a live client or raise ``Unauthorized``.

    Revocation and expiry are read from the database on every request, so a revoked key
    fails at once on every instance.
    """
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("an Authorization: Bearer <api key> header is required")
    key = authorization[len("Bearer ") :].strip()
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise Unauthorized("invalid API key")
    now = ctx.clock()
    # One autocommit read per request: no BEGIN/COMMIT round trips on the hot path.
    # A key is found under the hash of the profile it was issued under (API.md: API-key hashes
    # stay as they were until a key is reissued); the running profile's is tried first.
    mine = ctx.settings.crypto_profile
    with read_only(ctx.engine) as conn:
        for profile in (mine, *(p for p in crypto_profile.PROFILES if p != mine)):
            client = store.by_key_hash(conn, hash_api_key(key, profile))
            if client is not None:
                break
    if client is None or client.revoked_at is not None:
        raise Unauthorized("invalid API key")
    if client.expires_at is not None and client.expires_at <= now:
        raise Unauthorized("API key expired")
    if client.last_used_at is None or (now - client.last_used_at).total_seconds() > 60:
        with ctx.engine.begin() as conn:  # last use, written at most once a minute
            store.touch(conn, client.id, now)
    return client
