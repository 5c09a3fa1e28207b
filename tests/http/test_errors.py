"""One JSON error shape for everything (API.md, Errors): never HTML, never a 500 for bad input."""

from __future__ import annotations

import pytest


def test_unknown_route_is_json_404(http):
    r = http.get("/nope")
    assert r.status_code == 404
    assert r.json["error"] == "not_found"


def test_wrong_method_is_json_405(http, auth):
    r = http.post("/v1/subjects/alice", json={}, headers=auth)
    assert r.status_code == 405
    assert r.json["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "data,content_type",
    [
        ("{not json", "application/json"),
        ("[1, 2]", "application/json"),
        ('"text"', "application/json"),
        ('{"phone": "+8613800138000"}', "text/plain"),
        ("", "application/json"),
        (b"\xff\xfe", "application/json"),
        ("[" * 200_000, "application/json"),  # nesting past the parser's recursion limit
        ('{"phone": ' + "[" * 200_000, "application/json"),
    ],
)
def test_malformed_bodies_are_400(http, auth, data, content_type):
    r = http.put("/v1/subjects/alice", data=data, content_type=content_type, headers=auth)
    assert r.status_code == 400
    assert r.json["error"] == "invalid_request"
    assert r.mimetype == "application/json"


def test_body_over_1_mib_is_413(http, auth):
    big = '{"phone": "' + "1" * (1024 * 1024 + 10) + '"}'
    r = http.put("/v1/subjects/alice", data=big, content_type="application/json", headers=auth)
    assert r.status_code == 413
    assert r.json["error"] == "payload_too_large"


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer ", "Bearer idv_wrong", "Bearer x"])
def test_missing_or_bad_key_is_401(http, header):
    headers = {"Authorization": header} if header else {}
    r = http.put("/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=headers)
    assert r.status_code == 401
    assert r.json["error"] == "unauthorized"


def test_scope_is_enforced(http, ctx):
    from service.usecases.clients import create_client

    key = create_client(ctx, "carrier", ["carrier"])[1]
    r = http.put(
        "/v1/subjects/alice",
        json={"phone": "+8613800138000"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 403
    assert r.json["error"] == "forbidden"


def test_revoked_key_fails_at_once(http, ctx):
    from service.storage import clients as store
    from service.usecases.clients import create_client

    client, key = create_client(ctx, "gone", ["verify"])
    headers = {"Authorization": f"Bearer {key}"}
    assert http.get("/v1/client", headers=headers).status_code == 200
    with ctx.engine.begin() as conn:
        store.revoke(conn, client.id, ctx.clock())
    assert http.get("/v1/client", headers=headers).status_code == 401


def test_whoami(http, auth):
    r = http.get("/v1/client", headers=auth)
    assert r.status_code == 200
    assert r.json["client_id"].startswith("cl_")
    assert r.json["scopes"] == ["verify"]


@pytest.mark.parametrize(
    "data",
    [
        '{"subject_id": "alice", "action": "login", "action": "payment_password_reset"}',
        '{"phone": "+8613800138000", "phone": "+8613900139000"}',
        '{"outer": {"a": 1, "a": 2}}',  # in a nested object too
    ],
)
def test_a_repeated_member_name_is_400_never_last_one_wins(http, auth, data):
    """RFC 8259 section 4 / RFC 7493: a gateway in front of idv may read the first of two
    equal names and idv the last; the body is refused instead of guessed at."""
    path = "/v1/verifications" if "action" in data else "/v1/subjects/alice"
    method = http.post if "action" in data else http.put
    r = method(path, data=data, content_type="application/json", headers=auth)
    assert r.status_code == 400
    assert r.json == {
        "error": "invalid_request",
        "message": "the body repeats a member name in one object",
    }


def _rows(ctx) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """How many rows each table holds: what a refused request must leave unchanged."""
    from sqlalchemy import func, select

    from service.storage.tables import metadata

    with ctx.engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one()
            for t in metadata.sorted_tables
        }


# JSON escapes, so that the test sends what a caller's bytes would hold.
UNSTORABLE = [r"a\u0000b", r"\ud800", r"x\udfffy", r"\u0000"]


@pytest.mark.parametrize("bad", UNSTORABLE)
@pytest.mark.parametrize(
    "path,template",
    [
        (
            "/v1/verifications",
            '{"subject_id": "alice", "action": "login", "context": {"ip": "%s"}}',
        ),
        ("/v1/verifications", '{"subject_id": "alice", "action": "login", "context": {"%s": 1}}'),
        (
            "/v1/verifications",
            '{"subject_id": "alice", "action": "login", "context": {"ua": ["ok", "%s"]}}',
        ),
        ("/v1/subjects/alice/factors", '{"type": "knowledge", "secret": "%s739184"}'),
        ("/v1/subjects/alice/factors", '{"type": "totp", "label": "%s"}'),
    ],
)
def test_a_nul_or_lone_surrogate_in_a_body_is_400_and_writes_nothing(
    http, auth, user, ctx, path, template, bad
):
    """PostgreSQL's text types refuse U+0000 (a 500 there, a stored oddity on SQLite) and no
    UTF-8 encoder takes an unpaired surrogate (RFC 7493 §2.1): refused at the parser, on both
    databases alike, before anything is written (the audit entry of a verification was the
    first write that failed)."""
    before = _rows(ctx)
    r = http.post(path, data=template % bad, content_type="application/json", headers=auth)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json == {
        "error": "invalid_request",
        "message": "the body holds a U+0000 or an unpaired surrogate in a string",
    }
    assert _rows(ctx) == before


def test_a_utf16_body_gets_the_same_check(http, auth, user):
    """json.loads also reads UTF-16 and UTF-32 bodies; the escape is checked in those too."""
    body = '{"subject_id": "alice", "action": "login", "context": {"ip": "a\\u0000b"}}'
    r = http.post(
        "/v1/verifications",
        data=body.encode("utf-16"),
        content_type="application/json",
        headers=auth,
    )
    assert r.status_code == 400
    assert r.json["error"] == "invalid_request"


def test_escapes_that_are_storable_still_pass(http, auth, user):
    """The check looks at what the escapes decode to: a paired surrogate (an emoji), a literal
    backslash-u and other control characters are stored as sent."""
    body = (
        '{"subject_id": "alice", "action": "login",'
        ' "context": {"user_agent": "\\ud83d\\ude00 \\\\u0000 \\u0001"}}'
    )
    r = http.post("/v1/verifications", data=body, content_type="application/json", headers=auth)
    assert r.status_code == 201, r.get_data(as_text=True)


@pytest.mark.parametrize(
    "method,path",
    [
        ("get", "/v1/verifications/a%00b"),
        ("post", "/v1/verifications/a%00b/proofs"),
        ("post", "/v1/verifications/a%00b/challenges"),
        ("get", "/v1/subjects/a%00b/factors"),
        ("delete", "/v1/subjects/alice/factors/f%00"),
        ("post", "/v1/subjects/alice/factors/f%00/activate"),
        ("put", "/v1/subjects/a%00b"),
    ],
)
def test_a_nul_in_a_path_id_is_400_not_500(http, auth, user, ctx, method, path):
    """Path ids are looked up and audited: U+0000 in one was a 500 on PostgreSQL."""
    before = _rows(ctx)
    r = getattr(http, method)(path, json={"factor": "totp", "code": "123456"}, headers=auth)
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json == {
        "error": "invalid_request",
        "message": "the path holds a U+0000 or an unpaired surrogate",
    }
    assert _rows(ctx) == before


@pytest.fixture
def proxied(settings):  # type: ignore[no-untyped-def]
    """An app behind a trusted proxy (IDV_TRUST_PROXY): the client address from X-Forwarded-For."""
    import dataclasses

    from service.app import create_app
    from service.context import ServiceContext
    from service.storage.db import dispose
    from service.usecases.clients import create_client

    context = ServiceContext.build(dataclasses.replace(settings, trust_proxy=True))
    key = create_client(context, "tenant-a", ["verify"])[1]
    yield context, create_app(context=context).test_client(), {"Authorization": f"Bearer {key}"}
    dispose(context.engine)


def test_behind_a_trusted_proxy_the_forwarded_address_is_audited(proxied):
    from sqlalchemy import select

    from service.storage.tables import audit_log

    context, client, auth = proxied
    headers = {**auth, "X-Forwarded-For": "203.0.113.7, 10.0.0.1"}
    r = client.put("/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=headers)
    assert r.status_code == 201
    with context.engine.connect() as conn:
        # The forwarded address, kept as its /24 (issue 20 item 7).
        assert conn.execute(select(audit_log.c.ip)).scalars().all() == ["203.0.113.0/24"]


def test_a_nul_in_a_forwarded_address_is_400_and_writes_nothing(proxied):
    """gunicorn refuses such a header itself; under a server that does not, this was a 500 on
    PostgreSQL (the address goes into the audit trail)."""
    context, client, auth = proxied
    before = _rows(context)
    headers = {**auth, "X-Forwarded-For": "203.0.113.7\x00"}
    r = client.put("/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=headers)
    assert r.status_code == 400
    assert r.json["error"] == "invalid_request"
    assert _rows(context) == before


@pytest.mark.parametrize(
    "error", ["DeadlockDetected", "SerializationFailure", "OperationalError", "pool timeout"]
)
def test_a_transaction_lost_to_a_conflict_is_409_and_a_database_fault_503(
    http, auth, user, monkeypatch, error
):
    """A deadlock victim or a serialisation failure was rolled back whole while the database
    stayed up: 409 ``conflict`` (retry), not 503, which says the database is down."""
    import psycopg
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.exc import TimeoutError as PoolTimeout

    from service.usecases import verifications

    if error == "pool timeout":
        raised: Exception = PoolTimeout("QueuePool limit reached")
    else:  # what SQLAlchemy wraps psycopg's errors in
        raised = OperationalError("UPDATE ...", {}, getattr(psycopg.errors, error)("x"))

    def fail(*_args, **_kwargs):
        raise raised

    monkeypatch.setattr(verifications, "get", fail)
    r = http.get("/v1/verifications/vf_x", headers=auth)
    if error in ("DeadlockDetected", "SerializationFailure"):
        assert (r.status_code, r.json["error"]) == (409, "conflict")
    else:
        assert (r.status_code, r.json["error"]) == (503, "service_unavailable")
        assert r.headers["Retry-After"] == "5"


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize(
    "template",
    [
        '{"subject_id": "alice", "action": "login", "context": {"risk": %s}}',
        '{"subject_id": "alice", "action": "login", "context": {"geo": [1, {"lat": %s}]}}',
        '{"subject_id": "alice", "action": "login", "extra": %s}',
    ],
)
def test_nan_and_infinity_anywhere_in_a_body_are_400_and_write_nothing(
    http, auth, user, ctx, template, number
):
    """RFC 8259 §6: JSON has no NaN or Infinity. Python's json reads them unless told not to,
    and they used to reach ``context`` (and the audit entry written from it)."""
    before = _rows(ctx)
    r = http.post(
        "/v1/verifications", data=template % number, content_type="application/json", headers=auth
    )
    assert r.status_code == 400, r.get_data(as_text=True)
    assert r.json == {
        "error": "invalid_request",
        "message": "the body holds NaN or Infinity, which JSON has not",
    }
    assert _rows(ctx) == before
