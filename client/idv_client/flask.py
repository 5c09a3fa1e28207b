"""``require_step_up``: guard a relying party's Flask route with an idv assertion (RFC 9470).

Install a verifier once, ``init_app(app, verifier)`` (or ``app.extensions["idv_verifier"] = ...``),
then decorate routes::

    @app.post("/payment-password")
    @require_step_up("payment_password_reset", subject=lambda: session["subject_id"])
    def reset_payment_password(): ...

The assertion comes in the ``X-Idv-Assertion`` header, or as an ``idv_assertion`` form or JSON
field. A missing, invalid or already used assertion answers 401 with
``WWW-Authenticate: Bearer error="insufficient_user_authentication", acr_values="aal2"`` and a JSON
body naming the action; the claims of a good one are in ``flask.g.idv_assertion``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, jsonify, request

from idv_client.errors import AssertionInvalid
from idv_client.verifier import AssertionVerifier

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "X-Idv-Assertion"
FIELD = "idv_assertion"


def init_app(app: Flask, verifier: AssertionVerifier) -> None:
    """Make ``verifier`` the one ``require_step_up`` uses in ``app``."""
    app.extensions["idv_verifier"] = verifier


def assertion_from_request() -> str | None:
    """The assertion of the current request: header, then form field, then JSON field."""
    token = request.headers.get(HEADER)
    if token:
        return token.strip()
    if request.form.get(FIELD):
        return request.form[FIELD]
    body = request.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get(FIELD), str):
        return body[FIELD]
    return None


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def step_up_challenge(action: str, acr: str, reason: str, max_age: int | None = None) -> Any:
    """The RFC 9470 §3 answer: 401, ``insufficient_user_authentication``, the ``acr`` wanted."""
    parts = [
        'Bearer error="insufficient_user_authentication"',
        f'error_description="{_quote("a step-up for " + action + " is required")}"',
        f'acr_values="{_quote(acr)}"',
    ]
    if max_age is not None:
        parts.append(f"max_age={int(max_age)}")
    response = jsonify(
        {
            "error": "insufficient_user_authentication",
            "message": f"this request needs a step-up verification for {action}",
            "action": action,
            "acr_values": acr,
            "reason": reason,
        }
    )
    response.status_code = 401
    response.headers["WWW-Authenticate"] = ", ".join(parts)
    response.headers["Cache-Control"] = "no-store"
    return response


def require_step_up(
    action: str,
    subject: str | Callable[..., str | None],
    *,
    acr: str = "aal2",
    consume: bool = True,
    max_age: int | None = 300,
    verifier: AssertionVerifier | None = None,
    token: Callable[[], str | None] = assertion_from_request,
) -> Callable[[F], F]:
    """Let the request through only with a valid (by default unconsumed) assertion for
    ``subject`` and ``action``.

    ``subject``: a callable returning the subject id of the current request (it receives the
    view's keyword arguments, e.g. ``lambda **kw: session["uid"]``), or the name of a view
    argument holding it. ``acr``: what ``acr_values`` asks for (idv's policy gives each action
    one; ``aal2`` for the sensitive actions of the default policy).
    """

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if callable(subject):
                try:
                    subject_id = subject(**kwargs)
                except TypeError:
                    subject_id = subject()
            else:
                subject_id = kwargs.get(subject)
            if not subject_id:
                return step_up_challenge(action, acr, "no_subject", max_age)
            checker = verifier or current_app.extensions.get("idv_verifier")
            if checker is None:
                raise RuntimeError("no AssertionVerifier: call idv_client.flask.init_app first")
            assertion = token()
            if not assertion:
                return step_up_challenge(action, acr, "missing", max_age)
            try:
                claims = checker.verify(
                    assertion, subject=str(subject_id), action=action, consume=consume
                )
            except AssertionInvalid as exc:
                return step_up_challenge(action, acr, exc.reason, max_age)
            g.idv_assertion = claims
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
