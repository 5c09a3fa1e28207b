"""Rate limits on memory:// (RFC 4226 §7.3, NIST SP 800-63B throttling, ASVS 6.6.3): windows,
keys, overrides, and counting an attempt before the work it guards (``take``/``give_back``)."""

from __future__ import annotations

import contextlib
import time

import pytest
import time_machine

from service.domain.errors import RateLimited
from service.domain.policy_file import LIMIT_KEYS
from service.ratelimit import DEFAULTS, RateLimits

T0 = 1_700_000_000.0  # a fixed wall clock: limits reads time.time()
SUBJECT, FACTOR = "sub_3f9a", "totp"


@pytest.fixture
def clock():
    """Frozen time that a test moves with ``clock.shift(seconds)``."""
    with time_machine.travel(T0, tick=False) as traveller:
        yield traveller


@pytest.fixture
def rl(clock) -> RateLimits:
    return RateLimits()


def fail_proofs(rl: RateLimits, n: int, *key: str, **kw) -> None:
    for _ in range(n):
        rl.hit("failed_proofs", *(key or (SUBJECT, FACTOR)), **kw)


def test_defaults_cover_every_policy_limit_key_and_are_strict():
    assert set(DEFAULTS) >= LIMIT_KEYS
    assert DEFAULTS["failed_proofs"] == "10/15minutes"  # NIST allows 100; idv is stricter
    assert RateLimits().limits == dict(DEFAULTS)


def test_eleventh_failed_proof_is_refused_with_retry_after_within_the_window(rl, clock):
    fail_proofs(rl, 10)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 0
    with pytest.raises(RateLimited) as refused:
        rl.hit("failed_proofs", SUBJECT, FACTOR)
    assert refused.value.status == 429
    assert 0 < refused.value.retry_after <= 15 * 60
    with pytest.raises(RateLimited):
        rl.check("failed_proofs", SUBJECT, FACTOR)


def test_check_does_not_consume(rl):
    for _ in range(50):
        rl.check("failed_proofs", SUBJECT, FACTOR)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 10


def test_remaining_counts_down(rl):
    fail_proofs(rl, 3)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 7


def test_record_counts_without_raising_even_when_exhausted(rl):
    for _ in range(15):
        rl.record("failed_proofs", SUBJECT, FACTOR)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 0
    with pytest.raises(RateLimited):
        rl.check("failed_proofs", SUBJECT, FACTOR)


def test_retry_after_is_when_the_oldest_event_leaves_the_moving_window(rl, clock):
    rl.hit("failed_proofs", SUBJECT, FACTOR)
    clock.shift(600)
    fail_proofs(rl, 9)
    with pytest.raises(RateLimited) as refused:
        rl.check("failed_proofs", SUBJECT, FACTOR)
    assert refused.value.retry_after == 301  # the first whole second after t+900
    clock.shift(301)
    rl.check("failed_proofs", SUBJECT, FACTOR)  # the first failure left the window
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 1
    rl.hit("failed_proofs", SUBJECT, FACTOR)
    with pytest.raises(RateLimited) as again:
        rl.hit("failed_proofs", SUBJECT, FACTOR)
    assert again.value.retry_after == 600  # the nine from t+600 leave after t+1500


def test_retry_after_is_at_least_one_second(rl, clock):
    fail_proofs(rl, 10)
    clock.shift(15 * 60 - 0.25)  # 0.25 s to go
    with pytest.raises(RateLimited) as refused:
        rl.check("failed_proofs", SUBJECT, FACTOR)
    assert refused.value.retry_after == 1


def test_window_frees_after_it_passes(rl, clock):
    fail_proofs(rl, 10)
    clock.shift(15 * 60 + 1)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 10
    fail_proofs(rl, 10)


def test_a_refused_hit_does_not_extend_the_window(rl, clock):
    fail_proofs(rl, 10)
    clock.shift(600)
    for _ in range(5):
        with pytest.raises(RateLimited):
            rl.hit("failed_proofs", SUBJECT, FACTOR)
    clock.shift(301)
    rl.hit("failed_proofs", SUBJECT, FACTOR)


def test_per_action_override_wins_over_the_default(rl):
    strict = {"failed_proofs": "3/15minutes"}
    fail_proofs(rl, 3, SUBJECT, FACTOR, action_limits=strict)
    with pytest.raises(RateLimited):
        rl.check("failed_proofs", SUBJECT, FACTOR, action_limits=strict)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR, action_limits=strict) == 0
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 7


def test_looser_override_allows_more_than_the_default(rl):
    loose = {"failed_proofs": "12/15minutes"}
    fail_proofs(rl, 12, SUBJECT, FACTOR, action_limits=loose)
    with pytest.raises(RateLimited):
        rl.hit("failed_proofs", SUBJECT, FACTOR, action_limits=loose)


