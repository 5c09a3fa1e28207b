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
