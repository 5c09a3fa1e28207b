"""``GET /openapi.json``: the OpenAPI 3.1 document, generated from the pydantic models."""

from __future__ import annotations

from functools import cache
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from service.http import models as m
from service.http.models_export import SubjectExport

bp = Blueprint("openapi", __name__)

# (method, path, summary, scope, request model, {status: response model or None})
ROUTES: list[tuple[str, str, str, str | None, type[BaseModel] | None, dict[int, Any]]] = [
    ("get", "/healthz", "Process is up", None, None, {200: m.Health}),
    ("get", "/readyz", "Database reachable", None, None, {200: m.Health, 503: m.Error}),
    ("get", "/metrics", "Prometheus metrics (text)", None, None, {200: "text"}),
    ("get", "/openapi.json", "This document", None, None, {200: "json"}),
    ("get", "/.well-known/jwks.json", "Assertion public keys", None, None, {200: m.Jwks}),
    ("get", "/v1/client", "Who this API key is", "any", None, {200: m.ClientInfo}),
    (
        "put",
        "/v1/subjects/{subject_id}",
        "Create a subject or set its phone",
        "verify",
        m.PutSubject,
        {200: m.Subject, 201: m.Subject},
    ),
    (
        "delete",
        "/v1/subjects/{subject_id}",
        "Erase a subject (a delete_account assertion once it has a strong factor)",
        "verify",
        m.AssertionBody,
        {204: None},
    ),
    (
        "get",
        "/v1/subjects/{subject_id}/export",
        "What idv holds about the subject (PIPL art. 45), audited",
        "verify",
        None,
        {200: SubjectExport},
    ),
    (
        "post",
        "/v1/subjects/{subject_id}/factors",
        "Enrol a factor",
        "verify",
        m.EnrollFactor,
        {201: m.EnrolledFactor},
    ),
    (
        "get",
        "/v1/subjects/{subject_id}/factors",
        "List factors",
        "verify",
        None,
        {200: m.FactorList},
    ),
    (
        "post",
        "/v1/subjects/{subject_id}/factors/{factor_id}/activate",
        "Activate a TOTP",
        "verify",
        m.ActivateFactor,
        {200: m.FactorStatus},
    ),
    (
        "delete",
        "/v1/subjects/{subject_id}/factors/{factor_id}",
        "Remove a factor",
        "verify",
        m.AssertionBody,
        {204: None},
    ),
    (
        "post",
        "/v1/verifications",
        "Start a step-up verification",
        "verify",
        m.StartVerification,
        {201: m.Verification},
    ),
    (
        "get",
        "/v1/verifications/{verification_id}",
        "A verification",
        "verify",
        None,
        {200: m.Verification},
    ),
    (
        "post",
        "/v1/verifications/{verification_id}/challenges",
        "Send a challenge",
        "verify",
        m.ChallengeRequest,
        {200: m.Challenge},
    ),
    (
        "post",
        "/v1/verifications/{verification_id}/proofs",
        "Submit a proof",
        "verify",
        m.Proof,
        {200: m.ProofResult},
    ),
    (
        "post",
        "/v1/verifications/{verification_id}/cancel",
        "Cancel a waiting delayed recovery (a cancel_recovery assertion)",
        "verify",
        m.AssertionBody,
        {200: m.Verification},
    ),
    (
        "post",
        "/v1/carrier-events",
        "Record a carrier signal",
        "carrier",
        m.CarrierEvent,
        {202: m.Accepted},
    ),
    (
        "get",
        "/v1/admin/subjects/{subject_id}",
        "Support-desk view of a subject (Idv-Operator header required)",
        "admin",
        None,
        {200: m.OperatorView},
    ),
    (
        "delete",
        "/v1/admin/subjects/{subject_id}",
        "The support desk erases a subject (admin without verify; Idv-Operator; alerted)",
        "admin",
        None,
        {204: None},
    ),
]

