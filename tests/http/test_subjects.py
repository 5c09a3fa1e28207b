"""Subjects through HTTP: API.md "Subjects and factors", tenancy and masking (T4)."""

from __future__ import annotations

from sqlalchemy import select

from service.storage.tables import audit_log, metadata, subjects

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


def test_erasure_leaves_no_full_ip_in_any_table(http, auth, ctx):
    """Issue 20 item 7 (PIPL art. 47, 51): after DELETE, the subject's full addresses (the
    caller-supplied context.ip and the peer address) are in no table; the audit trail keeps the
    /24 or /48 network, enough to investigate."""
    peer = {"REMOTE_ADDR": "203.0.113.77"}
    ips = {
        "198.51.100.23": "198.51.100.0/24",
        "2001:db8:85a3:8d3:1319:8a2e:370:7348": "2001:db8:85a3::/48",
    }
    r = http.put("/v1/subjects/alice", json={"phone": PHONE}, headers=auth, environ_base=peer)
    assert r.status_code == 201
    for ip in [*ips, "::ffff:192.0.2.200", "not an address 13800138000"]:
        r = http.post(
            "/v1/verifications",
            json={"subject_id": "alice", "action": "login", "context": {"ip": ip}},
            headers=auth,
        )
        assert r.status_code == 201, r.json
    assert http.delete("/v1/subjects/alice", headers=auth, environ_base=peer).status_code == 204
    dump = []
    with ctx.engine.connect() as conn:
        for table in metadata.sorted_tables:
            dump += [repr(tuple(row)) for row in conn.execute(select(table))]
        stored = [row.ip for row in conn.execute(select(audit_log).order_by(audit_log.c.id))]
    text = "\n".join(dump)
    for full in [*ips, "203.0.113.77", "192.0.2.200", "13800138000"]:
        assert full not in text, full
    assert stored == [
        "203.0.113.0/24",
        *ips.values(),
        "192.0.2.0/24",
        None,
        "203.0.113.0/24",
    ]
