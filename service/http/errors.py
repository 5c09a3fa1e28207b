"""The one place that maps errors to HTTP: ``{"error": CODE, "message": TEXT}`` (API.md, Errors).

No path answers with an HTML page, and bad input never becomes a 500.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

from service.domain.errors import IdvError

log = logging.getLogger("idv.http")

HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    414: "invalid_request",
    415: "invalid_request",
    429: "rate_limited",
    431: "invalid_request",
}


# PostgreSQL rolled the whole transaction back as a deadlock's victim (40P01) or as one it
# could not serialise (40001). The database is up, so not 503 (which /readyz would contradict):
# the request lost a race and wrote nothing, the contract's 409 ``conflict``.
ROLLED_BACK_BY_CONFLICT = frozenset({"40P01", "40001"})


def error_code(status: int) -> str:
    """The contract's error code for an HTTP status that no domain error chose."""
    return HTTP_CODES.get(status, "invalid_request" if status < 500 else "server_error")


def error_body(code: str, message: str) -> dict[str, str]:
    """The contract's error body (API.md, Errors)."""
    return {"error": code, "message": message}


def error_response(status: int, code: str, message: str) -> Response:
    """Build the contract's error body with ``status``."""
    response = jsonify(error_body(code, message))
    response.status_code = status
    return response


def refusal(exc: IdvError) -> tuple[dict[str, str], tuple[tuple[str, str], ...]]:
    """A domain error's answer: the contract's body and its extra headers (``Retry-After``
    when the error carries one). The error handler below and the proof route's fast path
    (``service.http.fast``) both answer with it."""
    retry_after = getattr(exc, "retry_after", None)
    headers = (("Retry-After", str(retry_after)),) if retry_after is not None else ()
    return error_body(exc.code, exc.message), headers


def register_error_handlers(app: Flask) -> None:
    """Install handlers for domain errors, werkzeug's HTTP errors and anything unexpected."""

    @app.errorhandler(IdvError)
    def _domain(exc: IdvError) -> Response:
        body, headers = refusal(exc)
        response = jsonify(body)
        response.status_code = exc.status
        response.headers.extend(headers)
        return response

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        status = exc.code or 500
        code = error_code(status)
        messages = {
            404: "no such resource",
            405: "method not allowed on this resource",
            408: "the request body stopped arriving",
            413: "request body exceeds the 1 MiB limit",
        }
        response = error_response(status, code, messages.get(status, exc.description or code))
        if status == 405 and exc.get_response().headers.get("Allow"):
            response.headers["Allow"] = exc.get_response().headers["Allow"]
        return response

    @app.errorhandler(IntegrityError)
    def _conflict(exc: IntegrityError) -> Response:
        # A unique constraint lost a race with a concurrent request: nothing was written.
        log.info("integrity conflict: %s", type(exc.orig).__name__)
        return error_response(409, "conflict", "a concurrent request changed this; retry")

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _db_down(exc: Exception) -> Response:
        if getattr(getattr(exc, "orig", None), "sqlstate", None) in ROLLED_BACK_BY_CONFLICT:
            log.warning("transaction conflict: %s", type(getattr(exc, "orig", exc)).__name__)
            return error_response(409, "conflict", "a concurrent request changed this; retry")
        log.error("database unavailable: %s", type(exc).__name__)
        response = error_response(503, "service_unavailable", "the database is unavailable")
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "server_error", "internal server error")