def test_override_for_another_kind_does_not_apply(rl):
    fail_proofs(rl, 10, SUBJECT, FACTOR, action_limits={"sms_sends": "1/hour"})
    with pytest.raises(RateLimited):
        rl.check("failed_proofs", SUBJECT, FACTOR)


def test_guesses_through_another_action_count_against_the_same_secret(rl):
    # An override changes the threshold, not the counter: ten failures through the default
    # action leave nothing for an action allowing three in the same window.
    fail_proofs(rl, 10)
    with pytest.raises(RateLimited):
        rl.check("failed_proofs", SUBJECT, FACTOR, action_limits={"failed_proofs": "3/15minutes"})


def test_constructor_overrides_replace_defaults(clock):
    rl = RateLimits(overrides={"sms_sends": "2/10minutes"})
    rl.hit("sms_sends", "phone_hmac")
    rl.hit("sms_sends", "phone_hmac")
    with pytest.raises(RateLimited):
        rl.hit("sms_sends", "phone_hmac")


def test_different_keys_and_kinds_are_independent(rl):
    fail_proofs(rl, 10)
    rl.check("failed_proofs", SUBJECT, "sms")
    rl.check("failed_proofs", "sub_other", FACTOR)
    rl.check("subject_failures", SUBJECT)
    assert rl.remaining("failed_proofs", SUBJECT, "sms") == 10


def test_key_parts_cannot_collide_through_the_separator(rl):
    for _ in range(120):
        rl.hit("ip", "2001:db8::1")
    rl.check("ip", "2001", "db8::1")
    rl.check("ip", "2001:db8:", ":1")
    with pytest.raises(RateLimited):
        rl.check("ip", "2001:db8::1")


def test_key_prefix_separates_deployments(clock):
    a, b = RateLimits(key_prefix="a"), RateLimits(key_prefix="b")
    assert a.remaining("ip", "10.0.0.1") == b.remaining("ip", "10.0.0.1") == 120


def test_two_memory_instances_do_not_share_counters(clock):
    # Why production with more than one process needs Redis: each process would grant the
    # attacker its own ten guesses per window.
    first, second = RateLimits("memory://"), RateLimits("memory://")
    fail_proofs(first, 10)
    assert not first.shared and not second.shared
    assert second.remaining("failed_proofs", SUBJECT, FACTOR) == 10
    second.check("failed_proofs", SUBJECT, FACTOR)


def test_reset_forgets_the_counter(rl):
    fail_proofs(rl, 10)
    rl.reset("failed_proofs", SUBJECT, FACTOR)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 10


def test_reset_only_touches_its_key(rl):
    fail_proofs(rl, 10)
    fail_proofs(rl, 10, "sub_other", FACTOR)
    rl.reset("failed_proofs", SUBJECT, FACTOR)
    assert rl.remaining("failed_proofs", "sub_other", FACTOR) == 0


def test_reset_clears_an_override_with_its_own_window(rl):
    hourly = {"failed_proofs": "5/hour"}
    fail_proofs(rl, 5, SUBJECT, FACTOR, action_limits=hourly)
    rl.reset("failed_proofs", SUBJECT, FACTOR, action_limits=hourly)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR, action_limits=hourly) == 5


def test_memory_storage_is_always_healthy(rl):
    assert rl.healthy()


def test_memory_cleanup_runs_at_most_once_a_second_and_still_frees_old_keys(monkeypatch):
    """limits' MemoryStorage would start a clean-up thread 10 ms after every hit; ours starts at
    most one a second, and that pass still drops counters whose window has passed."""
    import threading

    from service import ratelimit

    started: list[threading.Timer] = []
    real_timer = threading.Timer

    def counting_timer(*args, **kwargs):
        timer = real_timer(*args, **kwargs)
        started.append(timer)
        return timer

    monkeypatch.setattr(ratelimit.threading, "Timer", counting_timer)
    rl = RateLimits(overrides={"client": "1000/second"})
    storage = rl._storage
    started.clear()  # the library's constructor starts one too
    for i in range(300):
        rl.hit("client", f"c{i % 7}")
        if i % 50 == 0:
            time.sleep(0.02)  # longer than the library's 10 ms: it would have started more
    assert len(started) == 1
    started[0].join(2)
    assert any(storage.events.values())  # entries still inside their 1 s window stay

    time.sleep(1.1)  # the window and the clean-up interval have both passed
    rl.hit("client", "other")
    assert len(started) == 2
    started[1].join(2)
    assert set(k for k, v in storage.events.items() if v) == {"idv:client:other/1"}


@pytest.mark.parametrize(
    "bad", ["abc", "10/fortnight", "", "0/minute", "10/minute;5/second", "10 per"]
)
def test_bad_limit_string_is_refused_naming_the_kind(bad):
    with pytest.raises(ValueError, match="failed_proofs"):
        RateLimits(overrides={"failed_proofs": bad})


