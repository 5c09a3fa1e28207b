"""Domain errors: raised by the pure core, mapped to HTTP in one place (service.http.errors).

Each error carries the machine-readable code of the contract (docs/API.md, "Errors").
"""

from __future__ import annotations


class IdvError(Exception):
    """Base class of every error a caller may see. ``code`` is the contract's error code."""

    code = "invalid_request"
    status = 400

    def __init__(self, message: str = "", **extra: object) -> None:
        super().__init__(message or self.code)
        self.message = message or self.code
        self.extra = extra


class InvalidRequest(IdvError):
    code, status = "invalid_request", 400


class UnknownAction(IdvError):
    code, status = "unknown_action", 400


class Unauthorized(IdvError):
    code, status = "unauthorized", 401


class Forbidden(IdvError):
    code, status = "forbidden", 403


class StepUpRequired(IdvError):
    code, status = "step_up_required", 403


class NotFound(IdvError):
    code, status = "not_found", 404


class MethodNotAllowed(IdvError):
    code, status = "method_not_allowed", 405


class NotPending(IdvError):
    code, status = "not_pending", 409


class Conflict(IdvError):
    code, status = "conflict", 409


class PayloadTooLarge(IdvError):
    code, status = "payload_too_large", 413


class UnsupportedMediaType(IdvError):
    code, status = "unsupported_media_type", 415


class InvalidCode(IdvError):
    code, status = "invalid_code", 422


class WeakSecret(IdvError):
    code, status = "weak_secret", 422


class FactorNotAllowed(IdvError):
    code, status = "factor_not_allowed", 422


class IdempotencyConflict(IdvError):
    """An ``Idempotency-Key`` already used with another request (API.md, Conveniences)."""

    code, status = "idempotency_conflict", 422


class RateLimited(IdvError):
    """Too many attempts; ``retry_after`` seconds until the window frees up (RFC 4226 §7.3)."""

    code, status = "rate_limited", 429

    def __init__(self, message: str = "", retry_after: int = 1) -> None:
        super().__init__(message or "too many requests", retry_after=retry_after)
        self.retry_after = max(1, int(retry_after))


class ServiceUnavailable(IdvError):
    code, status = "service_unavailable", 503


class PolicyError(Exception):
    """An invalid policy file: names the file, the key and what is wrong."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        super().__init__(f"{file}: {key}: {problem}")
        self.file, self.key, self.problem = file, key, problem


class ConfigError(Exception):
    """A bad IDV_* setting: names the variable and what is wrong."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable, self.problem = variable, problem
