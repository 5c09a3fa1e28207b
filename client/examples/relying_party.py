"""A small relying party: a Flask app that guards "reset payment password" with idv.

The flow a wallet or loan app follows (idv_client's README, sections 2-4):

1. ``POST /login``: the app's own sign-in (here: any user id; yours checks a password).
2. ``POST /payment-password/step-up``: idv starts a ``payment_password_reset`` verification; the
   answer lists the factor combinations the person can use, or why the action is held.
3. ``POST /payment-password/proof``: each factor the person gives (PIN, TOTP code, ...); the
   answer says whether it counted and how many tries remain; the last one yields an assertion.
4. ``POST /payment-password``: the reset itself, guarded by ``require_step_up``: it runs only
   with a fresh (``max_age``), two-factor (``acr`` ``aal2``), unused assertion for this person.

Run: ``IDV_URL=... IDV_API_KEY=... flask --app client/examples/relying_party.py run``.
``mypy --strict`` checks this file against the typed SDK.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from typing import Any

from flask import Flask, g, jsonify, request, session
from flask.typing import ResponseReturnValue

from idv_client import (
    AssertionVerifier,
    IdvClient,
    IdvError,
    NotPending,
    ProofResult,
    RateLimited,
    Verification,
)
from idv_client.flask import init_app, require_step_up

ACTION = "payment_password_reset"


def create_app(idv: IdvClient | None = None, verifier: AssertionVerifier | None = None) -> Flask:
    """The relying party, talking to idv through ``idv`` (default: ``IdvClient.from_env()``)."""
    app = Flask(__name__)
    app.secret_key = os.environ.get("RP_SECRET_KEY") or secrets.token_hex(32)
    client = idv or IdvClient.from_env()
    init_app(app, verifier or AssertionVerifier(client.base_url, client.whoami().client_id))
    passwords: dict[str, bytes] = {}  # stands in for the app's own database (salted hashes)

    def signed_in() -> str:
        """The signed-in user; ``KeyError`` when nobody is (the guard answers 401 for it)."""
        return str(session["user_id"])

    @app.errorhandler(RateLimited)
    def rate_limited(exc: RateLimited) -> ResponseReturnValue:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        return jsonify({"error": "busy", "retry_after": exc.retry_after}), 429, headers

    @app.errorhandler(IdvError)
    def idv_error(exc: IdvError) -> ResponseReturnValue:
        return jsonify({"error": exc.code, "message": exc.message}), 502

    @app.post("/login")
    def login() -> ResponseReturnValue:
        session["user_id"] = str(request.form["user_id"])
        return {"ok": True}

    @app.post("/payment-password/step-up")
    def step_up() -> ResponseReturnValue:
        v: Verification = client.start_verification(
            signed_in(),
            ACTION,
            context={"ip": request.remote_addr, "user_agent": request.user_agent.string[:200]},
        )
        if v.status == "denied":
            until = v.held_until.isoformat() if v.held_until else None
            return {"status": v.status, "reasons": list(v.reasons), "held_until": until}, 403
        session["verification_id"] = v.verification_id
        return {"status": v.status, "options": v.options}

    @app.post("/payment-password/proof")
    def proof() -> ResponseReturnValue:
        vid = str(session.get("verification_id", ""))
        form = request.form
        try:
            if form.get("pin"):
                result: ProofResult = client.prove_pin(vid, form["pin"])
            elif form.get("totp"):
                result = client.prove_totp(vid, form["totp"])
            else:
                return {"error": "give pin or totp"}, 400
        except NotPending:
            return {"error": "start again"}, 409
        body: dict[str, Any] = {
            "accepted": result.accepted,
            "status": result.status,
            "attempts_left": result.attempts_left,  # None from an idv that does not say
        }
        if result.assertion:
            body["assertion"] = result.assertion  # goes back in X-Idv-Assertion
        return body

    @app.post("/payment-password")
    @require_step_up(ACTION, subject=lambda **_: session["user_id"], acr="aal2", max_age=300)
    def reset_payment_password() -> ResponseReturnValue:
        claims: dict[str, Any] = g.idv_assertion
        new = request.form.get("new_password", "")
        if len(new) < 6:
            return {"error": "the payment password needs at least 6 characters"}, 400
        salt = os.urandom(16)
        passwords[str(claims["sub"])] = salt + hashlib.scrypt(
            new.encode(), salt=salt, n=2**14, r=8, p=1
        )
        return {"ok": True, "amr": claims["amr"]}

    return app


if __name__ == "__main__":
    create_app().run(port=int(os.environ.get("PORT", "5000")))