def test_unknown_override_kind_is_refused():
    with pytest.raises(ValueError, match="sms_send"):
        RateLimits(overrides={"sms_send": "5/minute"})


def test_bad_action_limit_is_refused(rl):
    with pytest.raises(ValueError):
        rl.check("failed_proofs", SUBJECT, FACTOR, action_limits={"failed_proofs": "lots"})


def test_unknown_kind_and_missing_key_are_programming_errors(rl):
    with pytest.raises(ValueError, match="unknown rate limit kind"):
        rl.hit("failed_proof", SUBJECT)
    with pytest.raises(ValueError, match="key part"):
        rl.hit("failed_proofs")
    with pytest.raises(ValueError, match="key part"):
        rl.hit("failed_proofs", SUBJECT, "")


@pytest.mark.parametrize("url", ["memcached://localhost:11211", "postgresql://x/y", "nonsense"])
def test_unsupported_storage_is_refused(url):
    with pytest.raises(ValueError, match="memory:// or redis://"):
        RateLimits(url)


def test_rate_limited_message_names_the_limit(rl):
    fail_proofs(rl, 10)
    with pytest.raises(RateLimited, match=r"failed_proofs: 10 per 15 minutes"):
        rl.hit("failed_proofs", SUBJECT, FACTOR)


def test_take_counts_at_once_and_give_back_frees_the_place(rl):
    taken = [rl.take("failed_proofs", SUBJECT, FACTOR) for _ in range(10)]
    with pytest.raises(RateLimited):
        rl.take("failed_proofs", SUBJECT, FACTOR)
    rl.give_back(taken[3:4])  # a proof that passed: its place is free again, and only its
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 1
    rl.take("failed_proofs", SUBJECT, FACTOR)
    with pytest.raises(RateLimited):
        rl.take("failed_proofs", SUBJECT, FACTOR)


def test_take_all_counts_all_or_none(rl):
    for _ in range(20):
        rl.hit("subject_failures", SUBJECT)
    wanted = [("failed_proofs", (SUBJECT, FACTOR)), ("subject_failures", (SUBJECT,))]
    with pytest.raises(RateLimited, match="subject_failures"):
        rl.take_all(wanted)
    assert rl.remaining("failed_proofs", SUBJECT, FACTOR) == 10  # given back


def test_fifty_threads_take_exactly_the_limit(rl):
    """The check and the count are one step: no interleaving lets an 11th through."""
    import threading

    barrier, won = threading.Barrier(50), []

    def race() -> None:
        barrier.wait()
        with contextlib.suppress(RateLimited):
            won.append(rl.take("failed_proofs", SUBJECT, FACTOR))

    threads = [threading.Thread(target=race) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 10


def test_memory_cleanup_forgets_the_keys_whose_window_emptied(rl, clock):
    """limits 5.8 kept every key it had seen, with an empty list, for good: one per subject
    and factor that ever sent a proof, and its once-a-second pass (holding the GIL) grew with
    them. A key whose window emptied is now deleted; one with entries in its window stays."""
    storage = rl._storage
    expire = storage._MemoryStorage__expire_events
    for i in range(1000):  # accepted proofs: taken, then given back
        rl.give_back(
            rl.take_all([("failed_proofs", (f"s{i}", FACTOR)), ("subject_failures", (f"s{i}",))])
        )
    fail_proofs(rl, 10)  # one subject's failures stay counted for the window (15 minutes)
    expire()
    assert list(storage.events) == [f"idv:failed_proofs:{SUBJECT}:{FACTOR}/900"]
    with pytest.raises(RateLimited):  # forgetting the others changed nothing for this one
        fail_proofs(rl, 1)
    clock.shift(901)
    expire()
    assert storage.events == {}
    fail_proofs(rl, 10)  # the window passed: a fresh budget, as before
    with pytest.raises(RateLimited):
        fail_proofs(rl, 1)


def test_the_limit_holds_while_the_cleanup_deletes_keys(clock):
    """A key deleted by the clean-up while threads take and give back places on it: still
    never more than the limit at once (the locks are striped, never dropped)."""
    import threading

    rl = RateLimits()
    storage = rl._storage
    stop, over = threading.Event(), []

    def clean() -> None:
        while not stop.is_set():
            storage._MemoryStorage__expire_events()

    def churn() -> None:
        for _ in range(300):
            with contextlib.suppress(RateLimited):
                taken = rl.take("failed_proofs", SUBJECT, FACTOR)
                held = len(storage.events.get(f"idv:failed_proofs:{SUBJECT}:{FACTOR}/900", []))
                if held > 10:
                    over.append(held)
                rl.give_back([taken])

    cleaner = threading.Thread(target=clean)
    cleaner.start()
    workers = [threading.Thread(target=churn) for _ in range(20)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    stop.set()
    cleaner.join()
    assert over == []
    storage._MemoryStorage__expire_events()
    assert storage.events == {}  # every place was given back: nothing left to remember
