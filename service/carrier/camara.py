"""CAMARA (GSMA Open Gateway) carrier provider: SIM Swap v2 and Number Recycling v0.2.

Plain ``http.client`` through ``service.outbound``; no framework. Access is OAuth2 client
credentials (RFC 6749 §4.4). The rules that keep a slow or broken carrier from hurting logins:

- one deadline per call: each POST gets the time left, and a timer cuts its socket when that
  runs out (a socket timeout alone bounds each read, not a carrier that trickles bytes); the
  token fetch and the one retry (429/503/504, honouring ``Retry-After`` only if it fits)
  included;
- a circuit breaker per provider: after N consecutive failures, answer CIRCUIT_OPEN at once;
- successful SIM-change facts are cached for ``cache_ttl`` seconds, errors never;
- nothing raises for a provider problem: every answer is a fact with a ``Reason``.

Phone numbers appear in logs only masked (T4).
"""

from __future__ import annotations

import base64
import json
import logging
import ssl
import threading
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from service import outbound
from service.carrier.provider import (
    CircuitBreaker,
    Reason,
    RecycleFact,
    RecycleStatus,
    SimChangeFact,
    SwapStatus,
)
from service.domain.clock import parse_rfc3339
from service.domain.phone import mask_phone

log = logging.getLogger(__name__)

SIM_SWAP_RETRIEVE_DATE = "/sim-swap/v2/retrieve-date"
SIM_SWAP_CHECK = "/sim-swap/v2/check"
NUMBER_RECYCLING_CHECK = "/number-recycling/v0.2/check"

MAX_AGE_HOURS_MIN, MAX_AGE_HOURS_MAX = 1, 2400  # sim-swap.yaml 2.1.0, CheckSimSwapInfo.maxAge
MAX_BODY = 64 * 1024  # a CAMARA answer is a few hundred bytes; refuse to buffer more
DEFAULT_BACKOFF = 0.1  # seconds before the one retry when the carrier gives no Retry-After
MIN_ATTEMPT = 0.05  # do not start a request with less time than this left
CACHE_MAX_ENTRIES = 10_000
RETRYABLE = frozenset({429, 503, 504})

# (HTTP status, CAMARA error code) → reason; CAMARA Commonalities error model.
_ERROR_CODES = {
    (400, "OUT_OF_RANGE"): Reason.WINDOW_UNSUPPORTED,
    (404, "IDENTIFIER_NOT_FOUND"): Reason.NOT_FOUND,
    (422, "SERVICE_NOT_APPLICABLE"): Reason.NOT_COVERED,
}
# Reasons that mean the carrier is unwell; they count towards opening the breaker.
_FAILURES = frozenset({Reason.TIMEOUT, Reason.PROVIDER_ERROR, Reason.AUTH_ERROR})


class _Timeout(Exception):
    """The call's deadline passed (socket timeout or no time left to try)."""


class _Unreachable(Exception):
    """The carrier could not be reached or spoke broken HTTP."""


