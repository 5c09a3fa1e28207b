"""Operations routes: health, readiness, metrics, OpenAPI and the JWKS."""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import Blueprint, Flask, Response, g, jsonify, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

from service.domain import assertions
from service.http.auth import ctx
from service.http.errors import error_response
from service.storage.db import ping

bp = Blueprint("ops", __name__)
# How long relying parties may cache the JWKS (RFC 9111 §5.2.2.1 max-age). A signing key dropped
# from the key ring (say, after a compromise) stays trusted by them at most this long, which is
# no longer than one assertion lives (API.md: exp at most 5 minutes after iat).
JWKS_MAX_AGE = 300
access = logging.getLogger("idv.access")


@bp.get("/healthz")
def healthz() -> Response:
    """The process is up."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Response:
    """The database answers; 503 otherwise."""
    try:
        ping(ctx().engine)
    except Exception:  # noqa: BLE001 - any failure means not ready
        return error_response(503, "service_unavailable", "the database is unreachable")
    if ctx().limits.shared and not ctx().limits.healthy():
        return error_response(503, "service_unavailable", "the rate limit store is unreachable")
    return jsonify({"status": "ready"})


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """Public keys that verify idv's assertions (RFC 7517)."""
    response = jsonify(assertions.jwks(ctx().keys))
    response.headers["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE}"
    return response


# HTTP methods a label may name; any other token a client sends counts as "other". The method
# is the client's to choose: as a label it would grow the registry by one series per invented
# method, without bound (a memory leak anyone can drive).
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def install_metrics(app: Flask) -> None:
    """Request counts and latency by route and status, served at ``/metrics``."""
    registry = CollectorRegistry()
    requests_total = Counter(
        "idv_http_requests_total",
        "HTTP requests",
        ["method", "route", "status"],
        registry=registry,
    )
    latency = Histogram(
        "idv_http_request_duration_seconds",
        "HTTP request latency",
        ["method", "route"],
        registry=registry,
        buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
    )
    app.extensions["idv_metrics"] = registry

    @app.before_request
    def _start() -> None:
        g.idv_started = time.perf_counter()

    series: dict[tuple[str, str, int], tuple[Any, Any]] = {}  # labelled children, looked up once

    def record(method: str, route: str, status: int, started: float | None, client: Any) -> None:
        """Count one answered request (also called by the proof route's WSGI fast path)."""
        method = method if method in _METHODS else "other"
        elapsed = time.perf_counter() - started if started is not None else None
        labelled = series.get((method, route, status))
        if labelled is None:  # bounded: methods, route templates and statuses are finite sets
            labelled = (
                latency.labels(method, route),
                requests_total.labels(method, route, str(status)),
            )
            series[(method, route, status)] = labelled
        if elapsed is not None:
            labelled[0].observe(elapsed)
        labelled[1].inc()
        # The route template, never the raw path or body: no subject id, phone or code in logs.
        if access.isEnabledFor(logging.INFO):
            access.info(
                "%s %s %s %.1fms client=%s",
                method,
                route,
                status,
                elapsed * 1000 if elapsed is not None else 0.0,
                client.id if client else "-",
            )

    app.extensions["idv_record_request"] = record

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.url_rule.rule if request.url_rule else "<unmatched>"
        record(
            request.method, route, response.status_code, g.get("idv_started"), g.get("idv_client")
        )
        return response

    @app.get("/metrics")
    def metrics() -> Response:
        """Prometheus exposition."""
        return Response(generate_latest(registry), mimetype=CONTENT_TYPE_LATEST)
