"""What ``IdvClient`` and ``AsyncIdvClient`` share: a call's description (``Call``), and one
``Exchange`` per call that decides headers, retries, back-off and how an answer becomes a result
or an exception. The two clients only send bytes and sleep, each in its own way (sans-I/O), so
the retry rules exist once.

Retry rules (README, "Methods"): a request that never left this process (connection refused,
connect or pool timeout) is sent again whatever its method. Once it may have reached idv, only a
GET and a POST are: every POST carries an ``Idempotency-Key`` generated for the call and reused on
each retry, so idv answers a repeat with the first answer and does nothing twice (API.md,
"Conveniences for callers"). PUT and DELETE are never re-sent after they may have arrived. Retried
answers: 502/503/504 (idv keeps no 5xx answer, and its 5xx means nothing was written), and 409
``conflict`` on a POST (the race was lost and nothing written, or the first try is still running).
"""

from __future__ import annotations

import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx

from idv_client.errors import (
    IdvError,
    ServerError,
    TransportError,
    error_for,
    parse_retry_after,
)

T = TypeVar("T")
log = logging.getLogger("idv_client")

# Errors raised before a single byte of the request left this process: safe to retry any method.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
RETRY_STATUS = frozenset({502, 503, 504})
MAX_RETRY_AFTER = 10.0  # seconds: a longer Retry-After is the caller's to honour, not ours
USER_AGENT = "idv-client-python/0.2"


@dataclass(frozen=True)
class Call(Generic[T]):
    """One request of the contract: ``route`` is the path template (what is logged, never the
    ids or the body), ``params`` fill it, ``parse`` turns ``(json, status)`` into the result."""

    method: str
    route: str
    parse: Callable[[Any, int], T]
    params: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The route with each parameter as one percent-encoded path segment."""
        return self.route.format(**{k: quote(v, safe="") for k, v in self.params.items()})


@dataclass(frozen=True)
class Options:
    """Transport settings shared by both clients."""

    base_url: str
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.2

    def client_kwargs(self, api_key: str) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client`` / ``httpx.AsyncClient``."""
        return {
            "base_url": self.base_url,
            "headers": {
                "Authorization": f"Bearer {api_key}",
                "Accept": "application/json",
                "User-Agent": USER_AGENT,
            },
            "timeout": self.timeout,
        }


