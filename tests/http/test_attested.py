"""Attested proofing through the HTTP contract and the CLI (API.md, Recovery; RFC 8725)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import replace

import pytest

from tests.http.flow import verified_claims
from tests.http.recovery_flow import (
    Tenant,
    audit_rows,
    client_id_of,
    register_key,
    settings_with_test_actions,
)

EXTRA = """
[actions.test_codes_attest]
description = "test: a recovery code and the tenant's own check, nothing else"
acr = "aal2"
options = [["recovery_code", "attested"]]

[actions.test_attest_beside]
description = "test: the tenant's own check beside a recovery code or the PIN"
acr = "aal2"
options = [["recovery_code", "attested"], ["knowledge", "attested"]]
"""


@pytest.fixture
def limits():
    """IDV_RATE_LIMITS of the test (a test parametrizes it to tighten one)."""
    return ()


@pytest.fixture
def settings(settings, tmp_path, limits):
    return replace(settings_with_test_actions(settings, tmp_path, EXTRA), rate_limits=limits)


@pytest.fixture
def tenant(http, auth, settings, tmp_path):
    """Tenant A (the ``auth`` key's client) with a registered attestation key."""
    t = Tenant.new(client_id_of(http, auth))
    out = register_key(settings, t.client_id, t.public_pem(), tmp_path)
    assert out.exit_code == 0, out.output
    t.kid = out.output.strip().splitlines()[-1]
    return t


def with_pin_and_codes(user) -> list[str]:
    user.add_pin()
    r = user.enroll(
        {"type": "recovery_code", "assertion": user.step_up("enroll_factor", ["sms", "knowledge"])}
    )
    assert r.status_code == 201, r.json
    return r.json["codes"]


def start(user, action: str) -> str:
    r = user.start(action)
    assert r.status_code == 201 and r.json["status"] == "pending", r.json
    return r.json["verification_id"]


def attest(user, vid: str, token):
    return user.prove(vid, {"factor": "attested", "attestation": token})


# -- the CLI ------------------------------------------------------------------------------------
def test_cli_prints_the_key_id_alone_on_the_last_line(http, auth, settings, tmp_path):
    for alg in ("ES256", "EdDSA"):
        t = Tenant.new(client_id_of(http, auth), alg)
        out = register_key(settings, t.client_id, t.public_pem(), tmp_path)
        assert out.exit_code == 0, out.output
        kid = out.output.strip().splitlines()[-1]
        from service.factors.attested import parse_public_key

        assert kid == parse_public_key(t.public_pem()).kid  # RFC 7638 thumbprint
        again = register_key(settings, t.client_id, t.public_pem(), tmp_path)
        assert again.output.strip().splitlines()[-1] == kid  # the same key, the same id


def test_cli_errors_are_one_line_on_stderr_and_exit_2(http, auth, settings, tmp_path):
    env = dict(
        os.environ,
        IDV_DATA_DIR=str(settings.data_dir),
        IDV_DATABASE_URL=settings.database_url,
        IDV_KEY_FILE=str(settings.key_file),
    )
    good = tmp_path / "good.pem"
    good.write_text(Tenant.new("x").public_pem())
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN PUBLIC KEY-----\nnot a key\n-----END PUBLIC KEY-----\n")
    cases = [
        ("cl_nosuchclient", good, "no client"),
        (client_id_of(http, auth), bad, "PEM public key"),
        (client_id_of(http, auth), tmp_path / "missing.pem", "cannot read"),
    ]
    for client_id, pem, words in cases:
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "service.cli",
                "clients",
                "attestation-key",
                client_id,
                str(pem),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 2, (run.stdout, run.stderr)
        lines = run.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], run.stderr
        assert run.stdout == ""


# -- offering and accepting -------------------------------------------------------------------
def test_a_tenant_without_a_key_never_sees_attested(
    user, http, auth, other_auth, settings, tmp_path
):
    with_pin_and_codes(user)
    r = user.start("test_recover")
    assert r.json["options"] == [["knowledge", "recovery_code"]]
    assert user.start("test_attest").json["status"] == "denied"
    refused = attest(user, r.json["verification_id"], "x.y.z")
    assert refused.status_code == 422 and refused.json["error"] == "factor_not_allowed"
    # Another tenant's key gives this tenant nothing either.
    b = Tenant.new(client_id_of(http, other_auth))
    assert register_key(settings, b.client_id, b.public_pem(), tmp_path).exit_code == 0
    assert user.start("test_recover").json["options"] == [["knowledge", "recovery_code"]]


