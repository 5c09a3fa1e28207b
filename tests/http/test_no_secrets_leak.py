"""T4 "desensitise": after a full flow, neither the logs nor a dump of the database hold a phone
number, an SMS code, a TOTP secret or code, or a PIN in clear (PIPL art. 51, ASVS 6.5.2)."""

from __future__ import annotations

import json
import logging

from sqlalchemy import select

from service.storage.tables import metadata
from tests.http.flow import PIN


def test_full_flow_leaves_no_secret_in_logs_or_database(
    user, ctx, http, auth, carrier_auth, caplog
):
    caplog.set_level(logging.DEBUG)
    seen: set[str] = {PIN, "13800138000", "8613800138000"}
    user.add_totp()
    seen.add(user.totp_secret)
    assertion = user.step_up("enroll_factor", ["totp"])
    user.add_pin(assertion=assertion)
    user.add_device(assertion=user.step_up("enroll_factor", ["totp", "knowledge"]))
    for action, factors in [
        ("login", ["sms"]),
        ("password_reset", ["device", "knowledge"]),
        ("view_personal_data", ["totp", "knowledge"]),
    ]:
        user.step_up(action, factors)
    seen.update(json.loads(line)["code"] for line in user.sms_file.read_text().splitlines())
    vid = user.start("login").json["verification_id"]
    user.prove(vid, {"factor": "knowledge", "secret": "wrong-pin-9"})  # a failure path too
    http.post(
        "/v1/carrier-events",
        headers=carrier_auth,
        json={"phone": "+8613800138000", "type": "sim_swap", "occurred_at": "2026-01-01T00:00:00Z"},
    )
    http.put("/v1/subjects/alice", json={"phone": "bad"}, headers=auth)

    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "POST /v1/verifications/<verification_id>/proofs 200" in logs  # logging is on
    dump = []
    with ctx.engine.connect() as conn:
        for table in metadata.sorted_tables:
            dump += [repr(tuple(row)) for row in conn.execute(select(table))]
    dump_text = "\n".join(dump)
    assert "v1:" in dump_text  # ciphertexts are there
    for secret in seen:
        assert secret not in logs, secret
        assert secret not in dump_text, secret
    # Every code was 6 digits and every one of them is absent, not just the last.
    assert len([s for s in seen if s.isdigit() and len(s) == 6]) >= 2
