"""``require_step_up``: guard a relying party's Flask route with an idv assertion (RFC 9470).

Install a verifier once, ``init_app(app, verifier)`` (or ``app.extensions["idv_verifier"] = ...``),
then decorate routes::

    @app.post("/payment-password")
    @require_step_up("payment_password_reset", subject=lambda: session["subject_id"])
    def reset_payment_password(): ...

The assertion comes in the ``X-Idv-Assertion`` header, or as an ``idv_assertion`` form or JSON
field. A missing, invalid, too weak (``acr``), too old (``max_age``) or already used assertion
answers 401 with ``WWW-Authenticate: Bearer error="insufficient_user_authentication",
acr_values="aal2", max_age=300`` (RFC 9470 §3) and a JSON body naming the action and the
``reason``; the claims of a good one are in ``flask.g.idv_assertion``. A request with no subject
(nobody signed in, or the ``subject`` callable fails) answers 401 ``no_subject``; idv's JWKS out of
reach answers 503 ``service_unavailable`` (the user is not asked to step up again for that).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask, current_app, g, jsonify, request

from idv_client.errors import AssertionInvalid, JwksUnavailable
from idv_client.types import ACR_ORDER, Acr
from idv_client.verifier import AssertionVerifier

F = TypeVar("F", bound=Callable[..., Any])
HEADER = "X-Idv-Assertion"
FIELD = "idv_assertion"
log = logging.getLogger("idv_client.flask")


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
    value = body.get(FIELD) if isinstance(body, dict) else None
    return value if isinstance(value, str) and value else None


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
    body = {
        "error": "insufficient_user_authentication",
        "message": f"this request needs a step-up verification for {action}",
        "action": action,
        "acr_values": acr,
        "reason": reason,
    }
    return _error(401, body, {"WWW-Authenticate": ", ".join(parts)})


def _error(status: int, body: dict[str, Any], headers: dict[str, str]) -> Any:
    response = jsonify(body)
    response.status_code = status
    response.headers.update({**headers, "Cache-Control": "no-store"})
    return response


def no_subject(action: str) -> Any:
    """401 ``no_subject``: nobody is signed in, so no step-up can help; sign in first."""
    return _error(
        401,
        {
            "error": "no_subject",
            "message": "sign in first: this request has no subject to step up",
            "action": action,
        },
        {"WWW-Authenticate": 'Bearer realm="idv"'},
    )


def jwks_unavailable(action: str, retry_after: float) -> Any:
    """503: idv's keys are out of reach; the assertion may be fine, so no new step-up."""
    return _error(
        503,
        {
            "error": "service_unavailable",
            "message": "the step-up service cannot be reached; try again shortly",
            "action": action,
            "reason": "jwks_unavailable",
        },
        {"Retry-After": str(max(1, int(retry_after)))},
    )


def subject_of(subject: str | Callable[..., object], kwargs: dict[str, Any]) -> str | None:
    """The subject id of the current request, or None when there is none or finding it fails
    (``session["uid"]`` with nobody signed in raises ``KeyError``: that is "no subject", not
    a 500)."""
    if not callable(subject):
        value: object = kwargs.get(subject)
    else:
        try:
            inspect.signature(subject).bind(**kwargs)
            takes_view_args = True
        except (TypeError, ValueError):
            takes_view_args = False
        try:
            value = subject(**kwargs) if takes_view_args else subject()
        except Exception as exc:  # noqa: BLE001 - any failure means "no subject", never a 500
            log.info("require_step_up: the subject callable raised %s", type(exc).__name__)
            return None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def require_step_up(
    action: str,
    subject: str | Callable[..., object],
    *,
    acr: Acr = "aal2",
    consume: bool = True,
    max_age: int | None = 300,
    verifier: AssertionVerifier | None = None,
    token: Callable[[], str | None] = assertion_from_request,
) -> Callable[[F], F]:
    """Let the request through only with a valid (by default unconsumed) assertion for
    ``subject`` and ``action`` whose ``acr`` is at least ``acr`` and whose ``auth_time`` is at
    most ``max_age`` seconds old (None: no limit beyond the assertion's own 5 minutes).

    ``subject``: a callable returning the subject id of the current request (it may take the
    view's keyword arguments, e.g. ``lambda **kw: session.get("uid")``), or the name of a view
    argument holding it. ``acr``: ``aal1`` < ``aal2`` < ``aal3`` (idv's policy gives each
    action one: ``aal2`` for the sensitive actions of the default policy, ``aal1`` for an
    option of one factor such as an SMS login).
    """
    if acr not in ACR_ORDER:  # fail closed at start-up, not on the first request
        raise ValueError(f"acr must be one of {', '.join(ACR_ORDER)}, not {acr!r}")

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            subject_id = subject_of(subject, kwargs)
            if subject_id is None:
                return no_subject(action)
            checker = verifier or current_app.extensions.get("idv_verifier")
            if checker is None:
                raise RuntimeError("no AssertionVerifier: call idv_client.flask.init_app first")
            assertion = token()
            if not assertion:
                return step_up_challenge(action, acr, "missing", max_age)
            try:
                claims = checker.verify(
                    assertion,
                    subject=subject_id,
                    action=action,
                    consume=consume,
                    acr=acr,
                    max_age=max_age,
                )
            except AssertionInvalid as exc:
                return step_up_challenge(action, acr, exc.reason, max_age)
            except JwksUnavailable:
                return jwks_unavailable(action, checker.retry_interval)
            g.idv_assertion = claims
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
