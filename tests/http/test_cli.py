"""The ``idv`` command: policy check/explain, signing-key rotation, subject unlock."""

from __future__ import annotations

import jwt
import pytest
from click.testing import CliRunner

from service.cli import cli
from service.context import ServiceContext
from service.settings import packaged_policy_file


@pytest.fixture
def env(settings):
    return {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
    }


def run(args, env=None):
    return CliRunner().invoke(cli, args, env=env or {}, catch_exceptions=False)


def test_policy_check_accepts_default_and_names_the_bad_key(tmp_path):
    ok = run(["policy", "check", str(packaged_policy_file())])
    assert ok.exit_code == 0 and "13 actions" in ok.output
    bad = tmp_path / "bad.toml"
    bad.write_text('version = 1\n[actions.login]\nacr = "aal1"\noptions = [["sms"]]\nlimt = 1\n')
    from service.domain.errors import PolicyError

    with pytest.raises(PolicyError) as err:
        run(["policy", "check", str(bad)])
    assert err.value.key == "actions.login.limt" and str(bad) in str(err.value)


def test_policy_explain_shows_rule_and_signal():
    out = run(["policy", "explain", "login", "--factors", "sms,totp", "--signal", "sim_swap=2d"])
    assert out.exit_code == 0
    assert "options: " in out.output and "recent_sim_change" in out.output
    assert "sms_blocked_after_sim_change" in out.output


def test_rotate_signing_keeps_old_key_published(settings, env, tmp_path):
    import shutil

    key_file = tmp_path / "rot-keys.json"
    shutil.copy(settings.key_file, key_file)
    env = dict(env, IDV_KEY_FILE=str(key_file))
    from dataclasses import replace

    before = ServiceContext.build(replace(settings, key_file=key_file))
    old_kid = before.keys.active_signing_key.kid
    from service.domain import assertions

    now = before.clock()

    def sign(keys, audience: str, jti: str) -> str:
        return assertions.issue(
            keys,
            issuer="idv",
            audience=audience,
            subject="s",
            action="login",
            acr="aal1",
            amr=["sms"],
            auth_time=now,
            now=now,
            ttl=300,
            jti=jti,
        )

    token = sign(before.keys, "cl_x", "vf_1")
    out = run(["keys", "rotate-signing"], env)
    assert out.exit_code == 0, out.output
    after = ServiceContext.build(replace(settings, key_file=key_file))
    assert after.keys.active_signing_key.kid != old_kid
    kids = [k["kid"] for k in assertions.jwks(after.keys)["keys"]]
    assert old_kid in kids and after.keys.active_signing_key.kid in kids
    # An assertion signed before the rotation still verifies against the new JWKS.
    jwk = jwt.PyJWKSet.from_dict(assertions.jwks(after.keys))[old_kid]
    assert jwt.decode(token, jwk.key, algorithms=["ES256"], audience="cl_x")["sub"] == "s"
    new_header = jwt.get_unverified_header(sign(after.keys, "a", "j"))
    assert new_header["kid"] == after.keys.active_signing_key.kid


def test_unlock_ends_lockout(user, ctx, env, http, auth):
    from service.storage import subjects as store

    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    with ctx.engine.begin() as conn:
        subject = store.get(conn, client_id, "alice")
        store.lock(conn, subject.pk, ctx.clock().replace(year=2099))
    v = user.start("login").json
    assert v["status"] == "denied" and "subject_locked" in v["reasons"]
    out = run(["subjects", "unlock", client_id, "alice", "--operator", "desk-7"], env)
    assert out.exit_code == 0, out.output
    assert user.start("login").json["status"] == "pending"


def test_data_key_rotation_keeps_every_factor_usable(user, settings, env, tmp_path, http, auth):
    import shutil
    from dataclasses import replace

    from service.app import create_app
    from tests.http.flow import User

    key_file = tmp_path / "rot-data.json"
    shutil.copy(settings.key_file, key_file)
    rotated_settings = replace(settings, key_file=key_file)
    # Enrol through an app that uses the copied key file.
    ctx1 = ServiceContext.build(rotated_settings)
    app1 = create_app(context=ctx1)
    u = User(app1.test_client(), auth, subject_id="carol", clock=user.clock, sms_file=user.sms_file)
    assert u.put(phone="+8613700137000").status_code == 201
    u.add_totp()
    u.add_pin(assertion=u.step_up("enroll_factor", ["totp"]))
    old_kid = ctx1.keys.active_data_kid
    out = run(["keys", "rotate"], dict(env, IDV_KEY_FILE=str(key_file)))
    assert out.exit_code == 0, out.output
    assert "re-encrypted" in out.output
    # A restarted instance with the new key ring: every factor and the phone still work.
    ctx2 = ServiceContext.build(rotated_settings)
    assert ctx2.keys.active_data_kid != old_kid
    with ctx2.engine.connect() as conn:
        from sqlalchemy import select

        from service.storage.tables import factors, subjects

        cts = [r[0] for r in conn.execute(select(factors.c.secret_ct))]
        cts += [r[0] for r in conn.execute(select(subjects.c.phone_ct))]
    assert cts and all(ct.startswith(f"v1:{ctx2.keys.active_data_kid}:") for ct in cts)
    u.http = create_app(context=ctx2).test_client()
    u.step_up("password_reset", ["totp", "knowledge"])
    vid = u.start("login").json["verification_id"]
    assert u.challenge(vid, "sms").json["sent_to"] == "+86 137****7000"


@pytest.mark.parametrize(
    "args",
    [
        [b"clients", b"create", b"bad\xffname"],
        [b"subjects", b"unlock", b"cl_x", b"alice", b"--operator", b"\xe9ve"],  # Latin-1 bytes
    ],
)
def test_arguments_that_are_not_utf8_are_one_line_never_a_traceback(env, args):
    """Undecodable bytes reach Python as lone surrogates, which no database stores: this was a
    UnicodeEncodeError traceback from the INSERT."""
    import os
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable.encode(), b"-m", b"service.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr == "idv: command-line arguments must be UTF-8 text without NUL characters\n"
