"""Rate limits on Redis: counters shared by every instance, and a fast failure when Redis is away.

Uses database 14 (``IDV_TEST_RATELIMIT_REDIS_URL`` to change it), flushed around each test.
"""

from __future__ import annotations

import contextlib
import os
import time

import pytest
import redis
import time_machine

from service.domain.errors import RateLimited, ServiceUnavailable
from service.ratelimit import RateLimits

REDIS_URL = os.environ.get("IDV_TEST_RATELIMIT_REDIS_URL", "redis://127.0.0.1:6379/14")
DOWN_URL = "redis://127.0.0.1:1/0"  # nothing listens on port 1
T0 = 1_700_000_000.0
SUBJECT, FACTOR = "sub_3f9a", "totp"


@pytest.fixture
def redis_url():
    """A flushed Redis database; the test is skipped when Redis is unreachable."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        pytest.skip(f"Redis not reachable at {REDIS_URL}: {exc}")
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def clock():
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


def fail_proofs(rl: RateLimits, n: int, **kw) -> None:
    for _ in range(n):
        rl.hit("failed_proofs", SUBJECT, FACTOR, **kw)


def test_eleventh_failed_proof_is_refused(redis_url, clock):
    rl = RateLimits(redis_url)
    fail_proofs(rl, 10)
    with pytest.raises(RateLimited) as refused:
        rl.hit("failed_proofs", SUBJECT, FACTOR)
    assert 0 < refused.value.retry_after <= 15 * 60
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 0


def test_two_instances_share_every_counter(redis_url, clock):
    first, second = RateLimits(redis_url), RateLimits(redis_url)
    assert first.shared and second.shared
    fail_proofs(first, 6)
    fail_proofs(second, 4)
    for rl in (first, second):
        with pytest.raises(RateLimited):
            rl.check("failed_proofs", SUBJECT, FACTOR)
    for _ in range(5):
        first.hit("sms_sends", "phone_hmac")
    with pytest.raises(RateLimited):
        second.hit("sms_sends", "phone_hmac")


def test_retry_after_and_expiry_follow_the_moving_window(redis_url, clock):
    rl = RateLimits(redis_url)
    rl.hit("failed_proofs", SUBJECT, FACTOR)
    clock.shift(600)
    fail_proofs(rl, 9)
    with pytest.raises(RateLimited) as refused:
        rl.check("failed_proofs", SUBJECT, FACTOR)
    assert refused.value.retry_after == 301
    clock.shift(301)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 1
    rl.hit("failed_proofs", SUBJECT, FACTOR)  # retrying after Retry-After succeeds


def test_per_action_override_wins(redis_url, clock):
    rl = RateLimits(redis_url)
    strict = {"failed_proofs": "3/15minutes"}
    fail_proofs(rl, 3, action_limits=strict)
    with pytest.raises(RateLimited):
        rl.hit("failed_proofs", SUBJECT, FACTOR, action_limits=strict)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 7


def test_stricter_override_does_not_lose_failures_counted_for_the_default(redis_url, clock):
    # Both share one list; Redis trims it to the limit in force, which must only drop entries
    # that already left the window.
    rl = RateLimits(redis_url)
    fail_proofs(rl, 2)
    fail_proofs(rl, 1, action_limits={"failed_proofs": "3/15minutes"})
    fail_proofs(rl, 7)
    with pytest.raises(RateLimited):
        rl.check("failed_proofs", SUBJECT, FACTOR)


def test_different_keys_are_independent(redis_url, clock):
    rl = RateLimits(redis_url)
    fail_proofs(rl, 10)
    assert rl.remaining("failed_proofs", SUBJECT, "sms") == 10
    assert rl.remaining("failed_proofs", "sub_other", FACTOR) == 10
    assert (
        RateLimits(redis_url, key_prefix="other").remaining("failed_proofs", SUBJECT, FACTOR) == 10
    )


def test_reset_by_one_instance_frees_the_other(redis_url, clock):
    first, second = RateLimits(redis_url), RateLimits(redis_url)
    fail_proofs(first, 10)
    second.reset("failed_proofs", SUBJECT, FACTOR)
    assert first.remaining("failed_proofs", SUBJECT, FACTOR) == 10


def test_keys_carry_the_prefix_and_no_clear_values(redis_url):
    rl = RateLimits(redis_url)
    rl.hit("ip", "2001:db8::1")
    client = redis.Redis.from_url(redis_url)
    try:
        keys = [key.decode() for key in client.keys("*")]
    finally:
        client.close()
    assert len(keys) == 1
    assert "idv:ip:2001%3Adb8%3A%3A1/60" in keys[0]


def test_healthy_when_redis_answers(redis_url):
    assert RateLimits(redis_url).healthy()


# -- Redis away: no Redis server needed ---------------------------------------------------------


def test_construction_does_not_connect():
    rl = RateLimits(DOWN_URL)
    assert rl.shared


@pytest.mark.parametrize("operation", ["check", "hit", "take", "record", "remaining", "reset"])
def test_redis_down_is_service_unavailable_quickly(operation):
    rl = RateLimits(DOWN_URL)
    started = time.monotonic()
    with pytest.raises(ServiceUnavailable) as down:
        getattr(rl, operation)("failed_proofs", SUBJECT, FACTOR)
    assert time.monotonic() - started < 3
    assert down.value.status == 503
    assert "127.0.0.1" not in down.value.message  # details go to the log, not to callers


def test_redis_down_is_unhealthy_quickly():
    rl = RateLimits("redis://:secret@127.0.0.1:1/0")
    started = time.monotonic()
    assert not rl.healthy()
    assert time.monotonic() - started < 3


def test_redis_down_logs_without_the_password(caplog):
    rl = RateLimits("redis://:hunter2@127.0.0.1:1/0")
    with pytest.raises(ServiceUnavailable):
        rl.check("ip", "10.0.0.1")
    assert "rate limit storage" in caplog.text
    assert "hunter2" not in caplog.text


def test_fifty_takes_from_two_instances_at_once_count_exactly_the_limit(redis_url):
    """Check and count in one script: no interleaving of two instances lets an 11th through."""
    import threading

    instances = [RateLimits(redis_url), RateLimits(redis_url)]
    barrier, won = threading.Barrier(50), []

    def race(rl: RateLimits) -> None:
        barrier.wait()
        with contextlib.suppress(RateLimited):
            won.append(rl.take("failed_proofs", SUBJECT, FACTOR))

    threads = [threading.Thread(target=race, args=(instances[i % 2],)) for i in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 10


def test_given_back_by_one_instance_is_free_for_the_other(redis_url, clock):
    first, second = RateLimits(redis_url), RateLimits(redis_url)
    taken = [first.take("failed_proofs", SUBJECT, FACTOR) for _ in range(10)]
    with pytest.raises(RateLimited):
        second.take("failed_proofs", SUBJECT, FACTOR)
    first.give_back(taken[:1])  # equal timestamps under a frozen clock: exactly one goes
    assert second.remaining("failed_proofs", SUBJECT, FACTOR) == 1
    second.take("failed_proofs", SUBJECT, FACTOR)
    with pytest.raises(RateLimited):
        first.take("failed_proofs", SUBJECT, FACTOR)
    clock.shift(15 * 60 + 1)  # and the window moves on as limits' own entries do
    assert second.remaining("failed_proofs", SUBJECT, FACTOR) == 10


def test_take_all_counts_all_or_none_in_one_step(redis_url, clock):
    rl = RateLimits(redis_url)
    for _ in range(20):
        rl.hit("subject_failures", SUBJECT)
    wanted = [("failed_proofs", (SUBJECT, FACTOR)), ("subject_failures", (SUBJECT,))]
    with pytest.raises(RateLimited, match="subject_failures"):
        rl.take_all(wanted)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 10  # nothing pushed
    rl.reset("subject_failures", SUBJECT)
    taken = rl.take_all(wanted)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 9
    rl.give_back(taken)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 10
    assert rl.remaining("subject_failures", SUBJECT) == 20
