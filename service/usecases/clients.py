"""Clients and API keys: created with a key shown once, stored hashed, revocable (T3)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection

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


def _presented(authorization: str | None) -> str:
    """The API key of ``Authorization: Bearer <key>``, or ``Unauthorized``."""
    if not authorization or not authorization.startswith("Bearer "):
        raise Unauthorized("an Authorization: Bearer <api key> header is required")
    key = authorization[len("Bearer ") :].strip()
    if not key.startswith(KEY_PREFIX) or len(key) > 128:
        raise Unauthorized("invalid API key")
    return key


def authenticate(ctx: ServiceContext, authorization: str | None) -> ClientRecord:
    """Resolve ``Authorization: Bearer <key>`` to a live client or raise ``Unauthorized``.

    Revocation and expiry are read from the database on every request, so a revoked key
    fails at once on every instance.
    """
    return _verified(ctx, _presented(authorization))[0]


def _verified(ctx: ServiceContext, key: str) -> tuple[ClientRecord, str]:
    """The live client of ``key`` and its key hash as stored, read now."""
    now = ctx.clock()
    # One autocommit read per request: no BEGIN/COMMIT round trips on the hot path.
    # A key is found under the hash of the profile it was issued under (API.md: API-key hashes
    # stay as they were until a key is reissued); the running profile's is tried first.
    mine = ctx.settings.crypto_profile
    with read_only(ctx.engine) as conn:
        for profile in (mine, *(p for p in crypto_profile.PROFILES if p != mine)):
            stored = hash_api_key(key, profile)
            client = store.by_key_hash(conn, stored)
            if client is not None:
                break
    client = _live(client, now)
    if _touch_due(client, now):
        with ctx.engine.begin() as conn:  # last use, written at most once a minute
            store.touch(conn, client.id, now)
    return client, stored


def _live(client: ClientRecord | None, now: datetime) -> ClientRecord:
    """``client`` if its key may be used now, else ``Unauthorized``: unknown, revoked or
    expired (both key paths, read now and from memory, answer alike)."""
    if client is None or client.revoked_at is not None:
        raise Unauthorized("invalid API key")
    if client.expires_at is not None and client.expires_at <= now:
        raise Unauthorized("API key expired")
    return client


def _touch_due(client: ClientRecord, now: datetime) -> bool:
    """Whether the client's last use is due to be written (at most once a minute)."""
    return client.last_used_at is None or (now - client.last_used_at).total_seconds() > 60


# Enough for every tenant of a deployment; past it the map starts over (each key is then
# verified by its own read once more), so that presented keys cannot grow memory without bound.
KNOWN_KEYS_MAX = 10_000


@dataclass(frozen=True)
class KnownKey:
    """An API key this process verified before, taken from memory: not yet proven live.

    Whoever accepts it must read the client row again before acting on the request, in a
    statement it runs anyway (``confirm``): the proof's first statement joins it. That keeps
    the rule that a revoked key fails at once on every instance (THREATS.md: keys revocable),
    while the proof route saves the key's own read and connection.
    """

    cache_key: str  # the presented key's hash under the running profile
    stored_hash: str  # the hash the client row holds (maybe under another profile)


def recognise(
    ctx: ServiceContext, authorization: str | None
) -> tuple[ClientRecord, KnownKey | None]:
    """``authenticate``, but a key verified before in this process comes from memory, with a
    ``KnownKey`` that the caller must ``confirm``; a key read now comes with None."""
    key = _presented(authorization)
    cache_key = hash_api_key(key, ctx.settings.crypto_profile)
    known = ctx.known_keys.get(cache_key)
    if known is not None:
        return known[0], KnownKey(cache_key, known[1])
    client, stored = _verified(ctx, key)
    if len(ctx.known_keys) >= KNOWN_KEYS_MAX:
        ctx.known_keys.clear()
    ctx.known_keys[cache_key] = (client, stored)
    return client, None


def confirm(
    ctx: ServiceContext,
    conn: Connection,
    known: KnownKey,
    row: tuple[ClientRecord, str] | None,
    now: datetime,
) -> ClientRecord:
    """The client of a ``KnownKey`` as the database holds it now (``row``: the client and its
    stored key hash, read in the request's own statement; None: look it up by the hash here),
    or ``Unauthorized`` as ``authenticate`` would answer: revoked, reissued or expired."""
    if row is None:
        found = store.by_key_hash(conn, known.stored_hash)
        row = (found, known.stored_hash) if found is not None else None
    try:  # a reissued key's row holds another hash: the key presented is no longer its key
        client = _live(row[0] if row and row[1] == known.stored_hash else None, now)
    except Unauthorized:
        ctx.known_keys.pop(known.cache_key, None)
        raise
    if _touch_due(client, now):
        store.touch(conn, client.id, now)  # in the request's transaction
    return client