def test_a_valid_attestation_is_accepted_once_and_audited_with_its_method(
    user, ctx, http, auth, tenant, caplog
):
    import logging

    caplog.set_level(logging.DEBUG)
    vid = start(user, "test_attest")
    token = tenant.attest("alice", vid, "face")
    r = attest(user, vid, token)
    assert r.status_code == 200 and r.json["accepted"] is True, r.json
    assert r.json["status"] == "satisfied" and r.json["satisfied"] == ["attested"]
    claims = verified_claims(http, auth, r.json["assertion"])
    assert claims["amr"] == ["face"]  # RFC 8176
    accepted = json.loads(audit_rows(ctx, "proof.accepted")[-1].detail)
    assert accepted == {"verification_id": vid, "factor": "attested", "method": "face"}
    # T4: the token is never logged nor stored (only its jti, the single-use record).
    from sqlalchemy import select

    from service.storage.tables import metadata

    with ctx.engine.connect() as conn:
        dump = repr([list(conn.execute(select(t))) for t in metadata.sorted_tables])
    logs = "\n".join(r.getMessage() for r in caplog.records)
    for part in (token, token.split(".")[1], token.split(".")[2]):
        assert part not in dump and part not in logs
    replayed = attest(user, start(user, "test_attest"), token)
    assert replayed.json["accepted"] is False  # bound to its verification, and its jti is spent


def test_openapi_describes_both_factors(http):
    schemas = http.get("/openapi.json").json["components"]["schemas"]
    assert "recovery_code" in schemas["EnrollFactor"]["properties"]["type"]["enum"]
    assert "codes" in schemas["EnrolledFactor"]["properties"]
    assert "remaining" in schemas["FactorSummary"]["properties"]
    assert "attestation" in schemas["Proof"]["properties"]


def test_in_person_counts_and_amr_has_no_value_for_it(user, http, auth, tenant):
    vid = start(user, "test_attest")
    r = attest(user, vid, tenant.attest("alice", vid, "in_person"))
    assert r.json["status"] == "satisfied"
    assert verified_claims(http, auth, r.json["assertion"])["amr"] == []


def test_every_rejection_is_accepted_false(user, http, other_auth, settings, tmp_path, tenant):
    import time

    b = Tenant.new(client_id_of(http, other_auth))
    out = register_key(settings, b.client_id, b.public_pem(), tmp_path)
    b.kid = out.output.strip().splitlines()[-1]
    impostor = Tenant(tenant.client_id, Tenant.new("x").key, kid=tenant.kid)
    b_key_as_a = Tenant(tenant.client_id, b.key, kid=b.kid)
    used = start(user, "test_attest")
    assert attest(user, used, tenant.attest("alice", used, jti="once")).json["accepted"]
    cases = {
        "wrong signature": lambda s, v: impostor.attest(s, v),
        "another tenant's key": lambda s, v: b_key_as_a.attest(s, v),
        "another tenant as issuer": lambda s, v: b.attest(s, v),
        "another subject": lambda s, v: tenant.attest("alice", v),
        "another verification": lambda s, v: tenant.attest(s, used),
        "stale": lambda s, v: tenant.attest(s, v, iat=int(time.time()) - 301),
        "from the future": lambda s, v: tenant.attest(s, v, iat=int(time.time()) + 90),
        "replayed jti": lambda s, v: tenant.attest(s, v, jti="once"),
        "wrong audience": lambda s, v: tenant.attest(s, v, aud="not-idv"),
        "unknown method": lambda s, v: tenant.attest(s, v, method="selfie"),
        "garbage": lambda s, v: "garbage",
        "not a JWS at all": lambda s, v: "a.b.c",
    }
    for index, (name, make) in enumerate(cases.items()):
        # A subject per case: ten failures of one factor would reach its rate limit.
        user.subject_id = f"case-{index}"
        assert user.put().status_code == 201
        vid = start(user, "test_attest")
        r = attest(user, vid, make(user.subject_id, vid))
        assert r.status_code == 200 and r.json["accepted"] is False, (name, r.json)
    vid = start(user, "test_attest")
    r = user.prove(vid, {"factor": "attested", "attestation": 123})
    assert r.status_code == 400 and r.json["error"] == "invalid_request"
    r = user.prove(vid, {"factor": "attested"})
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_stale_means_older_than_300_seconds(user, tenant):
    import time

    vid = start(user, "test_attest")
    assert not attest(user, vid, tenant.attest("alice", vid, iat=int(time.time()) - 301)).json[
        "accepted"
    ]
    assert attest(user, vid, tenant.attest("alice", vid, iat=int(time.time()) - 290)).json[
        "accepted"
    ]


