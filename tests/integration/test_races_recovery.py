"""Single use of a recovery code and of an attestation ``jti`` under a 50-way race.

Run on SQLite (writers serialised by BEGIN IMMEDIATE) and PostgreSQL (the conditional UPDATE of
the code's row and the primary key of (client_id, jti) decide). NIST SP 800-63B-4 look-up
secrets and ASVS 6.5.1: accepted once, whatever the concurrency.
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.http.recovery_flow import Tenant, client_id_of, register_key, settings_with_test_actions
from tests.integration.test_races import WORKERS, outcome, run_together


@pytest.fixture
def settings(settings, tmp_path):
    return settings_with_test_actions(settings, tmp_path)


def _prove(vid, body, auth):
    return lambda c: c.post(f"/v1/verifications/{vid}/proofs", json=body, headers=auth)


def _tally(responses):
    counts = Counter(outcome(r) for r in responses)
    assert all(r.status_code < 500 for r in responses), counts
    assert counts["satisfied accepted=True"] == 1, counts
    # The others were refused like any wrong proof (or throttled once failures piled up).
    assert set(counts) <= {
        "satisfied accepted=True",
        "pending accepted=False",
        "429 rate_limited",
    }, counts
    assert len([r for r in responses if r.get_json().get("assertion")]) == 1
    return counts


def test_one_recovery_code_on_50_verifications_is_accepted_once(app, user, auth):
    code = user.enroll({"type": "recovery_code"}).json["codes"][0]
    vids = [user.start("test_codes").json["verification_id"] for _ in range(WORKERS)]
    body = {"factor": "recovery_code", "code": code}
    _tally(run_together(app, [_prove(v, body, auth) for v in vids]))
    listed = user.factors().json["factors"]
    assert [f["remaining"] for f in listed if f["type"] == "recovery_code"] == [9]


def test_one_attestation_jti_on_50_verifications_is_accepted_once(
    app, user, auth, http, settings, tmp_path
):
    tenant = Tenant.new(client_id_of(http, auth))
    out = register_key(settings, tenant.client_id, tenant.public_pem(), tmp_path)
    tenant.kid = out.output.strip().splitlines()[-1]
    vids = [user.start("test_attest").json["verification_id"] for _ in range(WORKERS)]
    # Fifty valid attestations, each bound to its own verification, all with one jti.
    tokens = {v: tenant.attest("alice", v, jti="one-check-at-the-counter") for v in vids}
    responses = run_together(
        app, [_prove(v, {"factor": "attested", "attestation": tokens[v]}, auth) for v in vids]
    )
    _tally(responses)
