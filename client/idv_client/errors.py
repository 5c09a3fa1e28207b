"""Errors of the idv HTTP contract, one class per ``error`` code (API.md, "Errors")."""

from __future__ import annotations


class IdvError(Exception):
    """An error answer of idv (or a transport failure): ``code`` is the contract's error code."""

    code = "idv_error"

    def __init__(self, message: str = "", *, status: int | None = None, code: str | None = None):
        self.code = code or type(self).code
        self.message = message or self.code
        self.status = status
        super().__init__(f"{self.code}: {self.message}")


class InvalidRequest(IdvError):
    code = "invalid_request"


class UnknownAction(IdvError):
    code = "unknown_action"


class Unauthorized(IdvError):
    code = "unauthorized"


class Forbidden(IdvError):
    code = "forbidden"


class StepUpRequired(IdvError):
    """The call needs ``assertion`` from a satisfied verification (e.g. ``enroll_factor``)."""

    code = "step_up_required"


class NotFound(IdvError):
    code = "not_found"


class NotPending(IdvError):
    """The verification is no longer ``pending`` (satisfied, denied, locked or expired)."""

    code = "not_pending"


class PayloadTooLarge(IdvError):
    code = "payload_too_large"


class InvalidCode(IdvError):
    code = "invalid_code"


class WeakSecret(IdvError):
    code = "weak_secret"


class FactorNotAllowed(IdvError):
    code = "factor_not_allowed"


class RateLimited(IdvError):
    """429: ``retry_after`` is the number of seconds from the ``Retry-After`` header."""

    code = "rate_limited"

    def __init__(self, message: str = "", *, retry_after: int = 1, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServerError(IdvError):
    """A 5xx answer (``server_error``, ``service_unavailable``, or a proxy's error page)."""

    code = "server_error"


class TransportError(IdvError):
    """idv could not be reached or did not answer in time (no HTTP status)."""

    code = "transport_error"


ERRORS: dict[str, type[IdvError]] = {
    cls.code: cls
    for cls in (
        InvalidRequest,
        UnknownAction,
        Unauthorized,
        Forbidden,
        StepUpRequired,
        NotFound,
        NotPending,
        PayloadTooLarge,
        InvalidCode,
        WeakSecret,
        FactorNotAllowed,
        RateLimited,
        ServerError,
    )
}
ERRORS["service_unavailable"] = ServerError

_BY_STATUS: dict[int, type[IdvError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: NotPending,
    413: PayloadTooLarge,
    429: RateLimited,
}


def error_for(status: int, code: str | None, message: str, retry_after: int | None) -> IdvError:
    """The exception for an error answer: by ``error`` code, else by status."""
    cls = (
        ERRORS.get(code or "")
        or _BY_STATUS.get(status)
        or (ServerError if status >= 500 else IdvError)
    )
    if cls is RateLimited:
        return RateLimited(message, retry_after=retry_after or 1, status=status, code=code)
    return cls(message, status=status, code=code or cls.code)


class AssertionInvalid(Exception):
    """An assertion that must not be trusted; ``reason`` is a machine-readable code.

    Reasons: ``malformed``, ``bad_typ``, ``bad_algorithm``, ``unknown_kid``, ``jwks_unavailable``,
    ``bad_signature``, ``expired``, ``not_yet_valid``, ``missing_claim``, ``wrong_issuer``,
    ``wrong_audience``, ``wrong_subject``, ``wrong_action``, ``lifetime_too_long``, ``replayed``.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        self.detail = detail or reason
        super().__init__(f"{reason}: {self.detail}" if detail else reason)