# -- which methods count (API.md: id_document and eid only beside knowledge) --------------------
@pytest.mark.parametrize("method", ["id_document", "eid"])
def test_id_document_beside_a_recovery_code_does_not_complete(user, tenant, method):
    codes = with_pin_and_codes(user)
    # Attestation first: the verification remembers its method for the later proof.
    vid = start(user, "test_recover")
    assert attest(user, vid, tenant.attest("alice", vid, method)).json["accepted"] is True
    r = user.prove(vid, {"factor": "recovery_code", "code": codes[0]})
    assert r.json["accepted"] is True and r.json["status"] == "pending", r.json
    assert r.json["satisfied"] == ["attested", "recovery_code"] and not r.json.get("assertion")
    # Beside the PIN it does.
    done = user.prove_factor(vid, "knowledge")
    assert done.json["status"] == "satisfied" and done.json["assertion"]


@pytest.mark.parametrize("method", ["id_document", "eid"])
def test_id_document_beside_knowledge_completes(user, http, auth, tenant, method):
    with_pin_and_codes(user)
    vid = start(user, "test_recover")
    assert user.prove_factor(vid, "knowledge").json["accepted"] is True
    r = attest(user, vid, tenant.attest("alice", vid, method))
    assert r.json["status"] == "satisfied", r.json
    assert verified_claims(http, auth, r.json["assertion"])["amr"] == ["pin"]


def test_face_beside_a_recovery_code_completes(user, http, auth, tenant):
    codes = with_pin_and_codes(user)
    vid = start(user, "test_recover")
    assert user.prove(vid, {"factor": "recovery_code", "code": codes[0]}).json["accepted"]
    r = attest(user, vid, tenant.attest("alice", vid, "face"))
    assert r.json["status"] == "satisfied", r.json
    claims = verified_claims(http, auth, r.json["assertion"])
    assert claims["amr"] == ["face", "otp", "mfa"] and claims["acr"] == "aal2"


def test_an_attestation_whose_method_counts_in_no_option_is_not_accepted(user, tenant):
    with_pin_and_codes(user)
    vid = start(user, "test_codes_attest")
    r = attest(user, vid, tenant.attest("alice", vid, "id_document"))
    assert r.json["accepted"] is False and r.json["satisfied"] == []


def test_no_code_is_spent_on_an_option_the_method_closed(user, tenant):
    codes = with_pin_and_codes(user)
    vid = start(user, "test_attest_beside")
    assert attest(user, vid, tenant.attest("alice", vid, "id_document")).json["accepted"]
    # recovery_code + attested can no longer complete: the code is refused, not spent.
    r = user.prove(vid, {"factor": "recovery_code", "code": codes[0]})
    assert r.status_code == 422 and r.json["error"] == "factor_not_allowed", r.json
    assert [f["remaining"] for f in user.factors().json["factors"] if "remaining" in f] == [10]
    assert user.prove_factor(vid, "knowledge").json["status"] == "satisfied"


# -- per-tenant limits and the spike alert -------------------------------------------------------
@pytest.mark.parametrize("limits", [(("attestations", "3/minute"),)])
def test_attestations_are_rate_limited_per_tenant(user, tenant):
    answers = []
    for _ in range(4):
        vid = start(user, "test_attest")
        answers.append(attest(user, vid, "garbage").status_code)
    assert answers == [200, 200, 200, 429]


@pytest.mark.parametrize("limits", [(("attestation_alert", "2/hour"),)])
def test_a_spike_of_accepted_attestations_raises_an_operator_alert(user, ctx, tenant):
    from sqlalchemy import select

    from service.storage.tables import webhook_outbox
    from service.usecases.notify import register

    register(ctx, tenant.client_id, "https://tenant.example/idv-events")

    def accept_one():
        vid = start(user, "test_attest")
        assert attest(user, vid, tenant.attest("alice", vid)).json["accepted"] is True

    accept_one()
    attest(user, start(user, "test_attest"), "garbage")  # refused ones do not count
    accept_one()
    assert audit_rows(ctx, "operator.alert") == []
    accept_one()  # the third within the hour: past the threshold of 2
    alerts = audit_rows(ctx, "operator.alert")
    assert [a.outcome for a in alerts] == ["attestation_spike"]
    assert alerts[0].client_id == tenant.client_id
    with ctx.engine.connect() as conn:
        events = [json.loads(r.payload) for r in conn.execute(select(webhook_outbox))]
    alerts = [e for e in events if e["type"] == "operator.alert"]
    assert [e["detail"] for e in alerts] == [{"why": "attestation_spike"}]
