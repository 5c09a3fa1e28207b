"""Support-desk reads (T3): masked, audited, limited per operator, alerts while it happens."""

from __future__ import annotations

import pytest

from service.storage import audit
from service.usecases.clients import create_client


@pytest.fixture
def desk(ctx, http, auth):
    """The tenant's support-desk key: the same tenant as ``auth``? No: admin keys are their own
    tenant, so the desk works on subjects created with its own key."""
    key = create_client(ctx, "desk", ["verify", "admin"])[1]
    return {"Authorization": f"Bearer {key}"}


def read(http, desk, subject_id, operator="agent-7", **params):
    headers = dict(desk, **({"Idv-Operator": operator} if operator else {}))
    return http.get(f"/v1/admin/subjects/{subject_id}", headers=headers, query_string=params)


def test_operator_sees_masked_data_and_is_audited(http, desk, ctx):
    http.put("/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=desk)
    http.post("/v1/verifications", json={"subject_id": "alice", "action": "login"}, headers=desk)
    r = read(http, desk, "alice")
    assert r.status_code == 200
    assert r.json["phone"] == "+86 138****8000"
    assert r.json["recent_decisions"][0]["action"] == "login"
    assert "13800138000" not in r.get_data(as_text=True)
    with ctx.engine.connect() as conn:
        reads = [e for e in audit.entries(conn) if e["event"] == "operator.read"]
    assert reads and reads[-1]["operator"] == "agent-7"


def test_operator_id_required_and_scope_enforced(http, desk, auth):
    assert read(http, desk, "alice", operator=None).status_code == 400
    r = http.get("/v1/admin/subjects/alice", headers=dict(auth, **{"Idv-Operator": "x"}))
    assert r.status_code == 403


def test_cross_tenant_read_refused_and_alerts(http, desk, ctx, auth):
    other = http.get("/v1/client", headers=auth).json["client_id"]
    r = read(http, desk, "alice", tenant=other)
    assert r.status_code == 403
    with ctx.engine.connect() as conn:
        alerts = [e for e in audit.entries(conn) if e["event"] == "operator.alert"]
    assert [a["outcome"] for a in alerts] == ["cross_tenant_read"]


def test_bulk_reads_alert_while_happening_then_limit(http, desk, ctx):
    for i in range(25):
        http.put(f"/v1/subjects/s{i}", json={"phone": "+8613800138000"}, headers=desk)
    for i in range(21):
        assert read(http, desk, f"s{i}").status_code == 200
        with ctx.engine.connect() as conn:
            alerts = [e for e in audit.entries(conn) if e["event"] == "operator.alert"]
        # The alert fires on the 21st read, not after the data is gone.
        assert bool(alerts) == (i >= 20), i
    # Another operator of the same desk has its own budget.
    assert read(http, desk, "s0", operator="agent-8").status_code == 200
