"""Getting back in (API.md, Recovery): "Lost your phone?" and "Forgot PIN?" from the login page.

- Lost phone, PIN + a recovery code or the tenant's own check (``recover``): idv revokes the
  phone's TOTP and device keys and suspends SMS in the same transaction; the portal signs the
  person in and, for one hour, the PIN alone unlocks binding a new authenticator.
- Lost phone, nothing but the PIN (``recover_delayed``): a waiting page with ``ready_at`` in local
  time; the phone's methods are suspended at once. The same PIN completes it from ``ready_at``.
  A cancel is a ``cancel_recovery`` step-up: PIN + the (suspended) phone, or a recovery code.
- Forgot PIN (``reset_knowledge``): the phone's factor + a recovery code (or the check), then a
  new PIN typed twice, posted with that assertion.

NIST SP 800-63B-4 (loss, theft, re-binding): nothing the thief holds with the phone recovers the
account. The face check here is ``branch.DemoBranch``, a demo stand-in.
"""

from __future__ import annotations

from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)

from idv_client import NotPending, StepUpRequired, WeakSecret
from idv_client import messages as idv_text

from . import forms
from .flows import FINISHERS, portal, sign_in, sign_out_everywhere, start_flow, submit_proof
from .i18n import locale, t

bp = Blueprint("recovery", __name__)


def _account(template: str) -> Any:
    """The account the form names (the portal's login identifier, the phone), or the form again
    with "no account" (404)."""
    user = portal().users.get(request.form.get("phone", "").replace(" ", ""))
    if not user:
        flash(t("no_account"), "error")
        abort(make_response(render_template(template), 404))
    return user


@bp.route("/lost", methods=["GET", "POST"])
def lost() -> Any:
    """Lost your phone? The account, then recover now (PIN + code or check) or wait (PIN)."""
    if request.method == "GET":
        return render_template("lost.html")
    user = _account("lost.html")
    subject_id = user["subject_id"]
    pending = _pending_recovery(user)
    if pending is not None:
        return pending
    after = url_for("recovery.recovered")
    if request.form.get("way") == "wait":
        return start_flow(subject_id, "recover_delayed", "recover", after)
    return start_flow(subject_id, "recover", "recover", after)


def _pending_recovery(user: dict[str, Any]) -> Any | None:
    """A delayed recovery this account started: its waiting page, or, from ``ready_at``, the PIN
    step that completes it. None when there is none (any more)."""
    vid = user.get("recovery_vid")
    if not vid:
        return None
    v = portal().idv.get_verification(vid)
    if v.status == "waiting":
        session["waiting"] = {"vid": vid, "subject": user["subject_id"]}
        return redirect(url_for("recovery.waiting"))
    if v.status == "pending":
        session["flow"] = {
            "vid": vid,
            "subject": user["subject_id"],
            "action": v.action,
            "purpose": "recover",
            "after": url_for("recovery.recovered"),
        }
        return redirect(url_for("flows.verify"))
    portal().users.update(user["subject_id"], recovery_vid=None)  # cancelled, expired or done
    return None


@bp.get("/recovery/waiting")
def waiting() -> Any:
    """The delayed recovery waits: when it can be completed, what stopped, how to cancel."""
    held = session.get("waiting") or abort(404)
    v = portal().idv.get_verification(held["vid"])
    if v.status != "waiting":
        session.pop("waiting", None)
        if v.status == "pending":  # ready_at has passed: the PIN step that completes it
            user = portal().users.by_subject(held["subject"]) or {}
            return _pending_recovery(user) or redirect(url_for("recovery.lost"))
        flash(idv_text.status_text(v.status, locale()), "warn")
        return redirect(url_for("recovery.lost"))
    ready = idv_text.recovery_ready(v.ready_at, locale(), g.tz)
    return render_template("waiting.html", ready=ready)


@bp.post("/recovery/cancel")
def cancel() -> Any:
    """Cancel the waiting recovery: a ``cancel_recovery`` step-up (PIN + phone, or a code)."""
    held = session.get("waiting") or abort(404)
    return start_flow(
        held["subject"], "cancel_recovery", "cancel", url_for("login"), target=held["vid"]
    )


