"""Lendly, a demo loan portal: a relying party that talks to idv only through ``idv_client``.

Pages: sign up and log in (SMS, TOTP or this browser as a device key), security settings (PIN,
authenticator app with its QR code, browser binding, removal behind a step-up), and two sensitive
actions, "reset payment password" and "apply for a loan", guarded by
``idv_client.flask.require_step_up``. When idv holds or denies an action the page says why.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
from dataclasses import dataclass, field
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
    InvalidCode,
    InvalidRequest,
    NotPending,
    RateLimited,
    StepUpRequired,
    Verification,
    WeakSecret,
)
from idv_client.flask import init_app, require_step_up

from .i18n import MESSAGES, translate

ACTIONS = {"payment_password_reset": "pay_reset", "loan_application": "loan"}


@dataclass
class Users:
    """The portal's own accounts: phone → subject id (idv holds the factors)."""

    path: Path | None = None
    by_phone: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path and self.path.exists():
            self.by_phone = json.loads(self.path.read_text())

    def get(self, phone: str) -> dict[str, Any] | None:
        return self.by_phone.get(phone)

    def by_subject(self, subject_id: str) -> dict[str, Any] | None:
        return next((u for u in self.by_phone.values() if u["subject_id"] == subject_id), None)

    def save(self, phone: str, record: dict[str, Any]) -> None:
        with self.lock:
            self.by_phone[phone] = record
            if self.path:
                self.path.write_text(json.dumps(self.by_phone))