# Every error a /v1 route may answer: status → (description, the contract's codes). The codes
# go into each response as ``x-error-codes``; docs/API.md lists the same (tests/test_docs.py).
ERRORS: dict[int, tuple[str, tuple[str, ...]]] = {
    400: ("Invalid request", ("invalid_request", "unknown_action")),
    401: ("Unauthorized", ("unauthorized",)),
    403: ("Forbidden", ("forbidden", "step_up_required")),
    404: ("Not found", ("not_found",)),
    405: ("Method not allowed", ("method_not_allowed",)),
    408: ("Request body stopped arriving (IDV_CLIENT_TIMEOUT)", ("request_timeout",)),
    409: ("Conflict", ("conflict", "not_pending")),
    413: ("Payload too large", ("payload_too_large",)),
    422: (
        "Unprocessable",
        ("invalid_code", "weak_secret", "factor_not_allowed", "idempotency_conflict"),
    ),
    429: ("Rate limited (Retry-After)", ("rate_limited",)),
    503: ("Database or Redis unavailable (Retry-After)", ("service_unavailable",)),
}

# API.md "Conveniences for callers": any POST may carry one.
IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "A repeat with the same key, client, route and body within 24 h gets the "
    "first answer again (Idempotent-Replayed: true); another body: 422 idempotency_conflict; "
    "while the first still runs: 409 conflict.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}


def _path_params(path: str) -> list[dict[str, Any]]:
    names = [p[1:-1] for p in path.split("/") if p.startswith("{")]
    params = []
    for name in names:
        schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 128}
        if name == "subject_id":
            schema["pattern"] = m.SUBJECT_ID_PATTERN
        params.append({"name": name, "in": "path", "required": True, "schema": schema})
    return params


@cache
def document() -> dict[str, Any]:
    """Build the OpenAPI document once."""
    models: set[type[BaseModel]] = {m.Error}
    for *_, req, responses in ROUTES:
        if req is not None:
            models.add(req)
        models.update(r for r in responses.values() if isinstance(r, type))
    _, schemas = models_json_schema(
        [(model, "validation") for model in sorted(models, key=lambda x: x.__name__)],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, Any] = {}
    for method, path, summary, scope, req, responses in ROUTES:
        op: dict[str, Any] = {
            "summary": summary,
            "operationId": f"{method}_{path}",
            "responses": {},
        }
        if _path_params(path):
            op["parameters"] = _path_params(path)
        if path.startswith("/v1/admin/"):
            op["parameters"] = op.get("parameters", []) + [
                {
                    "name": "Idv-Operator",
                    "in": "header",
                    "required": True,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 128},
                },
                {
                    "name": "tenant",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "string", "maxLength": 64},
                },
            ]
        if method == "post":
            op["parameters"] = op.get("parameters", []) + [IDEMPOTENCY_KEY]
        if scope is None:
            op["security"] = []
        if req is not None:
            op["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": f"#/components/schemas/{req.__name__}"}}
                },
            }
        for status, model in responses.items():
            if model is None:
                op["responses"][str(status)] = {"description": "No content"}
            elif model == "text":
                op["responses"][str(status)] = {
                    "description": "OK",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            elif model == "json":
                op["responses"][str(status)] = {
                    "description": "OK",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            else:
                op["responses"][str(status)] = {
                    "description": "OK",
                    "content": {
                        "application/json": {
                            "schema": {"$ref": f"#/components/schemas/{model.__name__}"}
                        }
                    },
                }
        if scope is not None:
            for status, (text, codes) in ERRORS.items():
                op["responses"].setdefault(
                    str(status),
                    {
                        "description": f"{text}: {', '.join(codes)}",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}
                        },
                        "x-error-codes": list(codes),
                    },
                )
        paths.setdefault(path, {})[method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "idv",
            "version": "1",
            "description": "Identity verification and step-up authentication (docs/API.md).",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


@bp.get("/openapi.json")
def openapi() -> Response:
    """The OpenAPI document."""
    return jsonify(document())