@bp.get("/recovered")
def recovered() -> Any:
    """What the recovery did, and the way to a new authenticator within the hour."""
    if not g.subject or not session.get("recovered"):
        return redirect(url_for("home"))
    return render_template("recovered.html")


@bp.route("/forgot-pin", methods=["GET", "POST"])
def forgot_pin() -> Any:
    """Forgot PIN? The account, then the phone's factor + a recovery code (or the check)."""
    if request.method == "GET":
        return render_template("forgot.html")
    user = _account("forgot.html")
    return start_flow(
        user["subject_id"], "reset_knowledge", "reset_pin", url_for("recovery.new_pin")
    )


@bp.route("/forgot-pin/new", methods=["GET", "POST"])
def new_pin() -> Any:
    """The new PIN, typed twice, posted with the ``reset_knowledge`` assertion. A weak or
    mistyped PIN spends nothing: the form comes back with the same assertion."""
    reset = session.get("reset_pin") or abort(404)
    if request.method == "GET":
        return render_template("new_pin.html")
    try:
        pin = forms.new_secret(
            request.form.get("pin"),
            request.form.get("pin_confirm"),
            digits=(forms.PIN_MIN, forms.PIN_MAX),
            key="pin",
        )
        portal().idv.enroll_knowledge(reset["subject"], pin, assertion=reset["assertion"])
    except forms.FormError as exc:
        flash(t(exc.key), "error")
        return render_template("new_pin.html"), 400
    except WeakSecret:
        flash(t("weak_pin"), "error")
        return render_template("new_pin.html"), 400
    except StepUpRequired:  # the assertion expired (5 min) or was spent: start again
        session.pop("reset_pin", None)
        flash(idv_text.status_text("expired", locale()), "error")
        return redirect(url_for("recovery.forgot_pin"))
    session.pop("reset_pin", None)
    sign_out_everywhere(reset["subject"])  # a factor changed: other sessions end (ASVS 7.4.3)
    flash(t("pin_reset_done"), "ok")
    return redirect(url_for("login"))


@bp.post("/verify/attest")
def attest() -> Any:
    """DEMO STAND-IN: "verify my face at a branch" passes at once and the portal, playing the
    tenant, signs a ``face`` attestation bound to this subject and verification."""
    flow = session.get("flow") or abort(400)
    branch = portal().branch or abort(404)
    token = branch.attest(flow["subject"], flow["vid"], "face")
    return submit_proof(flow, "attested", lambda: portal().idv.prove_attested(flow["vid"], token))


def _recovered(flow: dict[str, Any], assertion: str) -> Any:
    """``recover`` (or a completed ``recover_delayed``) is satisfied: idv has already revoked the
    phone's factors; the portal, as relying party, checks the assertion and signs the person in
    (no ``login`` option is left until a new authenticator is bound)."""
    current_app.extensions["idv_verifier"].verify(
        assertion, subject=flow["subject"], action=flow["action"], consume=True
    )
    portal().users.update(flow["subject"], recovery_vid=None)
    sign_out_everywhere(flow["subject"])  # the thief's signed-in tab too
    sign_in(flow["subject"])
    session["recovered"] = True
    return redirect(flow["after"])


def _pin_reset_unlocked(flow: dict[str, Any], assertion: str) -> Any:
    """``reset_knowledge`` is satisfied: its assertion waits in the session (as the enrolment
    unlock does) for the new PIN; idv accepts it once, as the knowledge enrolment's assertion."""
    session["reset_pin"] = {"subject": flow["subject"], "assertion": assertion}
    return redirect(flow["after"])


def _cancelled(flow: dict[str, Any], assertion: str) -> Any:
    """``cancel_recovery`` is satisfied: cancel the waiting recovery; the factors come back."""
    try:
        portal().idv.cancel_recovery(flow["target"], assertion)
    except NotPending:  # completed or expired meanwhile
        status = portal().idv.get_verification(flow["target"]).status
        flash(idv_text.status_text(status, locale()), "error")
        return redirect(url_for("home"))
    portal().users.update(flow["subject"], recovery_vid=None)
    session.pop("waiting", None)
    flash(t("recovery_cancelled"), "ok")
    return redirect(flow["after"])


FINISHERS.update(recover=_recovered, reset_pin=_pin_reset_unlocked, cancel=_cancelled)