class Exchange(Generic[T]):
    """The attempts of one call. ``request()`` gives the arguments of the next send; after it,
    ``after_error(exc)`` or ``after_response(response)`` returns the seconds to wait before the
    next attempt, or ends the call (a result from ``result()``, or an exception)."""

    def __init__(self, call: Call[T], options: Options) -> None:
        self.call = call
        self.options = options
        self.attempt = 0
        self.started = time.monotonic()
        self.headers = dict(call.headers)
        # One key per call, the same on each retry: idv answers a repeat with the first answer.
        if call.method == "POST":
            self.headers.setdefault("Idempotency-Key", f"idvpy-{uuid.uuid4().hex}")

    @property
    def _resendable(self) -> bool:
        """Whether a request that may have reached idv can be sent again without harm."""
        return self.call.method in ("GET", "POST")

    def request(self) -> dict[str, Any]:
        """Keyword arguments of ``httpx.Client.request`` for the next attempt."""
        self.attempt += 1
        return {
            "method": self.call.method,
            "url": self.call.path,
            "params": self.call.query or None,
            "json": self.call.body,
            "headers": self.headers,
        }

    def _delay(self, why: str, advised: int | None = None) -> float:
        pause = self.options.backoff * 2.0 ** (self.attempt - 1) * random.uniform(0.5, 1.0)
        if advised is not None:
            pause = max(pause, float(advised))
        log.warning(
            "idv %s %s: %s; retry %d of %d in %.2fs",
            self.call.method,
            self.call.route,
            why,
            self.attempt,
            self.options.retries,
            pause,
        )
        return pause

    def after_error(self, exc: httpx.HTTPError) -> float:
        """The wait before a retry after a transport error; raises ``TransportError`` if none."""
        may_retry = isinstance(exc, NOT_SENT) or self._resendable
        if may_retry and self.attempt <= self.options.retries:
            return self._delay(type(exc).__name__)
        log.info("idv %s %s: %s", self.call.method, self.call.route, type(exc).__name__)
        raise TransportError(f"{self.call.method} {self.call.route}: {type(exc).__name__}") from exc

    def after_response(self, response: httpx.Response) -> float | None:
        """The wait before a retry after this answer; None when the answer is final."""
        status = response.status_code
        log.debug(
            "idv %s %s -> %d in %.0f ms (attempt %d)",
            self.call.method,
            self.call.route,
            status,
            (time.monotonic() - self.started) * 1000,
            self.attempt,
        )
        if self.attempt > self.options.retries:
            return None
        retryable = (status in RETRY_STATUS and self._resendable) or (
            status == 409 and self.call.method == "POST" and _code(response) == "conflict"
        )
        if not retryable:
            return None
        advised = parse_retry_after(response.headers.get("Retry-After"))
        if advised is not None and advised > MAX_RETRY_AFTER:
            return None
        return self._delay(f"HTTP {status}", advised)

    def result(self, response: httpx.Response) -> T:
        """The parsed result of a final answer, or its ``IdvError``."""
        if response.status_code >= 400:
            raise _error(response)
        try:
            data = response.json() if response.status_code != 204 and response.content else None
        except ValueError:  # a proxy's page, not idv's JSON
            raise ServerError("the answer is not JSON", status=response.status_code) from None
        return self.call.parse(data, response.status_code)


def _code(response: httpx.Response) -> str | None:
    try:
        data = response.json()
    except ValueError:
        return None
    code = data.get("error") if isinstance(data, dict) else None
    return code if isinstance(code, str) else None


def _error(response: httpx.Response) -> IdvError:
    message = response.reason_phrase
    try:
        data = response.json()
        if isinstance(data, dict) and isinstance(data.get("message"), str):
            message = data["message"]
    except ValueError:
        pass
    return error_for(
        response.status_code,
        _code(response),
        message,
        parse_retry_after(response.headers.get("Retry-After")),
    )


TransportT = TypeVar("TransportT")


class ClientBase(Generic[TransportT]):
    """Construction shared by both clients: options, ``from_env``, a ``repr`` without the key.
    ``transport`` (an httpx transport, e.g. ``httpx.MockTransport`` in tests) goes to
    ``_open``, which each client implements with its own httpx client class."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 5.0,
        retries: int = 2,
        backoff: float = 0.2,
        transport: TransportT | None = None,
    ) -> None:
        if not base_url or not api_key:
            raise ValueError("base_url and api_key are required")
        self._options = Options(base_url.rstrip("/"), timeout, retries, backoff)
        self._open(self._options.client_kwargs(api_key), transport)

    def _open(self, client_kwargs: dict[str, Any], transport: TransportT | None) -> None:
        raise NotImplementedError

    @classmethod
    def from_env(cls, **kwargs: Any) -> Self:
        """A client for ``IDV_URL`` with the key in ``IDV_API_KEY`` (other options as keywords);
        ``ValueError`` naming the variable that is missing."""
        missing = [name for name in ("IDV_URL", "IDV_API_KEY") if not os.environ.get(name)]
        if missing:
            raise ValueError(f"set {' and '.join(missing)} in the environment")
        return cls(os.environ["IDV_URL"], os.environ["IDV_API_KEY"], **kwargs)

    @property
    def base_url(self) -> str:
        """The idv deployment this client talks to."""
        return self._options.base_url

    def __repr__(self) -> str:  # the API key stays out of every repr and log line
        return f"{type(self).__name__}(base_url={self.base_url!r})"
