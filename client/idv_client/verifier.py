"""``AssertionVerifier``: check idv assertions in the relying party (RFC 8725).

Explicit algorithm list, explicit ``typ`` (``idv-assertion+jwt``), ``kid`` looked up in idv's
JWKS (RFC 7517), then ``iss``, ``aud``, the times (``exp``, ``iat``, ``nbf``, one ``leeway``),
``sub`` and ``action``, and what the caller demands: an ``acr`` at least as strong as asked and an
``auth_time`` within ``max_age`` (RFC 9470 §3). Optionally single use: the ``jti`` goes into a
replay store until the token expires.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import httpx
import jwt

from idv_client import sm2
from idv_client.errors import AssertionInvalid, JwksUnavailable
from idv_client.types import ACR_ORDER, Acr

TYP = "idv-assertion+jwt"
MAX_LIFETIME = 300  # API.md: exp at most 5 minutes after iat
REQUIRED = ("iss", "aud", "sub", "exp", "iat", "jti", "action")
LEEWAY = 30.0  # seconds of clock skew allowed, alike on iat, nbf, exp and auth_time
DEFAULT_JWKS_TTL = 300.0  # when idv sends no Cache-Control max-age
_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d+)\"?\s*(?:,|$)", re.IGNORECASE)


def cache_ttl(cache_control: str | None) -> float | None:
    """The ``max-age`` of a ``Cache-Control`` header in seconds (RFC 9111 §5.2.2.1); None when
    absent, or 0 for ``no-store``/``no-cache``."""
    if not cache_control:
        return None
    if re.search(r"\bno-(?:store|cache)\b", cache_control, re.IGNORECASE):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


def acr_satisfies(actual: object, required: str) -> bool:
    """Whether an assertion's ``acr`` meets ``required`` (``aal1`` < ``aal2`` < ``aal3``); an
    unknown or missing value never does (fail closed)."""
    rank = ACR_ORDER.get(actual) if isinstance(actual, str) else None
    return rank is not None and rank >= ACR_ORDER[required]


def _number(claims: dict[str, Any], name: str) -> float:
    value = claims[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise AssertionInvalid("malformed", f"{name} must be a number")
    return float(value)


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

    JWKS cache: fetched on first use, then again once its time is up (idv's ``Cache-Control:
    max-age``, bounded by ``min_ttl`` and ``max_ttl``; ``DEFAULT_JWKS_TTL`` without one), so a key
    idv drops stops being trusted within that time. A token with an unknown ``kid`` (idv rotated
    its signing key) triggers one refetch, at most once per ``refetch_interval`` seconds, so
    garbage tokens cannot make this process hammer idv. When the JWKS cannot be fetched,
    ``verify`` raises ``JwksUnavailable`` (not ``AssertionInvalid``: answer 503, do not ask the
    user to step up again), and tries again no sooner than ``retry_interval`` seconds later.

    ``leeway`` (default 30 s) is the clock skew allowed between idv and this host, applied alike
    to ``iat``, ``nbf``, ``exp`` and ``auth_time``.
    """

    def __init__(
        self,
        base_url: str,
        audience: str,
        *,
        algorithms: Iterable[str] = ("ES256", "EdDSA", *((sm2.ALG,) if sm2.AVAILABLE else ())),
        issuer: str = "idv",
        leeway: float = LEEWAY,
        replay_store: ReplayStore | str | None = None,
        timeout: float = 5.0,
        refetch_interval: float = 60.0,
        retry_interval: float = 5.0,
        min_ttl: float = 30.0,
        max_ttl: float = 3600.0,
        http: httpx.Client | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.audience = audience
        self.algorithms = tuple(algorithms)
        if not self.algorithms or "none" in {a.lower() for a in self.algorithms}:
            raise ValueError("an explicit, non-empty list of algorithms without 'none' is needed")
        if leeway < 0:
            raise ValueError("leeway must not be negative")
        self.issuer = issuer
        self.leeway = leeway
        self.replay_store = replay_store_from(replay_store)
        self.refetch_interval = refetch_interval
        self.retry_interval = retry_interval
        self.min_ttl, self.max_ttl = min_ttl, max_ttl
        self._http = http or httpx.Client(timeout=timeout)
        self._monotonic = monotonic
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fresh_until = 0.0
        self._last_refetch: float | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()
        self.jwks_fetches = 0

    def __repr__(self) -> str:
        return f"AssertionVerifier(base_url={self.base_url!r}, audience={self.audience!r})"

    # -- JWKS -----------------------------------------------------------------------------------
    def _fetch(self) -> dict[str, jwt.PyJWK]:
        """idv's keys by ``kid`` (caller holds the lock); sets when they must be fetched again."""
        now = self._monotonic()
        if self._failed_at is not None and now - self._failed_at < self.retry_interval:
            raise JwksUnavailable("idv's JWKS could not be fetched a moment ago")
        try:
            response = self._http.get(self.base_url + "/.well-known/jwks.json")
            response.raise_for_status()
            data = response.json()
            entries = data["keys"]
            if not isinstance(entries, list):
                raise ValueError("keys is not a list")
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            self._failed_at = now
            raise JwksUnavailable(f"cannot fetch idv's JWKS: {type(exc).__name__}") from None
        self._failed_at = None
        self.jwks_fetches += 1
        ttl = cache_ttl(response.headers.get("Cache-Control"))
        ttl = DEFAULT_JWKS_TTL if ttl is None else ttl
        self._fresh_until = now + min(max(ttl, self.min_ttl), self.max_ttl)
        keys: dict[str, jwt.PyJWK] = {}
        for entry in entries:
            try:
                key = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                key = sm2.key_from_jwk(entry)  # type: ignore[assignment]  # gm extra
                if key is None:
                    continue  # a key type we cannot use: never the one that signs for us
            if isinstance(entry, dict) and entry.get("kid"):
                keys[entry["kid"]] = key
        return keys

    def _key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            now = self._monotonic()
            stale = self._keys is None or now >= self._fresh_until
            may_refetch = (
                self._last_refetch is None or now - self._last_refetch >= self.refetch_interval
            )
            if stale or (kid not in (self._keys or {}) and may_refetch):
                if not stale:
                    self._last_refetch = now
                self._keys = self._fetch()
            key = (self._keys or {}).get(kid)
        if key is None:
            raise AssertionInvalid("unknown_kid", "no key in idv's JWKS has this kid")
        return key

    # -- verification ---------------------------------------------------------------------------
    def verify(
        self,
        token: str,
        *,
        subject: str,
        action: str,
        consume: bool = False,
        acr: Acr | None = None,
        max_age: float | None = None,
    ) -> dict[str, Any]:
        """The claims of a valid assertion for ``subject`` and ``action``; ``AssertionInvalid``
        (with ``reason``) otherwise, ``JwksUnavailable`` when idv's keys cannot be fetched.

        ``acr``: the weakest ``acr`` accepted (``aal1`` < ``aal2`` < ``aal3``; a stronger one
        passes, a weaker or unknown one is ``insufficient_acr``). ``max_age``: at most this many
        seconds since ``auth_time`` (else ``too_old``). ``consume=True`` accepts each assertion
        once (``replayed`` the second time)."""
        if acr is not None and acr not in ACR_ORDER:
            raise ValueError(f"acr must be one of {', '.join(ACR_ORDER)}, not {acr!r}")
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
        claims = self._decode(token, key, alg)
        self._check_times(claims, max_age)
        if claims["sub"] != subject:
            raise AssertionInvalid("wrong_subject", "issued for another subject")
        if claims["action"] != action:
            raise AssertionInvalid("wrong_action", f"issued for {claims['action']!r}")
        if acr is not None and not acr_satisfies(claims.get("acr"), acr):
            # RFC 9470 §3: the authentication is not strong enough for this resource.
            raise AssertionInvalid("insufficient_acr", f"acr {claims.get('acr')!r} is below {acr}")
        if consume and not self.replay_store.add(str(claims["jti"]), int(claims["exp"])):
            raise AssertionInvalid("replayed", "this assertion was already used")
        return claims

    def _decode(self, token: str, key: jwt.PyJWK, alg: str) -> dict[str, Any]:
        """Signature, ``iss``, ``aud`` and required claims (times are ``_check_times``)."""
        decode = sm2.decode if alg == sm2.ALG else jwt.decode  # SM2: the gm profile
        try:
            return decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.audience,
                issuer=self.issuer,
                options={
                    "require": list(REQUIRED),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
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

    def _check_times(self, claims: dict[str, Any], max_age: float | None) -> None:
        """``exp``, ``iat``, ``nbf`` and ``auth_time`` against this host's clock, one leeway for
        all (RFC 7519 §4.1.4-4.1.6), then idv's 5-minute lifetime and ``max_age``."""
        now, leeway = self._clock(), self.leeway
        exp, iat = _number(claims, "exp"), _number(claims, "iat")
        if exp <= now - leeway:
            raise AssertionInvalid("expired", "the assertion has expired")
        if iat > now + leeway:
            raise AssertionInvalid("not_yet_valid", "iat is in the future")
        if "nbf" in claims and _number(claims, "nbf") > now + leeway:
            raise AssertionInvalid("not_yet_valid", "nbf is in the future")
        if exp - iat > MAX_LIFETIME:
            raise AssertionInvalid("lifetime_too_long", "exp is more than 5 minutes after iat")
        if max_age is None:
            return
        if "auth_time" not in claims:
            raise AssertionInvalid("missing_claim", "auth_time is needed to check max_age")
        auth_time = _number(claims, "auth_time")
        if auth_time > now + leeway:
            raise AssertionInvalid("not_yet_valid", "auth_time is in the future")
        if now - auth_time > max_age + leeway:  # RFC 9470 §3: max_age
            raise AssertionInvalid("too_old", f"authenticated more than {max_age:g} s ago")

    def close(self) -> None:
        """Close the connection pool used for the JWKS."""
        self._http.close()
