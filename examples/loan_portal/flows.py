"""Step-up flows: start a verification, show why idv held it or what it offers, send challenges,
submit proofs, and hand the assertion to the page that asked for it.

Every sentence about idv's answer (reasons, ``held_until``, a failed proof with the tries left, a
rate limit) comes from ``idv_client.messages``, in the page's language and the person's time
zone (``g.tz``). OWASP ASVS 5.0 6.3.8: a failed proof names the factor the person just used and
nothing else.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
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
    InvalidRequest,
    NotPending,
    ProofResult,
    RateLimited,
    Verification,
)
from idv_client import messages as idv_text

from .accounts import Portal
from .forms import FormError, one_time_code
from .i18n import locale, t

bp = Blueprint("flows", __name__)

# Reasons that hold an action whatever factors the subject has (service/domain/policy.py
# ``_holds``, and a recovery under way); without one, a denial means a usable factor is missing.
HOLDS = frozenset(
    {
        "subject_locked",
        "recent_sim_change",
        "sim_lost",
        "cooling_off",
        "signal_unavailable",
        "recovery_pending",
    }
)


# Purposes whose ending another module owns (recovery.py: ``recover``, ``reset_pin``,
# ``cancel``): purpose -> f(flow, assertion) -> response.
FINISHERS: dict[str, Callable[[dict[str, Any], str], Any]] = {}


def portal() -> Portal:
    """The portal's state (``create_app`` puts it in ``app.extensions``)."""
    return current_app.extensions["lendly"]  # type: ignore[no-any-return]


def sign_in(subject_id: str) -> None:
    """Sign the browser in as ``subject_id``, noting when (see ``sign_out_everywhere``)."""
    session["subject"] = subject_id
    session["since"] = time.time()


def sign_out_everywhere(subject_id: str) -> None:
    """End every portal session of the account signed in before now: a recovery means a phone
    is in someone else's hand, and it may still hold a signed-in tab (OWASP ASVS 5.0 7.4.3:
    end other sessions after an authentication factor changes)."""
    portal().users.update(subject_id, sessions_after=time.time())


def login_required() -> str:
    """The signed-in subject id, or a redirect to the login page."""
    if not g.subject or not g.user:
        abort(redirect(url_for("login")))
    return str(g.subject)


def start_flow(subject_id: str, action: str, purpose: str, after: str, **extra: str) -> Any:
    """Start a step-up for ``action``; a held or denied one explains itself, else the verify page.

    ``purpose``: ``signup``/``login`` (the assertion logs in), ``enroll`` (unlocks one change
    in security settings) or ``action`` (a sensitive action; ``after`` is its page), or one of
    ``FINISHERS``; ``extra`` is kept in the flow for its finisher.
    """
    context = {"ip": request.remote_addr, "user_agent": request.user_agent.string[:200]}
    try:
        v = portal().idv.start_verification(subject_id, action, context=context)
    except RateLimited as exc:
        # Too many starts from this address or tenant (a locked subject is a denial instead).
        flash(idv_text.rate_limited(exc.retry_after, "other", locale()), "error")
        return redirect(request.referrer or url_for("home"))
    if v.status == "denied":
        if (
            purpose == "action"
            and "no_eligible_factors" in v.reasons
            and not HOLDS & set(v.reasons)
        ):
            # Nothing holds the action: the person lacks a factor it needs, and can add one.
            flash(t("no_factor_for", action=t("a_" + action)), "warn")
            return redirect(url_for("security"))
        if (portal().users.by_subject(subject_id) or {}).get("recovery_vid"):
            # A delayed recovery of this account waits (recovery.py): idv names no reason for
            # the phone's suspended factors, so "add a factor" would mislead; say what it is.
            return held_page(v, ["recovery_pending"])
        return held_page(v)
    session["flow"] = {
        "vid": v.verification_id,
        "subject": subject_id,
        "action": action,
        "purpose": purpose,
        "after": after,
        **extra,
    }
    return redirect(url_for("flows.verify"))


def held_page(v: Verification, reasons: list[str] | None = None) -> Any:
    """Why idv held or denied ``v`` (or ``reasons`` the portal knows better) and when it opens
    again, in the person's words and time. idv's ``held_until`` is the end of the latest hold,
    so one date for all reasons."""
    codes = v.reasons if reasons is None else reasons
    lines = [(code, idv_text.reason_text(code, locale(), status="denied")) for code in codes]
    until = idv_text.hold_end(v.held_until, locale(), g.tz)
    held = bool(HOLDS & set(codes)) or until is not None
    return render_template(
        "held.html",
        title=t("held_title") if held else t("no_factor_title"),
        action=t("a_" + v.action),
        reasons=lines,
        until=until,
    ), 403


def finish(flow: dict[str, Any], assertion: str) -> Any:
    """The flow is satisfied: log in, unlock one change, or keep the assertion for the action."""
    session.pop("flow", None)
    session.pop("sent_to", None)
    if flow["purpose"] in FINISHERS:
        return FINISHERS[flow["purpose"]](flow, assertion)
    if flow["purpose"] in ("login", "signup"):
        # The portal is its own relying party: check the login assertion before trusting it.
        current_app.extensions["idv_verifier"].verify(
            assertion, subject=flow["subject"], action="login", consume=True
        )
        sign_in(flow["subject"])
    elif flow["purpose"] == "enroll":
        session["enroll_assertion"] = assertion
        flash(t("unlocked"), "ok")
    else:
        session["assertion:" + flow["action"]] = assertion
    return redirect(flow["after"])


def leave(flow: dict[str, Any], message: str) -> Any:
    """End a flow that can no longer succeed (locked, expired) with ``message``."""
    session.pop("flow", None)
    flash(message, "error")
    return redirect(url_for("home") if flow["purpose"] != "enroll" else url_for("security"))


