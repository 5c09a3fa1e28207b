"""``GET /v1/subjects/{id}/export`` (PIPL art. 45, issue 23): what idv holds about a subject,
never a secret, never another tenant's, audited."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.crypto.keyring import KeyRing, write_key_file
from service.storage import audit
from service.usecases.export import subject_refs
from tests.http.flow import PHONE, PIN, carrier_event, now_rfc3339

DAY = 24 * 3600


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """A key ring of this test's own: the profile switch below writes to it."""
    path = tmp_path / "keys" / "keys.json"
    write_key_file(path, KeyRing.generate())
    return path


def _export(http, auth, subject_id: str = "alice"):  # type: ignore[no-untyped-def]
    return http.get(f"/v1/subjects/{subject_id}/export", headers=auth)


def test_export_holds_the_subjects_data_and_no_secret(user, http, auth, carrier_auth, ctx):
    enrolled = user.add_totp()
    vid = user.start("login", ip="203.0.113.9").json["verification_id"]
    assert user.prove_factor(vid, "totp").json["status"] == "satisfied"
    denied = user.start("login").json["verification_id"]
    assert carrier_event(http, carrier_auth, PHONE, "sim_swap", now_rfc3339(-3600)).status_code
    r = _export(http, auth)
    assert r.status_code == 200, r.json
    doc = r.json
    assert doc["subject_id"] == "alice"
    assert doc["phone"]["masked"] == "+86 138****8000" and doc["phone"]["set_at"]
    totp = next(f for f in doc["factors"] if f["type"] == "totp")
    assert totp["factor_id"] == enrolled["factor_id"] and totp["last_used_at"] is not None
    assert [v["verification_id"] for v in doc["verifications"]] == [vid, denied]
    assert doc["verifications"][0]["status"] == "satisfied"
    assert all(isinstance(v["reasons"], list) for v in doc["verifications"])
    assert [e["type"] for e in doc["carrier_events"]] == ["sim_swap"]
    events = [e["event"] for e in doc["audit"]]
    assert "subject.created" in events and "proof.accepted" in events
    assert doc["audit_entries"] == len(doc["audit"])
    assert {e["network"] for e in doc["audit"]} <= {None, "203.0.113.0/24", "127.0.0.0/24"}
    assert doc["retention"]["audit"] == "3y" and doc["retention"]["verifications"] == "30d"
    text = json.dumps(doc)
    for secret in (enrolled["secret"], PHONE, PHONE[3:], "203.0.113.9", PIN):
        assert secret not in text
    # The export itself is in the trail, under the subject's pseudonym.
    with ctx.engine.connect() as conn:
        last = audit.entries(conn)[-1]
    assert last["event"] == "subject.exported"
    assert last["subject_ref"] in subject_refs(ctx, last["client_id"], "alice")


def test_another_tenants_subject_does_not_exist_and_a_purged_verification_is_not_listed(
    user, http, auth, other_auth, ctx
):
    from service.usecases.purge import purge

    r = _export(http, other_auth)
    assert r.status_code == 404 and r.json["error"] == "not_found"
    assert _export(http, auth, "nobody").status_code == 404
    vid = user.start("login").json["verification_id"]
    user.advance(32 * DAY)
    purge(ctx)
    listed = [v["verification_id"] for v in _export(http, auth).json["verifications"]]
    assert vid not in listed


def test_audit_entries_written_under_the_other_crypto_profile_are_found(
    user, auth, settings, clock
):
    """After a switch to ``gm`` the export still finds the entries written under ``intl``
    (the subject's pseudonym differs between the profiles; API.md, GB/T 39786 profile)."""
    from service.crypto import profile
    from tests.http.test_gm_mixed_profile import Restarted

    try:
        profile.require_library(profile.GM)
    except profile.ProfileUnavailable:
        pytest.skip("the gm library is not installed")
    user.add_totp()  # intl: subject.created, factor entries
    gm = Restarted(settings, profile.GM, clock)
    try:
        alice = gm.user(auth)
        alice.totp_secret, alice.totp_factor = user.totp_secret, user.totp_factor
        alice.step_up("login", ["totp"])  # gm: proof.accepted under the gm pseudonym
        doc = gm.http.get("/v1/subjects/alice/export", headers=auth).json
        events = [e["event"] for e in doc["audit"]]
        assert "subject.created" in events and "proof.accepted" in events
        client_id = gm.http.get("/v1/client", headers=auth).json["client_id"]
        refs = subject_refs(gm.ctx, client_id, "alice")
        assert len(set(refs)) == 2
    finally:
        gm.close()
