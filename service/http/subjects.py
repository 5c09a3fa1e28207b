"""``/v1/client``, ``/v1/subjects`` and the support desk's ``/v1/admin/subjects``: thin routes."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, request

from service.http.auth import caller, client_ip, ctx
from service.http.body import parse
from service.http.models import AssertionBody, PutSubject
from service.usecases import operators, subjects
from service.usecases.export import export_subject

bp = Blueprint("subjects", __name__)


@bp.get("/v1/client")
def whoami() -> Response:
    """Tell a key who it is; ``client_id`` is the ``aud`` of its assertions."""
    client = caller(None)
    return jsonify({"client_id": client.id, "name": client.name, "scopes": list(client.scopes)})


@bp.put("/v1/subjects/<subject_id>")
def put_subject(subject_id: str) -> tuple[Response, int]:
    """Create a subject (201) or set its phone (200)."""
    client = caller("verify")
    body = parse(PutSubject)
    view = subjects.put_subject(
        ctx(), client, subject_id, body.phone, body.assertion, ip=client_ip()
    )
    return jsonify({"subject_id": view.subject_id, "phone": view.phone}), (
        201 if view.created else 200
    )


@bp.delete("/v1/subjects/<subject_id>")
def delete_subject(subject_id: str) -> tuple[str, int]:
    """Erase a subject (PIPL art. 47); a ``delete_account`` assertion in the JSON body once the
    subject has a strong factor."""
    client = caller("verify")
    body = parse(AssertionBody, optional=True)
    subjects.delete_subject(ctx(), client, subject_id, body.assertion, ip=client_ip())
    return "", 204


@bp.get("/v1/subjects/<subject_id>/export")
def export(subject_id: str) -> Response:
    """What idv holds about the subject, for a person's access request (PIPL art. 45)."""
    client = caller("verify")
    return jsonify(export_subject(ctx(), client, subject_id, ip=client_ip()))


@bp.get("/v1/admin/subjects/<subject_id>")
def operator_lookup(subject_id: str) -> Response:
    """Support-desk view of a subject (scope ``admin``): masked, audited, watched (T3)."""
    client = caller("admin")
    return jsonify(
        operators.lookup(
            ctx(),
            client,
            request.headers.get("Idv-Operator"),
            subject_id,
            request.args.get("tenant"),
            client_ip(),
        )
    )


@bp.delete("/v1/admin/subjects/<subject_id>")
def operator_erase(subject_id: str) -> tuple[str, int]:
    """The support desk erases a subject (scope ``admin``, not ``verify``): audited, alerted."""
    client = caller("admin")
    operators.erase(
        ctx(),
        client,
        request.headers.get("Idv-Operator"),
        subject_id,
        request.args.get("tenant"),
        client_ip(),
    )
    return "", 204
