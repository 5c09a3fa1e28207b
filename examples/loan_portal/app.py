"""Lendly, a demo loan portal: a relying party that talks to idv only through ``idv_client``.

Pages: sign up and log in (SMS, TOTP or this browser as a device key), security settings (PIN,
authenticator app with its QR code, browser binding, removal behind a step-up), and two sensitive
actions, "reset payment password" and "apply for a loan", guarded by
``idv_client.flask.require_step_up``. When idv holds or denies an action the page says why
(``idv_client.messages``), and when it opens again in the person's local time. The step-up flows
are in ``flows.py``, security settings in ``security.py``, form checks in ``forms.py``.
"""

from __future__ import annotations

import json
import logging
import secrets
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import (
    Flask,
    abort,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from idv_client import (
    AssertionInvalid,
    AssertionVerifier,
    IdvClient,
    IdvError,
    InvalidRequest,
    RateLimited,
    StepUpRequired,
)
from idv_client import messages as idv_text
from idv_client.flask import init_app, require_step_up

from . import forms
from .accounts import PendingTotp, Portal, Users
from .branch import DemoBranch
from .flows import bp as flows_bp
from .flows import login_required, portal, start_flow
from .i18n import MESSAGES, locale, t
from .recovery import bp as recovery_bp
from .security import register as register_security

log = logging.getLogger("lendly")
ACTIONS = {"payment_password_reset": "pay_reset", "loan_application": "loan"}


def create_app(
    idv_url: str,
    api_key: str,
    *,
    carrier_key: str | None = None,
    sms_file: str | Path | None = None,
    data_file: str | Path | None = None,
    secret_key: str | None = None,
    branch: DemoBranch | None = None,
) -> Flask:
    """The portal, talking to idv at ``idv_url`` with a ``verify`` key (``carrier_key``, a key
    with the ``carrier`` scope, enables the "simulate SIM swap" developer button; ``sms_file`` is
    idv's ``IDV_SMS_SENDER=file:`` sink, shown as the developer inbox; ``branch``, the demo
    stand-in for the tenant's own face check, offers "verify my face at a branch")."""
    app = Flask(__name__)
    app.secret_key = secret_key or secrets.token_hex(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    idv = IdvClient(idv_url, api_key)
    app.extensions["lendly"] = Portal(
        idv=idv,
        carrier=IdvClient(idv_url, carrier_key) if carrier_key else None,
        users=Users(Path(data_file) if data_file else None),
        pending_totp=PendingTotp(),
        sms_path=Path(sms_file) if sms_file else None,
        branch=branch,
    )
    init_app(app, AssertionVerifier(idv_url, idv.whoami().client_id))
    app.register_blueprint(flows_bp)
    app.register_blueprint(recovery_bp)
    _register_setup(app)
    _register_accounts(app)
    register_security(app)
    _register_actions(app)
    return app


# -- language, time zone, errors ----------------------------------------------------------------
def _register_setup(app: Flask) -> None:
    @app.before_request
    def _request_setup() -> None:
        if request.args.get("lang") in MESSAGES:
            session["lang"] = request.args["lang"]
        g.lang = session.get("lang") or request.accept_languages.best_match(["en", "zh"]) or "en"
        g.tz = forms.time_zone(request.cookies.get("tz"))  # set by portal.js from the browser
        g.subject = session.get("subject")
        g.user = portal().users.by_subject(g.subject) if g.subject else None
        if g.user and session.get("since", 0) < g.user.get("sessions_after", 0):
            session.pop("subject", None)  # signed out everywhere by a recovery (recovery.py)
            g.subject = g.user = None

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        return {
            "t": t,
            "lang": g.lang,
            "user": g.user,
            "inbox": _inbox(),
            "dev": portal().carrier,
            "limits": {"low": f"{forms.LOAN_MIN:,}", "high": f"{forms.LOAN_MAX:,}"},
        }

    @app.errorhandler(RateLimited)
    def _rate_limited(exc: RateLimited) -> Any:
        flash(idv_text.rate_limited(exc.retry_after, "other", locale()), "error")
        return redirect(url_for("home"))

    @app.errorhandler(StepUpRequired)
    def _step_up(exc: StepUpRequired) -> Any:
        session.pop("enroll_assertion", None)  # spent or expired: the next change unlocks again
        if request.is_json:
            return jsonify({"error": "step_up_required", "message": t("step_up_needed")}), 403
        flash(t("step_up_needed"), "error")
        return redirect(url_for("security"))

    @app.errorhandler(AssertionInvalid)
    def _assertion(exc: AssertionInvalid) -> Any:
        flash(idv_text.status_text("expired", locale()), "error")
        return redirect(url_for("home"))

    @app.errorhandler(IdvError)
    def _idv(exc: IdvError) -> Any:
        # Never the raw code or idv's English message on the page: log it, say what to do.
        log.warning("idv answered %s (%s): %s", exc.code, exc.status, exc.message)
        down = exc.status is None or exc.status >= 500  # unreachable, 5xx, JWKS unavailable
        message = t("unavailable") if down else t("failed")
        if request.is_json:
            return jsonify({"error": "failed", "message": message}), 503 if down else 400
        flash(message, "error")
        return redirect(url_for("home"))


def _inbox() -> list[dict[str, Any]]:
    """The last five messages of idv's SMS file sink (the developer inbox), newest first."""
    path = portal().sms_path
    if not path or not path.exists():
        return []
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return list(reversed(lines[-5:]))


# -- accounts -----------------------------------------------------------------------------------
def _register_accounts(app: Flask) -> None:
    @app.get("/")
    def home() -> Any:
        return render_template("home.html")

    @app.route("/signup", methods=["GET", "POST"])
    def signup() -> Any:
        if request.method == "POST":
            phone = request.form.get("phone", "").replace(" ", "")
            users = portal().users
            if users.get(phone):
                flash(t("exists"), "error")
                return redirect(url_for("login"))
            subject_id = "u_" + secrets.token_hex(8)
            try:
                subject = portal().idv.put_subject(subject_id, phone)
            except InvalidRequest:
                flash(t("bad_phone"), "error")
                return render_template("phone.html", mode="signup"), 400
            users.save(phone, {"subject_id": subject_id, "phone": phone, "masked": subject.phone})
            # The phone becomes an account only once its owner proves it with an SMS code.
            return start_flow(subject_id, "login", "signup", url_for("security"))
        return render_template("phone.html", mode="signup")

    @app.route("/login", methods=["GET", "POST"])
    def login() -> Any:
        if request.method == "POST":
            user = portal().users.get(request.form.get("phone", "").replace(" ", ""))
            if not user:
                flash(t("no_account"), "error")
                return render_template("phone.html", mode="login"), 404
            return start_flow(user["subject_id"], "login", "login", url_for("home"))
        return render_template("phone.html", mode="login")

    @app.post("/logout")
    def logout() -> Any:
        lang = session.get("lang")
        session.clear()
        if lang:
            session["lang"] = lang
        return redirect(url_for("home"))

    @app.post("/dev/sim-swap")
    def dev_sim_swap() -> Any:
        carrier = portal().carrier
        if carrier is None:
            abort(404)
        phone = (g.user or {}).get("phone") or request.form.get("phone", "")
        carrier.report_carrier_event(phone, "sim_swap", datetime.now(UTC) - timedelta(seconds=5))
        flash(t("dev_sim_done", phone=phone), "ok")
        return redirect(request.referrer or url_for("home"))


# -- the sensitive actions ----------------------------------------------------------------------
def _action_page(action: str, error: str | None = None, assertion: str | None = None) -> Any:
    subject_id = login_required()
    token = assertion or session.pop("assertion:" + action, None)
    return render_template(
        "action.html",
        action=action,
        key=ACTIONS[action],
        assertion=token,
        subject=subject_id,
        error=error,
        values=request.form if error else {},
    ), (400 if error else 200)


def _checked_form(action: str, check: Any) -> Any:
    """Check the form before ``require_step_up`` spends the assertion: a mistyped amount or
    password shows the form again with the same, still unspent, assertion."""
    try:
        check(request.form)
    except forms.FormError as exc:
        return _action_page(action, t(exc.key, **exc.values), request.form.get("idv_assertion"))
    return None


def _pay_pw(form: Any) -> str:
    digits = (forms.PAY_PW_DIGITS, forms.PAY_PW_DIGITS)
    return forms.new_secret(
        form.get("payment_password"),
        form.get("payment_password_confirm"),
        digits=digits,
        key="pay_pw",
    )


def _register_actions(app: Flask) -> None:
    @app.get("/payment-password")
    def pay_reset() -> Any:
        return _action_page("payment_password_reset")

    @app.get("/loan")
    def loan() -> Any:
        return _action_page("loan_application")

    @app.post("/step-up/<action>")
    def step_up_for(action: str) -> Any:
        if action not in ACTIONS:
            abort(404)
        subject_id = login_required()
        return start_flow(subject_id, action, "action", url_for(ACTIONS[action]))

    # RFC 9470 via idv_client: the assertion comes in the form's idv_assertion field.
    @require_step_up("payment_password_reset", subject=lambda **_: session.get("subject"))
    def pay_reset_done() -> Any:
        return render_template("done.html", message=t("pay_reset_done"))

    @require_step_up("loan_application", subject=lambda **_: session.get("subject"))
    def loan_done() -> Any:
        amount = forms.loan_amount(request.form.get("amount"))
        return render_template("done.html", message=t("loan_done", amount=f"{amount:,}"))

    @app.post("/payment-password")
    def pay_reset_submit() -> Any:
        login_required()
        return _checked_form("payment_password_reset", _pay_pw) or pay_reset_done()

    @app.post("/loan")
    def loan_submit() -> Any:
        login_required()
        form_error = _checked_form("loan_application", lambda f: forms.loan_amount(f.get("amount")))
        return form_error or loan_done()
