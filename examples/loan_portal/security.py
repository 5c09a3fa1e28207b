"""Security settings: the person's factors, the ``enroll_factor`` unlock that allows one change,
setting a PIN, an authenticator app (kept on screen until a code activates it), this browser as
a device key, a passkey, and removal. ASVS 5.0 7.5.1: every change after the first strong factor
needs a step-up; the assertion is spent only by a change idv accepted."""

from __future__ import annotations

import base64
from typing import Any

from flask import (
    Flask,
    flash,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from idv_client import (
    InvalidCode,
    InvalidRequest,
    NotFound,
    RateLimited,
    StepUpRequired,
    WeakSecret,
)
from idv_client import messages as idv_text

from . import forms
from .flows import login_required, portal, start_flow
from .i18n import locale, t


def _strong_factors(subject_id: str) -> list[Any]:
    factors = portal().idv.list_factors(subject_id)
    return [f for f in factors if f.type != "sms" and f.status == "active"]


def change_assertion(subject_id: str) -> str | None:
    """The ``enroll_factor`` assertion for one change (none before the first strong factor).
    It stays in the session until a change succeeds: a weak PIN refused by idv spends nothing."""
    if not _strong_factors(subject_id):
        return None
    token = session.get("enroll_assertion")
    if not token:
        raise StepUpRequired("unlock first")
    return str(token)


def changed(message_key: str = "saved") -> Any:
    """A change went through: the unlock is spent; back to the settings."""
    session.pop("enroll_assertion", None)
    flash(t(message_key), "ok")
    return redirect(url_for("security"))


def register(app: Flask) -> None:
    """The security-settings routes (endpoint names as in the templates: ``security``, ...)."""

    @app.get("/security")
    def security() -> Any:
        subject_id = login_required()
        factors = portal().idv.list_factors(subject_id)
        strong = [f for f in factors if f.type != "sms" and f.status == "active"]
        return render_template(
            "security.html",
            factors=[f for f in factors if f.status == "active"],
            unlocked=not strong or "enroll_assertion" in session,
            types={f.type for f in strong},
            subject=subject_id,
            totp_pending=portal().pending_totp.get(subject_id) is not None,
        )

    @app.post("/security/unlock")
    def security_unlock() -> Any:
        subject_id = login_required()
        return start_flow(subject_id, "enroll_factor", "enroll", url_for("security"))

    @app.post("/security/totp")
    def security_totp() -> Any:
        subject_id = login_required()
        enrolled = portal().idv.enroll_totp(subject_id, assertion=change_assertion(subject_id))
        session.pop("enroll_assertion", None)  # idv spent it on this set-up
        portal().pending_totp.put(subject_id, enrolled)
        return redirect(url_for("security_totp_page"))

    @app.get("/security/totp")
    def security_totp_page() -> Any:
        """The set-up in progress: the same QR code and secret until a code activates it."""
        subject_id = login_required()
        enrolled = portal().pending_totp.get(subject_id)
        if enrolled is None:
            return redirect(url_for("security"))
        qr = base64.b64encode(enrolled.qr_svg.encode()).decode() if enrolled.qr_svg else None
        return render_template("totp.html", enrolled=enrolled, qr=qr)

    @app.post("/security/totp/activate")
    def security_totp_activate() -> Any:
        subject_id = login_required()
        pending = portal().pending_totp
        enrolled = pending.get(subject_id)
        if enrolled is None:
            flash(t("totp_gone"), "error")
            return redirect(url_for("security"))
        retry = redirect(url_for("security_totp_page"))
        try:
            code = forms.one_time_code(request.form.get("code"))
            portal().idv.activate_factor(subject_id, enrolled.factor_id, code)
        except forms.FormError as exc:
            flash(t(exc.key), "error")
            return retry
        except InvalidCode:
            # RFC 6238: the next 30-s step brings a new code; the set-up stays on screen.
            flash(idv_text.failed_proof("totp", None, locale()), "error")
            return retry
        except RateLimited as exc:
            flash(idv_text.rate_limited(exc.retry_after, "proofs", locale()), "error")
            return retry
        except (NotFound, InvalidRequest):  # voided by a newer set-up, or already active
            pending.drop(subject_id)
            flash(t("totp_gone"), "error")
            return redirect(url_for("security"))
        pending.drop(subject_id)
        flash(t("saved"), "ok")
        return redirect(url_for("security"))

    @app.post("/security/codes")
    def security_codes() -> Any:
        """A new set of recovery codes (NIST SP 800-63B-4 look-up secrets), shown on this answer
        only: never kept by the portal, never in the session cookie, never redirected to."""
        subject_id = login_required()
        enrolled = portal().idv.enroll_recovery_codes(
            subject_id, assertion=change_assertion(subject_id)
        )
        session.pop("enroll_assertion", None)  # idv spent it on this set
        response = make_response(render_template("codes.html", codes=enrolled.codes or []))
        response.headers["Cache-Control"] = "no-store"  # not from the back button or a cache
        return response

    @app.post("/security/pin")
    def security_pin() -> Any:
        subject_id = login_required()
        try:
            pin = forms.new_secret(
                request.form.get("pin"),
                request.form.get("pin_confirm"),
                digits=(forms.PIN_MIN, forms.PIN_MAX),
                key="pin",
            )
            portal().idv.enroll_knowledge(subject_id, pin, assertion=change_assertion(subject_id))
        except forms.FormError as exc:
            flash(t(exc.key), "error")
            return redirect(url_for("security"))
        except WeakSecret:
            flash(t("weak_pin"), "error")
            return redirect(url_for("security"))
        return changed()

    @app.post("/security/device")
    def security_device() -> Any:
        """JSON from the page: the SPKI PEM of a non-extractable WebCrypto P-256 key."""
        subject_id = login_required()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("public_key"), str):
            return jsonify({"error": "invalid_request", "message": t("failed")}), 400
        enrolled = portal().idv.enroll_device(
            subject_id,
            body["public_key"],
            "ES256",
            label=str(body.get("label") or "browser")[:100],
            assertion=change_assertion(subject_id),
        )
        changed("browser_bound")
        return jsonify({"factor_id": enrolled.factor_id})

    @app.post("/security/passkey")
    def security_passkey() -> Any:
        """JSON for the page: a pending passkey's creation options (API.md, Passkeys)."""
        subject_id = login_required()
        enrolled = portal().idv.enroll_passkey(subject_id, assertion=change_assertion(subject_id))
        session.pop("enroll_assertion", None)  # idv spent it on this set-up
        return jsonify({"factor_id": enrolled.factor_id, "options": enrolled.options})

    @app.post("/security/passkey/finish")
    def security_passkey_finish() -> Any:
        """JSON from the page: the browser's RegistrationResponseJSON for the pending passkey."""
        subject_id = login_required()
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("credential"), dict):
            return jsonify({"error": "invalid_request", "message": t("failed")}), 400
        try:
            portal().idv.finish_passkey(subject_id, str(body.get("factor_id")), body["credential"])
        except (InvalidCode, InvalidRequest, NotFound):
            return jsonify({"error": "invalid_code", "message": t("failed")}), 422
        return jsonify({"redirect": changed("passkey_added").location})

    @app.post("/security/remove/<factor_id>")
    def security_remove(factor_id: str) -> Any:
        subject_id = login_required()
        portal().idv.remove_factor(subject_id, factor_id, assertion=change_assertion(subject_id))
        return changed()