def create_app(
    idv_url: str,
    api_key: str,
    *,
    carrier_key: str | None = None,
    sms_file: str | Path | None = None,
    data_file: str | Path | None = None,
    secret_key: str | None = None,
) -> Flask:
    """The portal, talking to idv at ``idv_url`` with a ``verify`` key (``carrier_key``, a key
    with the ``carrier`` scope, enables the "simulate SIM swap" developer button; ``sms_file`` is
    idv's ``IDV_SMS_SENDER=file:`` sink, shown as the developer inbox)."""
    app = Flask(__name__)
    app.secret_key = secret_key or secrets.token_hex(32)
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    idv = IdvClient(idv_url, api_key)
    carrier = IdvClient(idv_url, carrier_key) if carrier_key else None
    init_app(app, AssertionVerifier(idv_url, idv.whoami().client_id))
    users = Users(Path(data_file) if data_file else None)
    sms_path = Path(sms_file) if sms_file else None

    # -- language, helpers ----------------------------------------------------------------------
    @app.before_request
    def _language() -> None:
        if request.args.get("lang") in MESSAGES:
            session["lang"] = request.args["lang"]
        g.lang = session.get("lang") or request.accept_languages.best_match(["en", "zh"]) or "en"
        g.subject = session.get("subject")
        g.user = users.by_subject(g.subject) if g.subject else None

    def t(key: str, **values: object) -> str:
        return translate(g.lang, key, **values)

    def fmt_date(moment: datetime) -> str:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")

    @app.context_processor
    def _helpers() -> dict[str, Any]:
        return {"t": t, "lang": g.lang, "user": g.user, "inbox": inbox(), "dev": carrier}

    def inbox() -> list[dict[str, Any]]:
        if not sms_path or not sms_path.exists():
            return []
        lines = [json.loads(x) for x in sms_path.read_text().splitlines() if x.strip()]
        return list(reversed(lines[-5:]))

    def login_required() -> str:
        if not g.subject or not g.user:
            abort(redirect(url_for("login")))
        return g.subject

    @app.errorhandler(RateLimited)
    def _busy(exc: RateLimited) -> Any:
        flash(t("try_later", seconds=exc.retry_after), "error")
        return redirect(request.referrer or url_for("home"))

    # -- verification flows ---------------------------------------------------------------------
    def start_flow(subject_id: str, action: str, purpose: str, after: str) -> Any:
        """Start a step-up; a held or denied one shows its reasons, else the verify page."""
        context = {"ip": request.remote_addr, "user_agent": request.user_agent.string[:200]}
        v = idv.start_verification(subject_id, action, context=context)
        if v.status == "denied":
            return held_page(subject_id, v)
        session["flow"] = {
            "vid": v.verification_id,
            "subject": subject_id,
            "action": action,
            "purpose": purpose,
            "after": after,
        }
        return redirect(url_for("verify"))

    def parse_time(value: datetime | str | None) -> datetime | None:
        """An RFC 3339 time from idv (``held_until``); None if absent or unreadable."""
        if isinstance(value, datetime):  # idv_client >= 0.2 parses times itself
            return value
        try:
            moment = datetime.fromisoformat(value) if value else None
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment

    def held_page(subject_id: str, v: Verification) -> Any:
        """Why idv held or denied ``v``, in words, and when it opens again: idv's ``held_until``
        is the end of the latest hold (SIM change, cooling-off, lockout), so one date for all."""
        user = users.by_subject(subject_id) or {}
        lines = []
        for code in v.reasons:
            if code == "recent_sim_change" and user.get("sim_changed_at"):
                # The portal knows when the SIM changes it was told about happened (the
                # developer button below); idv says when the hold ends.
                at = datetime.fromisoformat(user["sim_changed_at"])
                days = max(0, (datetime.now(UTC) - at).days)
                since = (
                    (f" {days} 天前" if days else "今天")
                    if g.lang == "zh"
                    else (f" {days} days ago" if days else " today")
                )
                lines.append(t("r_recent_sim_change", since=since))
            elif code == "recent_sim_change":
                lines.append(t("r_recent_sim_change_nodate"))
            elif "r_" + code in MESSAGES["en"]:
                lines.append(t("r_" + code))
            else:
                lines.append(t("r_other", code=code))
        until = parse_time(v.held_until)
        return render_template(
            "held.html",
            action=t("a_" + v.action),
            reasons=lines,
            codes=v.reasons,
            until=t("held_until", until=fmt_date(until)) if until else None,
        ), 403

    def finish(flow: dict[str, Any], assertion: str) -> Any:
        session.pop("flow", None)
        if flow["purpose"] in ("login", "signup"):
            # The portal is its own relying party: check the login assertion before trusting it.
            app.extensions["idv_verifier"].verify(
                assertion, subject=flow["subject"], action="login", consume=True
            )
            session["subject"] = flow["subject"]
        elif flow["purpose"] == "enroll":
            session["enroll_assertion"] = assertion
            flash(t("unlocked"), "ok")
        else:
            session["assertion:" + flow["action"]] = assertion
        return redirect(flow["after"])

    @app.get("/verify")
    def verify() -> Any:
        flow = session.get("flow")
        if not flow:
            return redirect(url_for("home"))
        v = idv.get_verification(flow["vid"])
        if v.status != "pending":
            flash(t("locked" if v.status == "locked" else "expired"), "error")
            session.pop("flow", None)
            return redirect(url_for("home"))
        notes = [t("r_recent_sim_change_login")] if "recent_sim_change" in v.reasons else []
        user = users.by_subject(flow["subject"]) or {}
        return render_template(
            "verify.html",
            v=v,
            action=t("a_" + flow["action"]),
            subject=flow["subject"],
            masked=user.get("masked", ""),
            notes=notes,
            sent_to=session.get("sent_to"),
        )

    @app.post("/verify/challenge")
    def verify_challenge() -> Any:
        flow = session.get("flow") or abort(400)
        factor = (request.get_json(silent=True) or request.form).get("factor", "")
        try:
            ch = idv.send_challenge(flow["vid"], factor)
        except NotPending:
            return redirect(url_for("home"))
        if request.is_json:
            return jsonify({"challenge": ch.challenge, "expires_at": ch.expires_at})
        session["sent_to"] = ch.sent_to
        flash(t("sms_sent", to=ch.sent_to), "ok")
        return redirect(url_for("verify"))

    @app.post("/verify/prove")
    def verify_prove() -> Any:
        flow = session.get("flow") or abort(400)
        body = request.get_json(silent=True) or request.form
        factor = body.get("factor", "")
        fields = {k: body[k] for k in ("code", "secret", "factor_id", "signature") if body.get(k)}
        try:
            proof = idv.prove(flow["vid"], factor, **fields)
        except (NotPending, InvalidRequest):
            proof = None
        if proof is not None and proof.status == "satisfied" and proof.assertion:
            session.pop("sent_to", None)
            target = finish(flow, proof.assertion)
            return jsonify({"redirect": target.location}) if request.is_json else target
        if proof is None or not proof.accepted:
            flash(t("not_accepted"), "error")
        return (
            jsonify({"redirect": url_for("verify")})
            if request.is_json
            else redirect(url_for("verify"))
        )

    # -- accounts -------------------------------------------------------------------------------
    @app.get("/")
    def home() -> Any:
        return render_template("home.html")

    @app.route("/signup", methods=["GET", "POST"])
    def signup() -> Any:
        if request.method == "POST":
            phone = request.form.get("phone", "").replace(" ", "")
            if users.get(phone):
                flash(t("exists"), "error")
                return redirect(url_for("login"))
            subject_id = "u_" + secrets.token_hex(8)
            try:
                subject = idv.put_subject(subject_id, phone)
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
            user = users.get(request.form.get("phone", "").replace(" ", ""))
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

    # -- security settings ----------------------------------------------------------------------
    def strong_factors(subject_id: str) -> list[Any]:
        return [f for f in idv.list_factors(subject_id) if f.type != "sms" and f.status == "active"]

    def change_assertion(subject_id: str) -> str | None:
        """The one-use ``enroll_factor`` assertion (none needed before the first strong factor)."""
        if not strong_factors(subject_id):
            return None
        token = session.pop("enroll_assertion", None)
        if not token:
            raise StepUpRequired("unlock first")
        return token

    @app.get("/security")
    def security() -> Any:
        subject_id = login_required()
        factors = idv.list_factors(subject_id)
        strong = [f for f in factors if f.type != "sms" and f.status == "active"]
        types = {f.type for f in strong}
        return render_template(
            "security.html",
            factors=[f for f in factors if f.status == "active"],
            unlocked=not strong or "enroll_assertion" in session,
            types=types,
            subject=subject_id,
        )

    @app.post("/security/unlock")
    def security_unlock() -> Any:
        subject_id = login_required()
        return start_flow(subject_id, "enroll_factor", "enroll", url_for("security"))

    @app.errorhandler(StepUpRequired)
    def _step_up(exc: StepUpRequired) -> Any:
        if request.is_json:
            return jsonify({"error": "step_up_required", "message": t("step_up_needed")}), 403
        flash(t("step_up_needed"), "error")
        return redirect(url_for("security"))

    @app.post("/security/totp")
    def security_totp() -> Any:
        subject_id = login_required()
        enrolled = idv.enroll_totp(subject_id, assertion=change_assertion(subject_id))
        qr = base64.b64encode(enrolled.qr_svg.encode()).decode() if enrolled.qr_svg else None
        return render_template("totp.html", enrolled=enrolled, qr=qr)

    @app.post("/security/totp/activate")
    def security_totp_activate() -> Any:
        subject_id = login_required()
        try:
            idv.activate_factor(subject_id, request.form["factor_id"], request.form["code"].strip())
        except InvalidCode:
            flash(t("bad_code"), "error")
            return redirect(url_for("security"))
        flash(t("saved"), "ok")
        return redirect(url_for("security"))

    @app.post("/security/pin")
    def security_pin() -> Any:
        subject_id = login_required()
        try:
            idv.enroll_knowledge(
                subject_id, request.form["pin"], assertion=change_assertion(subject_id)
            )
        except WeakSecret:
            flash(t("weak_pin"), "error")
            return redirect(url_for("security"))
        flash(t("saved"), "ok")
        return redirect(url_for("security"))

    @app.post("/security/device")
    def security_device() -> Any:
        """JSON from the page: the SPKI PEM of a non-extractable WebCrypto P-256 key."""
        subject_id = login_required()
        body = request.get_json(force=True)
        enrolled = idv.enroll_device(
            subject_id,
            body["public_key"],
            "ES256",
            label=(body.get("label") or "browser")[:100],
            assertion=change_assertion(subject_id),
        )
        flash(t("browser_bound"), "ok")
        return jsonify({"factor_id": enrolled.factor_id})

    @app.post("/security/remove/<factor_id>")
    def security_remove(factor_id: str) -> Any:
        subject_id = login_required()
        idv.remove_factor(subject_id, factor_id, assertion=change_assertion(subject_id))
        flash(t("saved"), "ok")
        return redirect(url_for("security"))

    # -- the sensitive actions ------------------------------------------------------------------
    def action_page(action: str) -> Any:
        subject_id = login_required()
        token = session.pop("assertion:" + action, None)
        return render_template(
            "action.html", action=action, key=ACTIONS[action], assertion=token, subject=subject_id
        )

    def step_up(action: str) -> Any:
        subject_id = login_required()
        return start_flow(subject_id, action, "action", url_for(ACTIONS[action]))

    @app.get("/payment-password")
    def pay_reset() -> Any:
        return action_page("payment_password_reset")

    @app.get("/loan")
    def loan() -> Any:
        return action_page("loan_application")

    @app.post("/step-up/<action>")
    def step_up_for(action: str) -> Any:
        if action not in ACTIONS:
            abort(404)
        return step_up(action)

    # RFC 9470 via idv_client: the assertion comes in the form's idv_assertion field.
    @app.post("/payment-password")
    @require_step_up("payment_password_reset", subject=lambda **_: session.get("subject"))
    def pay_reset_submit() -> Any:
        return render_template("done.html", message=t("pay_reset_done"))

    @app.post("/loan")
    @require_step_up("loan_application", subject=lambda **_: session.get("subject"))
    def loan_submit() -> Any:
        amount = request.form.get("amount", "0")
        return render_template("done.html", message=t("loan_done", amount=amount))

    # -- developer panel ------------------------------------------------------------------------
    @app.post("/dev/sim-swap")
    def dev_sim_swap() -> Any:
        if carrier is None:
            abort(404)
        phone = (g.user or {}).get("phone") or request.form.get("phone", "")
        user = users.get(phone)
        at = datetime.now(UTC) - timedelta(seconds=5)
        carrier.report_carrier_event(phone, "sim_swap", at)
        if user:
            users.save(phone, {**user, "sim_changed_at": at.isoformat()})
        flash(t("dev_sim_done", phone=phone), "ok")
        return redirect(request.referrer or url_for("home"))

    @app.errorhandler(AssertionInvalid)
    def _assertion(exc: AssertionInvalid) -> Any:
        flash(t("expired"), "error")
        return redirect(url_for("home"))

    @app.errorhandler(IdvError)
    def _idv(exc: IdvError) -> Any:
        flash(f"{exc.code}: {exc.message}", "error")
        return redirect(url_for("home"))

    return app
