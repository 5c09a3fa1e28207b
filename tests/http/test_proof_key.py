"""The proof route and verification create take a key verified before from memory; revocation
still ends it at once.

The proof's first statement reads the client row with the verification, a create's with the
subject (issue 24: API-key lookups cached only if revocation still ends a key at once on every
instance). These tests use a key that is known to the process (it proved once) and then
revoked, expired or unknown.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func, select, update

from service.app import create_app
from service.context import ServiceContext
from service.storage import clients as client_store
from service.storage import verifications as verification_store
from service.storage.db import dispose
from service.storage.tables import audit_log, clients, verifications


def _known(user, http, auth) -> str:  # type: ignore[no-untyped-def]
    """Make the key known to the process with one accepted proof; its client id."""
    user.add_totp()
    vid = user.start("login").json["verification_id"]
    assert user.prove_factor(vid, "totp").json["status"] == "satisfied"
    return http.get("/v1/client", headers=auth).json["client_id"]


def test_a_known_key_revoked_fails_its_next_proof_on_every_instance(user, http, auth, settings):
    client_id = _known(user, http, auth)
    vid = user.start("login").json["verification_id"]
    # A second instance on the same database that knows the key too.
    other_ctx = ServiceContext.build(settings)
    try:
        other = create_app(context=other_ctx).test_client()
        wrong = {"factor": "totp", "code": "000000"}
        assert (
            other.post(f"/v1/verifications/{vid}/proofs", json=wrong, headers=auth).json["accepted"]
            is False
        )
        with other_ctx.engine.begin() as conn:
            assert client_store.revoke(conn, client_id, other_ctx.clock())
        for app in (http, other):
            r = app.post(
                f"/v1/verifications/{vid}/proofs",
                json={"factor": "totp", "code": user.totp_code()},
                headers=auth,
            )
            assert r.status_code == 401 and r.json["error"] == "unauthorized", r.json
            missing = app.post("/v1/verifications/v_nope/proofs", json=wrong, headers=auth)
            assert missing.status_code == 401  # 401 before 404: nothing said about the id
    finally:
        dispose(other_ctx.engine)
    with user_ctx(http).engine.connect() as conn:
        record = verification_store.get(conn, client_id, vid)
    assert record is not None and record.status == "pending" and record.failures == 1


def test_a_known_key_past_its_expiry_fails_at_once(user, http, auth):
    client_id = _known(user, http, auth)
    vid = user.start("login").json["verification_id"]
    _expire(user_ctx(http), client_id)
    r = user.prove(vid, {"factor": "totp", "code": user.totp_code()})
    assert r.status_code == 401 and "expired" in r.json["message"], r.json


def test_a_known_key_still_gets_404_for_a_verification_it_does_not_have(user, http, auth):
    _known(user, http, auth)
    r = user.prove("v_nope", {"factor": "totp", "code": "123456"})
    assert r.status_code == 404 and r.json["error"] == "not_found", r.json


def user_ctx(http) -> ServiceContext:  # type: ignore[no-untyped-def]
    return http.application.extensions["idv"]


def _counts(ctx: ServiceContext) -> tuple[int, int]:
    with ctx.engine.connect() as conn:
        made = conn.execute(select(func.count()).select_from(verifications)).scalar_one()
        audited = conn.execute(select(func.count()).select_from(audit_log)).scalar_one()
    return made, audited


def test_a_known_key_revoked_creates_nothing_on_any_instance(user, http, auth, settings):
    client_id = _known(user, http, auth)
    other_ctx = ServiceContext.build(settings)
    try:
        other = create_app(context=other_ctx).test_client()
        assert other.post("/v1/verifications", json=_start(), headers=auth).status_code == 201
        with other_ctx.engine.begin() as conn:
            assert client_store.revoke(conn, client_id, other_ctx.clock())
        before = _counts(other_ctx)
        for app in (http, other):
            r = app.post("/v1/verifications", json=_start(), headers=auth)
            assert r.status_code == 401 and r.json["error"] == "unauthorized", r.json
            # 401 before 404: nothing said about whether the subject exists.
            missing = app.post("/v1/verifications", json=_start("nobody"), headers=auth)
            assert missing.status_code == 401, missing.json
        assert _counts(other_ctx) == before  # no verification, no audit record
    finally:
        dispose(other_ctx.engine)


def test_a_known_key_past_its_expiry_creates_nothing(user, http, auth):
    client_id = _known(user, http, auth)
    ctx = user_ctx(http)
    _expire(ctx, client_id)
    before = _counts(ctx)
    r = http.post("/v1/verifications", json=_start(), headers=auth)
    assert r.status_code == 401 and "expired" in r.json["message"], r.json
    assert _counts(ctx) == before


def test_a_known_key_still_gets_404_for_a_subject_it_does_not_have(user, http, auth, other_auth):
    _known(user, http, auth)
    assert http.post("/v1/verifications", json=_start(), headers=auth).status_code == 201
    r = http.post("/v1/verifications", json=_start("nobody"), headers=auth)
    assert r.status_code == 404 and r.json["error"] == "not_found", r.json
    # Another tenant's known key: alice is not its subject (the join is on the caller's id).
    assert http.post("/v1/verifications", json=_start(), headers=other_auth).status_code == 404
    r = http.post("/v1/verifications", json=_start(), headers=other_auth)
    assert r.status_code == 404, r.json


def _start(subject_id: str = "alice") -> dict:
    return {"subject_id": subject_id, "action": "login"}


def _expire(ctx: ServiceContext, client_id: str) -> None:
    """The client's key expired a second ago."""
    with ctx.engine.begin() as conn:
        conn.execute(
            update(clients)
            .where(clients.c.id == client_id)
            .values(expires_at=ctx.clock() - timedelta(seconds=1))
        )
