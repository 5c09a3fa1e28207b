"""Errors of the idv HTTP contract: one class per ``error`` code (API.md, "Errors"), plus the
relying party's own: ``AssertionInvalid`` (do not trust this assertion: step up again) and
``JwksUnavailable`` (idv's keys cannot be fetched: answer 503, do not ask for a new step-up)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from idv_client.types import AssertionFailure


class IdvError(Exception):
    """An error answer of idv (or a transport failure): ``code`` is the contract's error code,
    ``status`` the HTTP status (None when no answer came), ``retry_after`` the seconds of a
    ``Retry-After`` header (None when there was none). Messages are idv's own text: idv never
    puts a secret, code or assertion in them."""

    code = "idv_error"

    def __init__(
        self,
        message: str = "",
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.code = code or type(self).code
        self.message = message or self.code
        self.status = status
        self.retry_after = retry_after
        super().__init__(f"{self.code}: {self.message}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r})"


class InvalidRequest(IdvError):
    """400: a malformed body, a phone that is not E.164, a factor without challenges."""

    code = "invalid_request"


class UnknownAction(IdvError):
    """400: the policy has no such action."""

    code = "unknown_action"


class Unauthorized(IdvError):
    """401: the API key is missing, wrong or revoked."""

    code = "unauthorized"


class Forbidden(IdvError):
    """403: the key lacks the scope this route needs."""

    code = "forbidden"


class StepUpRequired(IdvError):
    """403: the call needs ``assertion`` from a satisfied verification (e.g. ``enroll_factor``)."""

    code = "step_up_required"


class NotFound(IdvError):
    """404: no such subject, factor or verification in this tenant."""

    code = "not_found"


class RequestTimeout(IdvError):
    """408: idv gave up waiting for the request body."""

    code = "request_timeout"


class NotPending(IdvError):
    """409: the verification is no longer ``pending`` (satisfied, denied, locked, expired, or
    ``waiting`` before ``ready_at``)."""

    code = "not_pending"


class Conflict(IdvError):
    """409: the request lost a race and wrote nothing, or the same ``Idempotency-Key`` is still
    running; sending it again is safe."""

    code = "conflict"


class PayloadTooLarge(IdvError):
    """413: request bodies are limited to 1 MiB."""

    code = "payload_too_large"


class InvalidCode(IdvError):
    """422: an activation code or passkey registration that does not verify."""

    code = "invalid_code"


class WeakSecret(IdvError):
    """422: a guessable PIN or passphrase (short, repeated, sequential, common)."""

    code = "weak_secret"


class FactorNotAllowed(IdvError):
    """422: the factor is in no remaining option (or the tenant cannot use it)."""

    code = "factor_not_allowed"


class IdempotencyConflict(IdvError):
    """422: the ``Idempotency-Key`` was used before with another body."""

    code = "idempotency_conflict"


class RateLimited(IdvError):
    """429: ``retry_after`` is the seconds to wait (``Retry-After``; None if idv sent none)."""

    code = "rate_limited"


class ServerError(IdvError):
    """A 5xx answer without a known code (a server fault, or a proxy's error page)."""

    code = "server_error"


class ServiceUnavailable(ServerError):
    """503: idv's database or Redis is away; nothing was written."""

    code = "service_unavailable"


class TransportError(IdvError):
    """idv could not be reached or did not answer in time (no HTTP status)."""

    code = "transport_error"


class JwksUnavailable(IdvError):
    """idv's JWKS could not be fetched (idv down, a proxy error, a malformed key set).

    Deliberately not an ``AssertionInvalid``: the assertion may be fine, so the user must not be
    asked to step up again; a relying party answers 503 and lets the caller retry.
    """

    code = "jwks_unavailable"


ERRORS: dict[str, type[IdvError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        UnknownAction,
        Unauthorized,
        Forbidden,
        StepUpRequired,
        NotFound,
        RequestTimeout,
        NotPending,
        Conflict,
        PayloadTooLarge,
        InvalidCode,
        WeakSecret,
        FactorNotAllowed,
        IdempotencyConflict,
        RateLimited,
        ServerError,
        ServiceUnavailable,
    )
}

# An answer without a known code (a proxy, an older idv) is classed by its status alone. 409 and
# 422 have several codes: the neutral one is chosen (a 409 of unknown meaning is not "not pending").
_BY_STATUS: dict[int, type[IdvError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    408: RequestTimeout,
    409: Conflict,
    413: PayloadTooLarge,
    429: RateLimited,
    503: ServiceUnavailable,
}


def parse_retry_after(value: str | None, now: datetime | None = None) -> int | None:
    """Seconds to wait from a ``Retry-After`` value, RFC 9110 §10.2.3: ``delay-seconds`` or an
    ``HTTP-date`` (a date in the past means 0). None when absent or unreadable: a caller must not
    mistake "no advice" for "one second"."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return int(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 §5.6.7: HTTP-dates are GMT
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return max(0, math.ceil(delta))


def error_for(
    status: int, code: str | None, message: str, retry_after: int | None = None
) -> IdvError:
    """The exception for an error answer: by ``error`` code, else by status."""
    cls = (
        ERRORS.get(code or "")
        or _BY_STATUS.get(status)
        or (ServerError if status >= 500 else IdvError)
    )
    return cls(message, status=status, code=code or cls.code, retry_after=retry_after)


class AssertionInvalid(Exception):
    """An assertion that must not be trusted; ``reason`` is a machine-readable code (see
    ``idv_client.types.AssertionFailure``): ``malformed``, ``bad_typ``, ``bad_algorithm``,
    ``unknown_kid``, ``bad_signature``, ``expired``, ``not_yet_valid``, ``missing_claim``,
    ``wrong_issuer``, ``wrong_audience``, ``wrong_subject``, ``wrong_action``,
    ``lifetime_too_long``, ``insufficient_acr``, ``too_old``, ``replayed``. The right answer to
    the user is a new step-up. The token itself is never part of the message.
    """

    def __init__(self, reason: AssertionFailure, detail: str = "") -> None:
        self.reason: AssertionFailure = reason
        self.detail = detail or reason
        super().__init__(f"{reason}: {self.detail}" if detail else reason)

    def __repr__(self) -> str:
        return f"AssertionInvalid(reason={self.reason!r})"
