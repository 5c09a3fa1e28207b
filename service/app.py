"""The app factory: ``create_app(settings)`` wires everything; nothing runs at import."""

from __future__ import annotations

import gc
import logging

from flask import Flask

from service.context import ServiceContext
from service.settings import Settings

MAX_BODY_BYTES = 1024 * 1024  # API.md: request bodies are limited to 1 MiB
# Every answer: never cached (an assertion or a factor secret in a shared cache), and no
# content sniffing (OWASP ASVS 5.0 V3.4). The proof route's fast path sends the same.
SECURITY_HEADERS = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))


def create_app(settings: Settings | None = None, *, context: ServiceContext | None = None) -> Flask:
    """Build the Flask app from settings (read from ``IDV_*`` when omitted)."""
    from service.domain.errors import InvalidRequest
    from service.domain.text import storable
    from service.http import errors, fast, idempotency, openapi, ops, subjects, verify

    if context is None:
        context = ServiceContext.build(settings or Settings.from_env())
    app = Flask("idv")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, JSON_SORT_KEYS=False)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["idv"] = context
    logging.getLogger("idv").setLevel(context.settings.log_level)

    errors.register_error_handlers(app)
    ops.install_metrics(app)
    idempotency.install(app)  # API.md: Idempotency-Key on any POST
    for blueprint in (ops.bp, openapi.bp, subjects.bp, verify.bp):
        app.register_blueprint(blueprint)

    @app.url_value_preprocessor
    def _storable_path(_endpoint, values):  # type: ignore[no-untyped-def]
        # Path ids are looked up, audited and echoed: one with a U+0000 would be a 500 on
        # PostgreSQL and a stored oddity on SQLite. The body parser refuses the same.
        if values and not all(storable(v) for v in values.values() if isinstance(v, str)):
            raise InvalidRequest("the path holds a U+0000 or an unpaired surrogate")

    @app.after_request
    def _headers(response):  # type: ignore[no-untyped-def]
        (cache, cache_rule), (sniff, no_sniff) = SECURITY_HEADERS
        response.headers.setdefault(cache, cache_rule)  # a route may set its own (the JWKS)
        response.headers[sniff] = no_sniff
        return response

    if context.settings.fast_proofs:  # issue 24: a whole login without Flask's machinery
        app.wsgi_app = fast.FastRoutes(app, app.wsgi_app, SECURITY_HEADERS)  # type: ignore[method-assign]
    return app


def settle_heap() -> int:
    """Move every object alive after start-up out of the garbage collector's sight.

    A server worker builds the app once: Flask, SQLAlchemy's compiled statements, pydantic's
    schemas, the policy, the key ring, about 100,000 objects that live as long as the process.
    Left in generation 2, every full collection walks all of them while holding the GIL: under
    load that was a 54 ms pause of every request in flight. ``gc.freeze()`` (Python docs, gc)
    moves them to the permanent generation; the same collection then takes about 6 ms
    (bench/RESULTS.md). Objects made later are collected as before. Returns how many are frozen.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
