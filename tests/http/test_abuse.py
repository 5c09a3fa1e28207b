"""Throttling and lockout through HTTP (RFC 4226 §7.3, NIST SP 800-63B-4 throttling, T1)."""

from __future__ import annotations

from tests.http.flow import PIN


def _fail(user, vid, factor):
    body = {"factor": factor, "code": "000000"}
    return user.prove(vid, body)


def test_totp_brute_force_gets_429_before_the_11th_guess(user):
    user.add_totp()
    statuses = []
    for _ in range(3):  # three verifications, five wrong codes each at most
        vid = user.start("login").json["verification_id"]
        for _ in range(5):
            r = _fail(user, vid, "totp")
            statuses.append(r.status_code)
            if r.status_code != 200 or r.json["status"] != "pending":
                break
    assert statuses.count(200) == 10
    assert statuses[-1] == 429
    # The right code is refused too while throttled: the limit is checked before the verifier.
    vid = user.start("login").json["verification_id"]
    r = user.prove(vid, {"factor": "totp", "code": user.totp_code()})
    assert r.status_code == 429 and r.json["error"] == "rate_limited"
    assert 1 <= int(r.headers["Retry-After"]) <= 15 * 60


def test_repeated_locked_verifications_lock_the_subject(user):
    user.add_totp()
    spare = user.start("login").json["verification_id"]  # opened before the lockout
    for factor in ("totp", "totp", "sms"):
        vid = user.start("login").json["verification_id"]
        if factor == "sms":
            user.challenge(vid, "sms")
        for _ in range(5):
            r = _fail(user, vid, factor)
        assert r.json["status"] == "locked"
    v = user.start("login").json
    assert v["status"] == "denied" and v["options"] == [] and "subject_locked" in v["reasons"]
    from service.domain.clock import parse_rfc3339

    held = parse_rfc3339(v["held_until"]) - parse_rfc3339(v["expires_at"])
    assert 4 * 60 <= held.total_seconds() <= 15 * 60  # 15 min lock vs the 10 min lifetime
    r = user.prove(spare, {"factor": "totp", "code": user.totp_code()})
    assert r.status_code == 429 and 0 < int(r.headers["Retry-After"]) <= 15 * 60
    user.advance(16 * 60)  # lockout_for(3) = 15 minutes
    assert user.start("login").json["status"] == "pending"


def test_sms_sends_limited_per_phone(user):
    codes = []
    for _ in range(6):
        vid = user.start("login").json["verification_id"]
        codes.append(user.challenge(vid, "sms").status_code)
    assert codes == [200] * 5 + [429]


def test_verification_creation_limited_per_ip(user):
    results = [user.start("login", ip="198.51.100.9").status_code for _ in range(121)]
    assert results[:120] == [201] * 120 and results[120] == 429
    assert user.start("login", ip="198.51.100.10").status_code == 201


def test_limits_are_configurable(settings, clock):
    """IDV_RATE_LIMITS overrides a default; a bad value stops start-up naming the variable."""
    from dataclasses import replace

    import pytest

    from service.app import create_app
    from service.context import ServiceContext
    from service.domain.errors import ConfigError
    from service.settings import Settings
    from service.usecases.clients import create_client
    from tests.http.flow import User

    tight = replace(settings, rate_limits=(("sms_sends", "2/10minutes"),))
    ctx = ServiceContext.build(tight)
    key = create_client(ctx, "t", ["verify"])[1]
    u = User(create_app(context=ctx).test_client(), {"Authorization": f"Bearer {key}"}, clock=clock)
    u.put()
    codes = [
        u.challenge(u.start("login").json["verification_id"], "sms").status_code for _ in range(3)
    ]
    assert codes == [200, 200, 429]
    for bad in ("sms_sends", "sms_sends=lots", "nonsense=1/minute"):
        with pytest.raises(ConfigError) as err:
            Settings.from_env({"IDV_DATA_DIR": str(settings.data_dir), "IDV_RATE_LIMITS": bad})
        assert err.value.variable == "IDV_RATE_LIMITS"
    ctx.engine.dispose()


def test_a_pin_flood_gets_429_at_once_beyond_the_argon2_gate(user, ctx, monkeypatch):
    """One PIN check hashing and three waiting per argon2 slot; one more is refused at once with
    429, before any database work (its verification is untouched), and the admitted ones all
    complete when the slot frees."""
    import threading
    import time

    from service.context import Argon2Gate

    user.add_pin()
    assert ctx.settings.argon2_concurrency == 1
    admitted = Argon2Gate.ADMITTED_PER_SLOT
    vids = [user.start("view_personal_data").json["verification_id"] for _ in range(admitted + 1)]
    hashing, release = threading.Event(), threading.Event()
    real_verify = ctx.hasher.verify

    def held_verify(*args):  # type: ignore[no-untyped-def]
        if not hashing.is_set():
            hashing.set()
            release.wait(5)
        return real_verify(*args)

    monkeypatch.setattr(ctx.hasher, "verify", held_verify)
    results: dict[str, int] = {}

    def prove(vid: str) -> None:
        results[vid] = user.prove(vid, {"factor": "knowledge", "secret": PIN}).status_code

    threads = [threading.Thread(target=prove, args=(vid,)) for vid in vids[:admitted]]
    threads[0].start()
    assert hashing.wait(5)
    for thread in threads[1:]:
        thread.start()
    time.sleep(0.1)  # three PIN checks now wait for the slot
    started = time.monotonic()
    refused = user.prove(vids[-1], {"factor": "knowledge", "secret": PIN})
    elapsed = time.monotonic() - started
    release.set()
    for thread in threads:
        thread.join(10)
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
    assert refused.headers["Retry-After"] == "1" and elapsed < 0.4
    assert results == {vid: 200 for vid in vids[:admitted]}
    # Nothing was recorded for the refused one: still pending, and the right PIN passes now.
    again = user.prove(vids[-1], {"factor": "knowledge", "secret": PIN})
    assert again.status_code == 200 and again.json["accepted"] is True
