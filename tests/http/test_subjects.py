"""Subjects through HTTP: API.md "Subjects and factors", tenancy and masking (T4)."""

from __future__ import annotations

from sqlalchemy import select

from service.storage.tables import subjects

PHONE = "+8613800138000"


def test_put_creates_then_updates_with_masked_phone(http, auth):
    r = http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
    assert r.status_code == 201
    assert r.json == {"subject_id": "alice", "phone": "+86 138****8000"}
    again = http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
    assert again.status_code == 200
    assert again.json["phone"] == "+86 138****8000"


def test_phone_change_without_strong_factor_needs_no_assertion(http, auth):
    http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
    r = http.put("/v1/subjects/alice", json={"phone": "+8613900139000"}, headers=auth)
    assert r.status_code == 200
    assert r.json["phone"] == "+86 139****9000"


def test_phone_must_be_e164(http, auth):
    for bad in ["13800138000", "+86 138 0013 8000", "+0000000", "", 8613800138000, None]:
        r = http.put("/v1/subjects/alice", json={"phone": bad}, headers=auth)
        assert r.status_code == 400, bad
        assert r.json["error"] == "invalid_request"


def test_other_tenant_sees_404(http, auth, other_auth):
    http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
    assert http.delete("/v1/subjects/alice", headers=other_auth).status_code == 404
    # The same id in another tenant is another subject.
    r = http.put("/v1/subjects/alice", json={"phone": "+8613900139000"}, headers=other_auth)
    assert r.status_code == 201


def test_delete_erases(http, auth, ctx):
    http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
    assert http.delete("/v1/subjects/alice", headers=auth).status_code == 204
    assert http.delete("/v1/subjects/alice", headers=auth).status_code == 404
    with ctx.engine.connect() as conn:
        assert conn.execute(select(subjects)).first() is None


def test_phone_stored_encrypted_with_keyed_hash(http, auth, ctx):
    http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
    with ctx.engine.connect() as conn:
        row = conn.execute(select(subjects)).one()
    assert PHONE not in row.phone_ct and "13800138000" not in row.phone_ct
    assert row.phone_hash == ctx.keys.lookup_hash("phone", PHONE)


def test_bad_subject_id(http, auth):
    r = http.put("/v1/subjects/" + "x" * 129, json={"phone": PHONE}, headers=auth)
    assert r.status_code == 400