@bp.get("/verify")
def verify() -> Any:
    """The options of the current step-up, each factor with its form."""
    flow = session.get("flow")
    if not flow:
        return redirect(url_for("home"))
    v = portal().idv.get_verification(flow["vid"])
    if v.status == "waiting":
        return waiting(flow)
    if v.status != "pending":
        return leave(flow, idv_text.status_text(v.status, locale()))
    user = portal().users.by_subject(flow["subject"]) or {}
    notes = [(code, idv_text.reason_text(code, locale(), status="pending")) for code in v.reasons]
    return render_template(
        "verify.html",
        v=v,
        action=t("a_" + flow["action"]),
        subject=flow["subject"],
        masked=user.get("masked", ""),
        notes=notes,
        sent_to=session.get("sent_to"),
        branch=portal().branch is not None,
    )


@bp.post("/verify/challenge")
def verify_challenge() -> Any:
    """Send an SMS code, or fetch a device challenge or passkey options (JSON, for portal.js)."""
    flow = session.get("flow") or abort(400)
    factor = str((request.get_json(silent=True) or request.form).get("factor", ""))
    try:
        ch = portal().idv.send_challenge(flow["vid"], factor)
    except NotPending:
        return leave(flow, idv_text.status_text("expired", locale()))
    except RateLimited as exc:
        # The per-phone SMS budget (ASVS 6.6.3) is about this number, not a busy service; a
        # subject lockout answers 429 here too (its message is the only hint: API.md has no
        # machine-readable name for the limit).
        kind = "proofs" if "locked" in exc.message else factor
        message = idv_text.rate_limited(exc.retry_after, kind, locale())
        if request.is_json:
            return jsonify({"error": "rate_limited", "message": message}), 429
        flash(message, "error")
        return redirect(url_for("flows.verify"))
    if request.is_json:
        return jsonify(
            {"challenge": ch.challenge, "options": ch.options, "expires_at": ch.expires_at}
        )
    session["sent_to"] = ch.sent_to
    flash(t("sms_sent", to=ch.sent_to), "ok")
    return redirect(url_for("flows.verify"))


def attempts_left(proof: ProofResult) -> int | None:
    """The proof answer's ``attempts_left`` (API.md), or None from an idv that does not send it."""
    value = getattr(proof, "attempts_left", None)
    if value is None:
        value = proof.raw.get("attempts_left")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def proof_fields(factor: str, body: Any) -> dict[str, Any]:
    """The fields of one proof, checked as far as the portal can (``FormError`` otherwise)."""
    if factor in ("sms", "totp"):
        return {"code": one_time_code(body.get("code"))}
    if factor == "knowledge":
        secret = str(body.get("secret") or "")
        if not secret:
            raise FormError("pin_empty")
        return {"secret": secret}
    if factor == "recovery_code":  # the field is not "code": it is no 6-digit one-time code
        code = str(body.get("recovery_code") or "").strip()
        if not code or len(code) > 64:
            raise FormError("recovery_code_empty")
        return {"code": code}
    if factor == "passkey":  # the browser's AuthenticationResponseJSON, checked by idv
        credential = body.get("credential")
        return {"credential": credential} if isinstance(credential, dict) else {}
    return {k: str(body[k]) for k in ("factor_id", "signature") if body.get(k)}


def waiting(flow: dict[str, Any]) -> Any:
    """A delayed recovery now waits out its delay: the flow ends on the waiting page. The
    account remembers it (the same number on "Lost your phone?" finds it again), and its
    signed-in sessions end with the phone's suspended factors."""
    portal().users.update(flow["subject"], recovery_vid=flow["vid"])
    sign_out_everywhere(flow["subject"])
    session.pop("flow", None)
    session["waiting"] = {"vid": flow["vid"], "subject": flow["subject"]}
    return redirect(url_for("recovery.waiting"))


@bp.post("/verify/prove")
def verify_prove() -> Any:
    """Submit one proof; say which factor failed and how many tries remain."""
    flow = session.get("flow") or abort(400)
    body = request.get_json(silent=True) or request.form
    factor = str(body.get("factor", ""))
    return submit_proof(
        flow, factor, lambda: portal().idv.prove(flow["vid"], factor, **proof_fields(factor, body))
    )


def submit_proof(flow: dict[str, Any], factor: str, send: Callable[[], ProofResult]) -> Any:
    """Send one proof (``send``) and answer what idv said: the next page when the flow is done
    or waits, else the verify page with what failed and the tries left."""
    back = url_for("flows.verify")
    try:
        proof = send()
    except FormError as exc:
        flash(t(exc.key), "error")
        proof = None
    except RateLimited as exc:
        flash(idv_text.rate_limited(exc.retry_after, "proofs", locale()), "error")
        proof = None
    except NotPending:
        v = portal().idv.get_verification(flow["vid"])
        return _answer(leave(flow, idv_text.status_text(v.status, locale())))
    except InvalidRequest:
        flash(idv_text.failed_proof(factor, None, locale()), "error")
        proof = None
    if proof is not None and proof.status == "satisfied" and proof.assertion:
        return _answer(finish(flow, proof.assertion))
    if proof is not None and proof.status == "waiting":
        return _answer(waiting(flow))
    if proof is not None and not proof.accepted:
        message = idv_text.failed_proof(factor, attempts_left(proof), locale(), status=proof.status)
        if proof.status == "locked":
            return _answer(leave(flow, message))
        flash(message, "error")
    return _answer(redirect(back))


def _answer(response: Any) -> Any:
    """A redirect as it is for a form post, as ``{"redirect"}`` for portal.js's fetch."""
    return jsonify({"redirect": response.location}) if request.is_json else response