@dataclass(frozen=True)
class _Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON; ValueError if it is not."""
        return json.loads(self.body.decode("utf-8"))

    def error_code(self) -> str | None:
        """The CAMARA ``code`` of an error body, if there is one."""
        try:
            body = self.json()
        except ValueError:
            return None
        code = body.get("code") if isinstance(body, dict) else None
        return code if isinstance(code, str) else None


class CamaraProvider:
    """A ``CarrierProvider`` over one operator's (or aggregator's) CAMARA endpoints."""

    def __init__(
        self,
        base_url: str,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_ttl: float = 120.0,
        breaker_failures: int = 5,
        breaker_reset: float = 30.0,
    ) -> None:
        """Configure the endpoints and credentials; nothing goes on the network yet.

        ``clock`` (monotonic seconds) drives the fact cache, the token lifetime and the
        breaker; deadlines always use the real monotonic clock, since they bound real sockets.
        """
        for url in (base_url, token_url):
            try:
                outbound.check_url(url)
            except ValueError:
                raise ValueError("CAMARA URLs must be absolute http:// or https:// URLs") from None
        if not 0 <= cache_ttl <= 600:
            raise ValueError("cache_ttl is seconds, at most 10 minutes")
        self.base_url = base_url.rstrip("/")
        self.token_url = token_url
        self._client_id = client_id
        self._client_secret = client_secret
        self._clock = clock
        self._timer = time.monotonic
        self._cache_ttl = cache_ttl
        self._breaker = CircuitBreaker(breaker_failures, breaker_reset, clock)
        self._ssl = ssl.create_default_context()
        self._lock = threading.Lock()  # guards the fact cache
        self._cache: OrderedDict[str, tuple[float, SimChangeFact]] = OrderedDict()
        self._token_lock = threading.Lock()  # one token fetch at a time
        self._token: str | None = None
        self._token_expires_at = 0.0

    def __repr__(self) -> str:
        return f"CamaraProvider({self.base_url!r})"  # never the secret

    # -- the CarrierProvider interface -------------------------------------------------------

    def latest_sim_change(
        self, phone: str, *, deadline: float, use_cache: bool = True
    ) -> SimChangeFact:
        """SIM Swap v2 ``retrieve-date``: the date of the latest SIM change of ``phone``."""
        if use_cache and (cached := self._cached(phone)) is not None:
            return cached
        reason, body = self._call(SIM_SWAP_RETRIEVE_DATE, {"phoneNumber": phone}, deadline, phone)
        if reason is not Reason.OK:
            return SimChangeFact.failed(reason)
        fact = _sim_change_fact(body)
        if fact.reason is Reason.OK:
            self._store(phone, fact)
        else:
            log.warning("CAMARA retrieve-date for %s: malformed answer", mask_phone(phone))
        return fact

    def number_recycled(self, phone: str, since: datetime, *, deadline: float) -> RecycleFact:
        """Number Recycling v0.2 ``check``: was ``phone`` reassigned after ``since``?

        The API takes a date (``specifiedDate``), so ``since`` is rounded down to its UTC day:
        a reassignment earlier that same day also counts, erring towards re-proof.
        """
        payload = {"phoneNumber": phone, "specifiedDate": since.astimezone(UTC).date().isoformat()}
        reason, body = self._call(NUMBER_RECYCLING_CHECK, payload, deadline, phone)
        if reason is not Reason.OK:
            return RecycleFact.failed(reason)
        recycled = body.get("phoneNumberRecycled") if isinstance(body, dict) else None
        if not isinstance(recycled, bool):
            return RecycleFact.failed(Reason.PROVIDER_ERROR)
        return RecycleFact(RecycleStatus.REASSIGNED if recycled else RecycleStatus.NOT_REASSIGNED)

    def check_swapped(
        self, phone: str, max_age_hours: int, deadline: float
    ) -> tuple[SwapStatus, Reason]:
        """SIM Swap v2 ``check``: was the SIM of ``phone`` changed in the last ``max_age_hours``?

        Prefer ``latest_sim_change``, whose one answer serves every window; this is for
        carriers that only offer ``check``. ``maxAge`` must be 1-2400 hours (sim-swap.yaml).
        """
        if not MAX_AGE_HOURS_MIN <= max_age_hours <= MAX_AGE_HOURS_MAX:
            return SwapStatus.UNKNOWN, Reason.WINDOW_UNSUPPORTED
        payload = {"phoneNumber": phone, "maxAge": max_age_hours}
        reason, body = self._call(SIM_SWAP_CHECK, payload, deadline, phone)
        if reason is not Reason.OK:
            return SwapStatus.UNKNOWN, reason
        swapped = body.get("swapped") if isinstance(body, dict) else None
        if not isinstance(swapped, bool):
            return SwapStatus.UNKNOWN, Reason.PROVIDER_ERROR
        return (SwapStatus.SWAPPED if swapped else SwapStatus.NOT_SWAPPED), Reason.OK

    # -- fact cache ---------------------------------------------------------------------------

    def _cached(self, phone: str) -> SimChangeFact | None:
        with self._lock:
            entry = self._cache.get(phone)
            if entry is None:
                return None
            stored_at, fact = entry
            if self._clock() - stored_at >= self._cache_ttl:
                del self._cache[phone]
                return None
            return fact

    def _store(self, phone: str, fact: SimChangeFact) -> None:
        if self._cache_ttl <= 0:
            return
        with self._lock:
            self._cache.pop(phone, None)
            self._cache[phone] = (self._clock(), fact)
            while len(self._cache) > CACHE_MAX_ENTRIES:
                self._cache.popitem(last=False)  # the oldest entry

    # -- one call: breaker, token, retry -----------------------------------------------------

    def _call(
        self, path: str, payload: dict[str, Any], deadline: float, phone: str
    ) -> tuple[Reason, Any]:
        """POST ``payload`` to ``path``; return ``(Reason, parsed JSON body or None)``."""
        if not self._breaker.allow():
            return Reason.CIRCUIT_OPEN, None
        ends_at = self._timer() + deadline
        try:
            reason, body = self._exchange(path, payload, ends_at)
        except _Timeout:
            reason, body = Reason.TIMEOUT, None
        except _Unreachable:
            reason, body = Reason.PROVIDER_ERROR, None
        self._breaker.record(failed=reason in _FAILURES)
        if reason is not Reason.OK:
            log.warning("CAMARA %s for %s: %s", path, mask_phone(phone), reason.value)
        return reason, body

    def _exchange(self, path: str, payload: dict[str, Any], ends_at: float) -> tuple[Reason, Any]:
        body = json.dumps(payload).encode("utf-8")
        refreshed = retried = False
        while True:
            token = self._access_token(ends_at)
            if isinstance(token, Reason):
                return token, None
            headers = {
                "Authorization": f"Bearer {token}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            }
            response = self._post(self.base_url + path, body, headers, ends_at)
            if response.status == 401 and not refreshed:
                # RFC 6750 §3.1 invalid_token: the token was revoked or expired early.
                self._drop_token(token)
                refreshed = True
                continue
            if response.status in RETRYABLE and not retried:
                wait = _retry_after(response.headers.get("retry-after"), DEFAULT_BACKOFF)
                if wait is not None and self._timer() + wait + MIN_ATTEMPT < ends_at:
                    time.sleep(wait)
                    retried = True
                    continue
            return _interpret(response)

    # -- OAuth2 client credentials -----------------------------------------------------------

    def _access_token(self, ends_at: float) -> str | Reason:
        """A bearer token, fetched only when there is none or it is about to expire.

        One fetch at a time: callers that arrive meanwhile wait (within their deadline) and
        then reuse the fresh token instead of asking for their own.
        """
        if not self._token_lock.acquire(timeout=max(0.0, ends_at - self._timer())):
            raise _Timeout
        try:
            token = self._token
            if token and self._clock() < self._token_expires_at:
                return token
            return self._fetch_token(ends_at)
        finally:
            self._token_lock.release()

    def _drop_token(self, token: str) -> None:
        """Forget ``token`` unless another caller already replaced it (no lock: a race only
        costs one extra token fetch, and waiting here could outlast the deadline)."""
        if self._token == token:
            self._token = None

    def _fetch_token(self, ends_at: float) -> str | Reason:
        # RFC 6749 §2.3.1: id and secret are form-urlencoded, then sent as HTTP Basic.
        user = urllib.parse.quote_plus(self._client_id)
        password = urllib.parse.quote_plus(self._client_secret)
        basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        headers = {
            "Authorization": f"Basic {basic}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        form = urllib.parse.urlencode({"grant_type": "client_credentials"}).encode("ascii")
        response = self._post(self.token_url, form, headers, ends_at)
        if response.status in (400, 401, 403):  # RFC 6749 §5.2 invalid_client and friends
            log.error("CAMARA token endpoint refused the client credentials")
            return Reason.AUTH_ERROR
        if response.status == 429:
            return Reason.RATE_LIMITED
        if response.status != 200:
            return Reason.PROVIDER_ERROR
        try:
            grant = response.json()
        except ValueError:
            return Reason.PROVIDER_ERROR
        token = grant.get("access_token") if isinstance(grant, dict) else None
        if not isinstance(token, str) or not token:
            return Reason.PROVIDER_ERROR
        expires_in = grant.get("expires_in")
        if isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
            expires_in = 60  # RFC 6749 §5.1: only RECOMMENDED; assume a short life
        # Renew a little early so a token never expires between our check and the carrier's.
        margin = min(30.0, expires_in / 10)
        self._token = token
        self._token_expires_at = self._clock() + max(0.0, expires_in - margin)
        return token

    # -- HTTP --------------------------------------------------------------------------------

    def _post(self, url: str, body: bytes, headers: dict[str, str], ends_at: float) -> _Response:
        """POST once within the time left before ``ends_at``, the whole exchange included
        (``service.outbound``: a carrier that trickles bytes is cut off at the deadline)."""
        left = ends_at - self._timer()
        if left < MIN_ATTEMPT:
            raise _Timeout
        try:
            answer = outbound.post(
                url, body, headers, timeout=left, max_body=MAX_BODY, tls=self._ssl
            )
        except outbound.OutboundTimeout:
            raise _Timeout from None
        except outbound.OutboundError:
            raise _Unreachable from None
        return _Response(answer.status, answer.headers, answer.body)


def _sim_change_fact(body: Any) -> SimChangeFact:
    """Read a ``retrieve-date`` answer; a malformed one is a PROVIDER_ERROR fact."""
    if not isinstance(body, dict) or "latestSimChange" not in body:
        return SimChangeFact.failed(Reason.PROVIDER_ERROR)
    raw_date, period = body["latestSimChange"], body.get("monitoredPeriod")
    if period is not None and (isinstance(period, bool) or not isinstance(period, int)):
        return SimChangeFact.failed(Reason.PROVIDER_ERROR)
    if period is not None and period < 0:
        return SimChangeFact.failed(Reason.PROVIDER_ERROR)
    if raw_date is None:
        return SimChangeFact(latest_change=None, monitored_days=period)
    try:
        latest = parse_rfc3339(raw_date)
    except (TypeError, ValueError):
        return SimChangeFact.failed(Reason.PROVIDER_ERROR)
    return SimChangeFact(latest_change=latest, monitored_days=period)


def _interpret(response: _Response) -> tuple[Reason, Any]:
    """Map a final HTTP answer to ``(Reason, JSON body)``."""
    status = response.status
    if status == 200:
        try:
            return Reason.OK, response.json()
        except ValueError:
            return Reason.PROVIDER_ERROR, None
    if status in (401, 403):
        return Reason.AUTH_ERROR, None
    if status == 429:
        return Reason.RATE_LIMITED, None
    return _ERROR_CODES.get((status, response.error_code() or ""), Reason.PROVIDER_ERROR), None


def _retry_after(value: str | None, default: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (RFC 9110 §10.2.3): delay or HTTP date."""
    if value is None:
        return default
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
