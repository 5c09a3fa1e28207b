"""``AssertionVerifier``: check idv assertions in the relying party (RFC 8725).

Explicit algorithm list, explicit ``typ`` (``idv-assertion+jwt``), ``kid`` looked up in idv's
JWKS (RFC 7517), then ``iss``, ``aud``, ``exp``, ``sub`` and ``action``. Optionally single use:
the ``jti`` goes into a replay store until the token expires.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx
import jwt

from idv_client import sm2
from idv_client.errors import AssertionInvalid

TYP = "idv-assertion+jwt"
MAX_LIFETIME = 300  # API.md: exp at most 5 minutes after iat
REQUIRED = ("iss", "aud", "sub", "exp", "iat", "jti", "action")


class ReplayStore(Protocol):
    def add(self, jti: str, expires_at: int) -> bool:
        """Record ``jti`` until ``expires_at`` (epoch seconds); False if it was already there."""


class MemoryReplayStore:
    """One process's memory: enough for a single instance of the relying party."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._seen: dict[str, int] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def add(self, jti: str, expires_at: int) -> bool:
        now = self._clock()
        with self._lock:
            if len(self._seen) > 1024:
                self._seen = {k: v for k, v in self._seen.items() if v >= now}
            if jti in self._seen and self._seen[jti] >= now:
                return False
            self._seen[jti] = expires_at
            return True


class RedisReplayStore:
    """Shared by every instance of the relying party: ``SET key NX EXAT exp`` (atomic)."""

    def __init__(self, url: str, prefix: str = "idv-client:jti:") -> None:
        import redis  # optional dependency: pip install 'idv-client[redis]'

        self._redis = redis.Redis.from_url(url)
        self._prefix = prefix

    def add(self, jti: str, expires_at: int) -> bool:
        ttl = max(1, int(expires_at - time.time()) + 1)
        return bool(self._redis.set(self._prefix + jti, b"1", nx=True, ex=ttl))


def replay_store_from(value: ReplayStore | str | None) -> ReplayStore:
    if value is None or value == "memory://":
        return MemoryReplayStore()
    if isinstance(value, str):
        if value.startswith(("redis://", "rediss://", "unix://")):
            return RedisReplayStore(value)
        raise ValueError(f"replay store must be memory:// or redis://..., got {value!r}")
    return value


class AssertionVerifier:
    """Verify assertions that idv issued to ``audience`` (your ``client_id``, see
    ``IdvClient.whoami()``).

    The JWKS is fetched on first use and cached; a token with an unknown ``kid`` (idv rotated its
    signing key) triggers one refetch, at most once per ``refetch_interval`` seconds, so garbage
    tokens cannot make this process hammer idv.
    """

    def __init__(
        self,
        base_url: str,
        audience: str,
        *,
        algorithms: Iterable[str] = ("ES256", "EdDSA", *((sm2.ALG,) if sm2.AVAILABLE else ())),
        issuer: str = "idv",
        leeway: float = 0,
        replay_store: ReplayStore | str | None = None,
        timeout: float = 5.0,
        refetch_interval: float = 60.0,
        http: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.audience = audience
        self.algorithms = tuple(algorithms)
        if not self.algorithms or "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("an explicit, non-empty list of algorithms without 'none' is needed")
        self.issuer = issuer
        self.leeway = leeway
        self.replay_store = replay_store_from(replay_store)
        self.refetch_interval = refetch_interval
        self._http = http or httpx.Client(timeout=timeout)
        self._monotonic = monotonic
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._last_refetch: float | None = None
        self._lock = threading.Lock()
        self.jwks_fetches = 0

    # -- JWKS -----------------------------------------------------------------------------------
    def _fetch(self) -> dict[str, jwt.PyJWK]:
        try:
            response = self._http.get(self.base_url + "/.well-known/jwks.json")
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AssertionInvalid("jwks_unavailable", f"cannot fetch idv's JWKS: {exc}") from None
        self.jwks_fetches += 1
        keys: dict[str, jwt.PyJWK] = {}
        for entry in data.get("keys", []):
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                key = sm2.key_from_jwk(entry)  # type: ignore[assignment]  # gm extra
                if key is None:
                    continue  # a key type we cannot use: never the one that signs for us
            if entry.get("kid"):
                keys[entry["kid"]] = key
        return keys

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            if self._keys is None:
                self._keys = self._fetch()
            elif kid not in self._keys:
                now = self._monotonic()
                if self._last_refetch is None or now - self._last_refetch >= self.refetch_interval:
                    self._last_refetch = now
                    self._keys = self._fetch()
            key = self._keys.get(kid)
        if key is None:
            raise AssertionInvalid("unknown_kid", "no key in idv's JWKS has this kid")
        return key

    # -- verification ---------------------------------------------------------------------------
    def verify(
        self, token: str, *, subject: str, action: str, consume: bool = False
    ) -> dict[str, Any]:
        """The claims of a valid assertion for ``subject`` and ``action``; ``AssertionInvalid``
        (with ``reason``) otherwise. ``consume=True`` accepts each assertion once."""
        if not isinstance(token, str) or not token:
            raise AssertionInvalid("malformed", "no assertion")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AssertionInvalid("malformed", "not a JWS compact serialisation") from None
        if header.get("typ") != TYP:  # RFC 8725 §3.11: explicit typing
            raise AssertionInvalid("bad_typ", f"typ must be {TYP}")
        alg = header.get("alg")
        if alg not in self.algorithms:  # RFC 8725 §3.1: explicit algorithm list
            raise AssertionInvalid("bad_algorithm", f"alg {alg!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise AssertionInvalid("unknown_kid", "no kid in the header")
        key = self._key(kid)
        if key.algorithm_name != alg:  # the key decides the algorithm, not the token
            raise AssertionInvalid("bad_algorithm", "alg does not match the key")
        decode = sm2.decode if alg == sm2.ALG else jwt.decode  # SM2: the gm profile
        try:
            claims = decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": list(REQUIRED)},
            )
        except jwt.ExpiredSignatureError:
            raise AssertionInvalid("expired", "the assertion has expired") from None
        except jwt.ImmatureSignatureError:
            raise AssertionInvalid("not_yet_valid", "iat or nbf is in the future") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AssertionInvalid("missing_claim", str(exc)) from None
        except jwt.InvalidAudienceError:
            raise AssertionInvalid("wrong_audience", "issued to another client") from None
        except jwt.InvalidIssuerError:
            raise AssertionInvalid("wrong_issuer", "not issued by this idv") from None
        except jwt.InvalidSignatureError:
            raise AssertionInvalid("bad_signature", "signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise AssertionInvalid("malformed", str(exc)) from None
        if claims["sub"] != subject:
            raise AssertionInvalid("wrong_subject", "issued for another subject")
        if claims["action"] != action:
            raise AssertionInvalid("wrong_action", f"issued for {claims['action']!r}")
        if int(claims["exp"]) - int(claims["iat"]) > MAX_LIFETIME:
            raise AssertionInvalid("lifetime_too_long", "exp is more than 5 minutes after iat")
        if consume and not self.replay_store.add(str(claims["jti"]), int(claims["exp"])):
            raise AssertionInvalid("replayed", "this assertion was already used")
        return claims

    def close(self) -> None:
        self._http.close()
