"""The two requests of a whole login without Flask's per-request machinery (issue 24):
``POST /v1/verifications`` (201) and ``POST /v1/verifications/{id}/proofs`` (200).

They are the hot path. Flask and werkzeug cost each about a fifth of its Python: a request
context, URL matching, six hooks, a ``Request`` and a ``Response`` object and their header
structures. This WSGI middleware answers those routes' ordinary requests itself and hands every
other request to Flask unchanged.

What it keeps of the Flask routes, in the same order (``service.http.verify.start`` and
``service.http.verify.prove``):

- the caller: ``auth.recognised`` (a known key from memory, confirmed live in the use case's
  first statement; the ``client`` limit; the ``verify`` scope);
- the body: ``body.decode_object`` and ``body.validate`` with the route's model
  (``StartVerification``, ``Proof``);
- the use case (``verifications.start``, ``proofs.prove``: the one place that orders the
  security checks), and the route's answer serialised by the app's JSON provider;
- the headers every answer gets (``app.SECURITY_HEADERS``) and the metrics and access log
  (``ops.install_metrics``'s ``record``).

A domain error (``IdvError``: the contract's 400, 401, 403, 404, 409 and 429 refusals) is
answered here with the error handler's own ``errors.refusal`` (the body, ``Retry-After``, the
same headers); every other error is answered by Flask itself: a request context is built for
the same environ and the app's own error handlers and ``after_request`` hooks run. Either way
the answer is byte for byte what the Flask route gives (tests/http/test_fast_proofs.py).

What it hands to Flask before doing anything: another method or path, a path id outside
``[A-Za-z0-9_-]`` (Flask's path checks apply), an ``Idempotency-Key`` (the claim and replay
hooks), a body without a ``Content-Length`` or over the 1 MiB limit, chunked bodies, and a
Content-Type other than ``application/json``. ``IDV_FAST_PROOFS=0`` turns it off.
tests/http/test_fast_proofs.py runs the routes' answers both ways and compares them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from flask import Flask, g
from werkzeug.exceptions import RequestTimeout
from werkzeug.http import HTTP_STATUS_CODES

from service.context import ServiceContext
from service.domain import jsontext
from service.domain.errors import IdvError
from service.http import auth, body, errors, verify
from service.http.models import Proof, StartVerification
from service.storage.clients import ClientRecord
from service.usecases import proofs, verifications
from service.usecases.clients import KnownKey

PROOFS = re.compile(r"/v1/verifications/([A-Za-z0-9_-]{1,128})/proofs")
START = "/v1/verifications"

StartResponse = Callable[..., Any]
Wsgi = Callable[[dict, StartResponse], Iterable[bytes]]
# (service, client, known key, path id, body bytes) -> the answer's JSON value
Handler = Callable[[ServiceContext, ClientRecord, "KnownKey | None", str, bytes], Any]


def _json_body(data: bytes, model: type[body.M]) -> body.M:
    """``body.parse`` for the bytes the fast path read: the same decoding and model rules."""
    return body.validate(model, body.decode_object(data, "application/json"))


def _prove(
    service: ServiceContext, client: ClientRecord, known: KnownKey | None, vid: str, data: bytes
) -> Any:
    """``verify.prove``: a proof."""
    proof = _json_body(data, Proof)
    outcome = proofs.prove(service, client, vid, proof.model_dump(), known)
    return verify.proof_answer(outcome)


def _start(
    service: ServiceContext, client: ClientRecord, known: KnownKey | None, _: str, data: bytes
) -> Any:
    """``verify.start``: a verification created."""
    start = _json_body(data, StartVerification)
    view = verifications.start(
        service, client, start.subject_id, start.action, start.context, known
    )
    return view.answer()


@dataclass(frozen=True)
class _Route:
    rule: str  # the Flask route's rule: the metrics label
    status: int  # the answer's status when the use case returns
    handler: Handler


class _Seen:
    """Where ``auth.recognised`` leaves the client (Flask's ``g`` on the Flask route)."""

    idv_client: Any = None


class FastRoutes:
    """WSGI middleware: a whole login's ordinary requests, answered without Flask."""

    def __init__(self, app: Flask, flask_wsgi: Wsgi, headers: tuple[tuple[str, str], ...]) -> None:
        self.app = app
        self.flask_wsgi = flask_wsgi
        self.headers = headers
        # The routes' own rules (the metrics labels) and body limit, read from the app once.
        rules = {rule.endpoint: rule.rule for rule in app.url_map.iter_rules()}
        self.proofs = _Route(rules["verify.prove"], 200, _prove)
        self.start = _Route(rules["verify.start"], 201, _start)
        self.max_body: int = app.config["MAX_CONTENT_LENGTH"]  # larger: Flask answers its 413
        # What ``jsonify`` writes with: the app's JSON provider's settings, compact, built once
        # (the provider's ``dumps`` builds an encoder per call).
        provider: Any = app.json
        self.dumps = jsontext.compact(
            sort_keys=provider.sort_keys,
            ensure_ascii=provider.ensure_ascii,
            default=provider.default,
        )

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        raw = self._raw(environ)
        if raw is None:
            return self.flask_wsgi(environ, start_response)
        route, path_id, length = raw
        started = time.perf_counter()
        seen = _Seen()
        try:
            stream = environ["wsgi.input"]
            service = self.app.extensions["idv"]
            client, known = auth.recognised(
                service, environ.get("HTTP_AUTHORIZATION"), "verify", seen
            )
            try:
                data = stream.read(length) if length else b""
            except OSError:  # the body stopped arriving (IDV_CLIENT_TIMEOUT) or the client left
                raise RequestTimeout() from None
            if len(data) < length:  # werkzeug's ClientDisconnected: the same 408
                raise RequestTimeout()
            payload = self._json(route.handler(service, client, known, path_id, data))
        except IdvError as exc:  # a refusal the contract names: answered here, as Flask would
            return self._refusal(start_response, route, exc, started, seen.idv_client)
        except Exception as exc:  # noqa: BLE001 - answered by the app's own handlers below
            return self._flask_error(environ, start_response, exc, started, seen.idv_client)
        return self._answer(
            start_response, route, route.status, payload, (), started, seen.idv_client
        )

    def _answer(
        self,
        start_response: StartResponse,
        route: _Route,
        status: int,
        payload: bytes,
        extra: tuple[tuple[str, str], ...],
        started: float,
        client: Any,
    ) -> Iterable[bytes]:
        """Send ``payload`` with the headers Flask's answer carries, in its order, and count it."""
        start_response(
            f"{status} {HTTP_STATUS_CODES[status].upper()}",  # werkzeug's status line
            [
                ("Content-Type", "application/json"),
                ("Content-Length", str(len(payload))),
                *extra,
                *self.headers,
            ],
        )
        self.app.extensions["idv_record_request"]("POST", route.rule, status, started, client)
        return [payload]

    def _json(self, value: Any) -> bytes:
        """``value`` as ``jsonify`` writes it: the app's JSON provider, compact, a newline."""
        return (self.dumps(value) + "\n").encode()

    def _refusal(
        self,
        start_response: StartResponse,
        route: _Route,
        exc: IdvError,
        started: float,
        client: Any,
    ) -> Iterable[bytes]:
        """A domain error (``IdvError``) answered as the app's error handler answers it
        (``errors.refusal``), without a Flask request context and its hooks."""
        body, headers = errors.refusal(exc)
        payload = self._json(body)
        return self._answer(start_response, route, exc.status, payload, headers, started, client)

    def _raw(self, environ: dict) -> tuple[_Route, str, int] | None:
        """The route, the path id and the body length when the fast path takes this request."""
        if environ.get("REQUEST_METHOD") != "POST":
            return None
        path = environ.get("PATH_INFO", "")
        if path == START:
            route, path_id = self.start, ""
        else:
            match = PROOFS.fullmatch(path)
            if match is None:
                return None
            route, path_id = self.proofs, match.group(1)
        if "HTTP_IDEMPOTENCY_KEY" in environ or "HTTP_TRANSFER_ENCODING" in environ:
            return None
        kind = environ.get("CONTENT_TYPE", "").partition(";")[0].strip().lower()
        if kind != "application/json":
            return None
        length = environ.get("CONTENT_LENGTH", "")
        if not length.isdigit() or int(length) > self.max_body:
            return None
        return route, path_id, int(length)

    def _flask_error(
        self,
        environ: dict,
        start_response: StartResponse,
        exc: Exception,
        started: float,
        client: Any,
    ) -> Iterable[bytes]:
        """Answer ``exc`` as the Flask route would: the app's handlers and hooks, in a request
        context of the same environ (as ``Flask.wsgi_app`` does for an error in a view)."""
        app = self.app
        ctx = app.request_context(environ)
        ctx.push()
        error: BaseException | None = None
        try:
            g.idv_started = started
            if client is not None:
                g.idv_client = client
            try:
                response = app.finalize_request(app.handle_user_exception(exc))
            except Exception as again:  # noqa: BLE001 - Flask.wsgi_app's own fallback
                error = again
                response = app.handle_exception(again)
            return response(environ, start_response)  # type: ignore[no-any-return]
        finally:
            ctx.pop(error)
