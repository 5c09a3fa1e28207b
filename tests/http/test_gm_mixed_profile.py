"""Switching a running deployment from ``intl`` to ``gm`` (API.md, "Commercial-cryptography
profile"): values written under ``intl`` stay readable, keyed lookups are computed under every
profile that has written values until ``idv keys rotate`` rewrites them, and a SIM swap
reported after the switch still reaches every subject (THREATS.md T1).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import jwt
import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from service.app import create_app
from service.cli import cli
from service.context import ServiceContext
from service.crypto import profile
from service.crypto.keyring import KeyRing, adopt_profile, write_key_file
from service.storage import audit
from service.storage.db import dispose
from service.storage.tables import audit_log, carrier_events, factors, subjects
from service.usecases.clients import create_client
from tests.http.flow import PHONE, User, carrier_event, now_rfc3339
from tests.http.test_gm_profile import verify_with_gmalg


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    """An ``intl`` key ring of this test's own: the switch writes to it."""
    path = tmp_path / "keys" / "keys.json"
    write_key_file(path, KeyRing.generate())
    return path


class Restarted:
    """The same database and key file served again under another profile."""

    def __init__(self, settings, crypto: str, clock) -> None:  # type: ignore[no-untyped-def]
        self.settings = replace(settings, crypto_profile=crypto)
        adopt_profile(self.settings.key_file, None, crypto)  # what `idv serve` does at start
        self.ctx = ServiceContext.build(self.settings)
        app = create_app(context=self.ctx)
        app.config["TESTING"] = True
        self.http = app.test_client()
        self.clock = clock

    def user(self, auth: dict, subject_id: str = "alice") -> User:
        sms = Path(self.settings.sms_sender.split(":", 1)[1])
        return User(self.http, auth, subject_id=subject_id, sms_file=sms, clock=self.clock)

    def close(self) -> None:
        dispose(self.ctx.engine)


def idv(settings, crypto: str, *args: str) -> str:  # type: ignore[no-untyped-def]
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
        "IDV_CRYPTO_PROFILE": crypto,
    }
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def sensitive_reasons(user: User) -> list[str]:
    r = user.start("payment_password_reset")
    assert r.status_code == 201, r.json
    return r.json["reasons"]


