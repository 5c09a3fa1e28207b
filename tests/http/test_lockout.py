"""Subject lockout by failed proofs, however they are spread (NIST SP 800-63B-4 throttling,
RFC 4226 §7.3; issue 20 items 1 and 8).

The lockout used to count *locked* verifications: 4 wrong guesses per verification never
locked anything, and an attacker kept ``subject_failures`` (480 guesses a day). It now counts
the subject's failed proofs in the database over 24 h: the 15th locks, wherever it falls."""

from __future__ import annotations

import time

import pyotp

from service.domain.clock import parse_rfc3339

GAP = 15 * 60  # between verifications: 4 failures per 15 min stays under every window


def _wrong(user) -> str:
    """A code that no accepted step matches (RFC 6238 §5.2: ±1 step)."""
    totp = pyotp.TOTP(user.totp_secret)
    valid = {totp.at(time.time() + drift) for drift in (-60, -30, 0, 30, 60)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def _guess(user, vid):
    return user.prove(vid, {"factor": "totp", "code": _wrong(user)})


def _four_per_verification(user, failures: int) -> list[int]:
    """``failures`` wrong codes, four per verification (never locking one), spaced in time."""
    statuses: list[int] = []
    while len(statuses) < failures:
        vid = user.start("login").json["verification_id"]
        for _ in range(min(4, failures - len(statuses))):
            r = _guess(user, vid)
            statuses.append(r.status_code)
            assert r.status_code != 200 or r.json["status"] == "pending", r.json
        user.advance(GAP)
    return statuses


def _locked(user) -> bool:
    v = user.start("login").json
    return v["status"] == "denied" and "subject_locked" in v["reasons"]


def test_four_guesses_per_verification_lock_the_subject_at_the_15th(user):
    user.add_totp()
    assert _four_per_verification(user, 14) == [200] * 14
    assert not _locked(user)
    vid = user.start("login").json["verification_id"]
    r = _guess(user, vid)
    assert r.status_code == 200 and r.json["status"] == "pending"  # the verification's 1st
    v = user.start("login").json
    assert v["status"] == "denied" and "subject_locked" in v["reasons"]
    held = parse_rfc3339(v["held_until"]) - parse_rfc3339(v["expires_at"])
    assert 4 * 60 <= held.total_seconds() <= 15 * 60  # 15 min lock vs the 10 min lifetime
    # Even the right code of a verification opened before is refused while locked.
    r = user.prove(vid, {"factor": "totp", "code": user.totp_code()})
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 15 * 60


def test_after_the_lock_five_more_failures_lock_it_twice_as_long(user):
    user.add_totp()
    _four_per_verification(user, 15)
    user.advance(16 * 60)
    assert not _locked(user)
    _four_per_verification(user, 4)  # 19: no mark
    assert not _locked(user)
    _four_per_verification(user, 1)  # 20: 30 minutes
    v = user.start("login").json
    assert "subject_locked" in v["reasons"]
    user.advance(20 * 60)  # _four_per_verification moved 15 min on after the 20th
    assert not _locked(user)


def _flush_rate_limits(ctx, redis_url) -> None:
    """What a Redis restarted without persistence holds: no counter at all."""
    if redis_url:
        import redis

        client = redis.Redis.from_url(redis_url)
        client.flushdb()
        client.close()
    else:
        ctx.limits._storage.reset()  # the in-process storage, restarted


def test_a_redis_restart_does_not_reset_the_lockout(user, ctx, redis_url):
    """Counters in a Redis without persistence start from zero after a restart; the lockout
    counts from the database, so the 15th failure still locks, and a lock stays."""
    user.add_totp()
    _four_per_verification(user, 14)
    _flush_rate_limits(ctx, redis_url)
    vid = user.start("login").json["verification_id"]
    assert _guess(user, vid).json["accepted"] is False
    assert _locked(user)
    _flush_rate_limits(ctx, redis_url)
    assert _locked(user)


def test_idv_subjects_unlock_also_forgets_the_failures_it_counted(user, settings, http, auth):
    """After the desk unlocks a subject, its next failure is its first: no lock at the 16th."""
    from click.testing import CliRunner

    from service.cli import cli

    user.add_totp()
    _four_per_verification(user, 14)
    _guess(user, user.start("login").json["verification_id"])
    assert _locked(user)
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
    }
    if settings.redis_url:
        env["IDV_REDIS_URL"] = settings.redis_url
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    out = CliRunner().invoke(
        cli, ["subjects", "unlock", client_id, "alice", "--operator", "d7"], env=env
    )
    assert out.exit_code == 0, out.output
    user.advance(1)  # the unlock's moment lies behind the verifications opened next
    assert not _locked(user)
    _four_per_verification(user, 14)
    assert not _locked(user)
    _guess(user, user.start("login").json["verification_id"])
    assert _locked(user)


def test_a_policy_that_allows_100_failures_a_day_stops_start_up(settings, tmp_path):
    """NIST SP 800-63B-4: no more than 100 consecutive failed attempts. A failure limit of 12
    puts the lockout marks at 36, 48, ...: 108 failed proofs fit in a day, so idv refuses it."""
    from dataclasses import replace

    import pytest

    from service.context import ServiceContext
    from service.domain.errors import ConfigError

    source = settings.policy_file.read_text()
    assert "failure_limit = 5 " in source
    for limit, refused in ((11, False), (12, True)):
        policy = tmp_path / f"limit-{limit}.toml"
        policy.write_text(source.replace("failure_limit = 5 ", f"failure_limit = {limit} ", 1))
        if not refused:
            ServiceContext.build(replace(settings, policy_file=policy)).engine.dispose()
            continue
        with pytest.raises(ConfigError) as err:
            ServiceContext.build(replace(settings, policy_file=policy))
        assert err.value.variable == "IDV_POLICY_FILE"
        assert "108 failed proofs a day" in err.value.problem