def test_intl_values_stay_usable_under_gm_and_rotate_moves_them_over(
    user: User, http, auth, settings, clock, ctx
) -> None:
    # Written under intl: subject, TOTP, PIN, an ES256 assertion, API keys (SHA-256).
    user.add_totp()
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    old_assertion = user.step_up("enroll_factor", ["totp", "knowledge"])
    old_kid = jwt.get_unverified_header(old_assertion)["kid"]
    # A lost SIM reported under intl is stored under the intl hash only.
    intl_carrier = {"Authorization": f"Bearer {create_client(ctx, 'c', ['carrier'])[1]}"}
    assert carrier_event(http, intl_carrier, PHONE, "sim_lost", now_rfc3339()).status_code == 202
    assert "sim_lost" in sensitive_reasons(user)

    gm = Restarted(settings, profile.GM, clock)
    try:
        ring = json.loads(settings.key_file.read_text())
        assert ring["lookup_profiles"] == ["gm", "intl"]
        alice = gm.user(auth)
        # The old API key (SHA-256) still authenticates; the old key stays in the JWKS.
        assert gm.http.get("/v1/client", headers=auth).status_code == 200
        jwks = gm.http.get("/.well-known/jwks.json").json
        assert {k["kid"]: k["alg"] for k in jwks["keys"]}[old_kid] == "ES256"
        old_key = jwt.PyJWKSet.from_dict({"keys": [k for k in jwks["keys"] if k["alg"] != "SM2"]})
        jwt.decode(
            old_assertion, old_key[old_kid], algorithms=["ES256"], options={"verify_aud": False}
        )
        # ... and idv accepts it where it consumes one (written under intl, redeemed under gm).
        assert alice.add_device("ES256", assertion=old_assertion)["status"] == "active"
        # The same phone again is no change (its intl hash is recognised): no step-up needed.
        assert alice.put().status_code == 200
        # A SIM swap reported under gm reaches alice, whose phone hash is still intl (T1).
        carrier = {"Authorization": f"Bearer {create_client(gm.ctx, 'carrier', ['carrier'])[1]}"}
        assert carrier_event(gm.http, carrier, PHONE, "sim_swap", now_rfc3339()).status_code == 202
        assert "recent_sim_change" in sensitive_reasons(alice)
        # A subject created under gm on the same phone sees it too.
        bob = gm.user(auth, "bob")
        assert bob.put().status_code == 201
        assert "recent_sim_change" in sensitive_reasons(bob)
        # New assertions are SM2 and verify with an independent SM2 implementation.
        alice.totp_secret, alice.totp_factor = user.totp_secret, user.totp_factor
        token = alice.step_up("login", ["totp"])
        jwks = gm.http.get("/.well-known/jwks.json").json
        assert verify_with_gmalg(token, jwks)["sub"] == "alice"
    finally:
        gm.close()

    output = idv(settings, profile.GM, "keys", "rotate")
    assert "rewrote 1 keyed lookup(s)" in output  # alice; bob was written under gm

    again = Restarted(settings, profile.GM, clock)
    try:
        ring = KeyRing.from_json(settings.key_file.read_text(), profile.GM)
        assert ring.lookup_profiles == ["gm"]
        assert ring.data_key_alg(ring.active_data_kid) == profile.SM4_GCM
        with again.ctx.engine.connect() as conn:
            hashes = set(conn.execute(select(subjects.c.phone_hash)).scalars())
            secrets = list(conn.execute(select(factors.c.secret_ct)).scalars())
            events = conn.execute(select(carrier_events.c.phone_hash)).scalars().all()
        assert hashes == {ring.lookup_hash("phone", PHONE)}
        assert {KeyRing.key_id_of(ct) for ct in secrets} == {ring.active_data_kid}
        assert ring.lookup_hash("phone", PHONE) in events
        alice = again.user(auth)
        alice.totp_secret, alice.totp_factor = user.totp_secret, user.totp_factor
        # After the rewrite both SIM events still hold alice's sensitive actions (the intl-only
        # one was copied under her new hash) ...
        assert {"recent_sim_change", "sim_lost"} <= set(sensitive_reasons(alice))
        # ... her TOTP secret (re-encrypted under SM4-GCM) still works ...
        assert alice.step_up("login", ["totp"])
        # ... and the old API key still authenticates (hashes stay until a key is reissued).
        assert again.http.get("/v1/client", headers=auth).status_code == 200
        # The audit trail holds SHA-256 and SM3 entries; both verify, and an edit shows.
        assert "audit chain OK" in idv(settings, profile.GM, "audit", "verify")
        with again.ctx.engine.begin() as conn:
            rows = audit.entries(conn)
            kinds = {audit.entry_hash(e, profile.GM) == e["hash"] for e in rows}
            assert kinds == {True, False}
            assert audit.verify_chain(conn, ring.derived_keys("audit-mac")) == []
        with again.ctx.engine.begin() as conn:
            last = rows[-1]["id"]
            conn.execute(update(audit_log).where(audit_log.c.id == last).values(outcome="x"))
        with again.ctx.engine.begin() as conn:
            assert "hash mismatch" in audit.verify_chain(conn, ring.derived_keys("audit-mac"))[0]
    finally:
        again.close()


def test_rotate_signing_to_sm2_under_intl(user: User, settings, auth, clock) -> None:
    es256 = user.step_up("login", ["sms"])
    output = idv(settings, profile.INTL, "keys", "rotate-signing", "--alg", "SM2")
    assert "(SM2)" in output
    restarted = Restarted(settings, profile.INTL, clock)
    try:
        jwks = restarted.http.get("/.well-known/jwks.json").json
        assert [k["alg"] for k in jwks["keys"]] == ["ES256", "SM2"]
        assert jwt.get_unverified_header(es256)["kid"] == jwks["keys"][0]["kid"]
        token = restarted.user(auth).step_up("login", ["sms"])
        assert verify_with_gmalg(token, jwks)["action"] == "login"
    finally:
        restarted.close()
