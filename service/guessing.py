"""Subject lockout and the guessing arithmetic README quotes, derived from the limits in force.

RFC 4226 §7.3 and NIST SP 800-63B-4 (throttling: "no more than 100 consecutive failed
attempts") require failed attempts to be limited. idv stacks four limits on one subject:

- ``failed_proofs`` per subject and factor, and ``subject_failures`` per subject across factors
  (moving windows in ``service.ratelimit``, counted before the verifier runs);
- the policy's ``failure_limit`` per verification (5: the 5th failure locks it);
- the subject lockout of ``lockout_for``: counted from the failed proofs the *database* holds
  for the subject over 24 hours, however they are spread over verifications, so neither
  4 guesses per verification nor a Redis restarted without its counters evades it.

``guessing_budget`` replays an attacker who guesses as fast as all of them allow and reports the
most guesses any 24 hours hold, per factor, with the odds they buy. Pure: no Flask, no SQL.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache

import limits

from service.factors.ports import Guessing
from service.factors.registry import FACTORS

# A subject locks at its 15th failed proof within 24 h (3 × the policy's failure limit), then
# again at every further ``failure_limit`` failures, for 15 min doubling to 24 h.
LOCKOUT_ROUNDS = 3
LOCKOUT_BASE = timedelta(minutes=15)
LOCKOUT_CAP = timedelta(hours=24)
LOCKOUT_WINDOW = timedelta(hours=24)

# What one guess can hit, per factor: each factor declares it (``FactorSpec.guessing``): the
# values an attacker must choose from, those accepted at any moment, whether they change between
# guesses, and how many live codes one proof is checked against.
FACTOR_SPACES: Mapping[str, Guessing] = {
    name: spec.guessing for name, spec in FACTORS.items() if spec.guessing is not None
}
# NIST SP 800-63B-4 throttling: no more than 100 consecutive failed attempts per account. idv
# refuses to start with limits that allow that many failed proofs in one day.
NIST_CONSECUTIVE_FAILURES = 100


def lockout_for(failures: int, failure_limit: int = 5) -> timedelta | None:
    """How long a subject is locked after the failed proof that brings its count to ``failures``
    (failed proofs within 24 h, across all its verifications and factors).

    The lock falls at ``LOCKOUT_ROUNDS * failure_limit`` failures (15 by default) and again at
    every further ``failure_limit``, each time for twice as long, capped at 24 hours::

        failures = 15: 15 min   20: 30 min   25: 1 h   30: 2 h   35: 4 h   40: 8 h   45: 16 h
                   50 and every 5 after: 24 h

    ``None`` between those marks: the subject keeps its next ``failure_limit`` guesses, the
    budget of one verification, as idv gave before it counted failures instead of locks.
    """
    if failure_limit < 1:
        raise ValueError("failure_limit must be at least 1")
    threshold = LOCKOUT_ROUNDS * failure_limit
    if failures < threshold or (failures - threshold) % failure_limit:
        return None
    doublings = min((failures - threshold) // failure_limit, 16)  # small arithmetic
    return min(LOCKOUT_BASE * 2**doublings, LOCKOUT_CAP)


@lru_cache(maxsize=64)  # every ServiceContext checks its policy's actions at start
def daily_guesses(
    failed_proofs: str, subject_failures: str, failure_limit: int, days: int = 7
) -> int:
    """The most failed proofs any 24 hours can hold against one factor of one subject.

    Replays ``days`` days of an attacker who guesses whenever every limit allows: the two
    moving windows (``failed_proofs`` for the factor, ``subject_failures`` for the subject) and
    the lockout (``lockout_for`` over the failures of the last 24 h). A new verification is
    always at hand, so the per-verification lock costs the attacker nothing but a request.
    """
    windows = []
    for text in (failed_proofs, subject_failures):
        item = limits.parse(text)
        windows.append((item.amount, item.get_expiry(), deque[float]()))
    day = LOCKOUT_WINDOW.total_seconds()
    guesses: list[float] = []
    recent: deque[float] = deque()  # failures within the last 24 h (the database's count)
    now, end = 0.0, days * day
    while now < end:
        wait = now
        for amount, length, events in windows:
            while events and events[0] <= now - length:
                events.popleft()
            if len(events) >= amount:  # free once the oldest leaves the window
                wait = max(wait, events[0] + length)
        if wait > now:
            now = wait
            continue
        for _, _, events in windows:
            events.append(now)
        while recent and recent[0] <= now - day:
            recent.popleft()
        recent.append(now)
        guesses.append(now)
        pause = lockout_for(len(recent), failure_limit)
        if pause is not None:
            now += pause.total_seconds()
    most, start = 0, 0
    for i, at in enumerate(guesses):  # the busiest 24 h of the replay
        while guesses[start] <= at - day:
            start += 1
        most = max(most, i - start + 1)
    return most


def guessing_budget(
    rate_limits: Mapping[str, str],
    failure_limit: int = 5,
    days: int = 30,
) -> dict[str, dict[str, float]]:
    """Per factor: what the limits in force leave an online guesser in a day and in ``days``.

    ``rate_limits`` are the kinds of ``service.ratelimit`` in force (``RateLimits.limits``;
    where the policy overrides one for an action, pass the loosest: an attacker picks that
    action). Each factor's figures:

    - ``guesses_per_day``: ``daily_guesses`` (the lockout is what binds with the defaults: 45);
    - ``p_per_guess``: accepted values / values to choose from (a TOTP 3e-6, a PIN 1e-6, an
      SMS code 1e-6 per live code, a recovery code 10 / 2**64);
    - ``tries_per_day``: codes tried a day. One proof is one try, except SMS, where a proof is
      checked against up to 5 live codes, while no code outlives its verification's
      ``failure_limit`` proofs and a day has at most ``sms_sends_daily`` codes per tenant:
      min(5 × guesses, failure_limit × sends);
    - ``p_success_in_period``: over ``days`` days. Codes that change are independent trials,
      1 - (1 - p) ** tries; a fixed secret is sampled without replacement, tries × p;
    - ``expected_days``: the mean days to success: 1 / p tries for changing codes, half the
      candidates for a fixed secret.

    The guesses are shared: the lockout and ``subject_failures`` count every factor together,
    so a day's budget across all factors of a subject is ``guesses_per_day``, not four times it.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    guesses = daily_guesses(
        rate_limits["failed_proofs"], rate_limits["subject_failures"], failure_limit
    )
    sends = limits.parse(rate_limits["sms_sends_daily"]).amount
    budget: dict[str, dict[str, float]] = {}
    for factor, hit in FACTOR_SPACES.items():
        space, accepted, changing = hit.space, hit.accepted, hit.changing
        tries = float(hit.codes_per_proof * guesses)
        if hit.sent:  # no code outlives failure_limit proofs; sends a day bound the codes
            tries = float(min(hit.codes_per_proof * guesses, failure_limit * sends))
        p = accepted / space
        period = tries * days
        if changing:
            expected = 1 / p
            p_success = -math.expm1(period * math.log1p(-p))  # 1 - (1 - p)**n, exactly
        else:
            expected = (space / accepted + 1) / 2
            p_success = min(1.0, period * p)
        budget[factor] = {
            "guesses_per_day": float(guesses),
            "tries_per_day": tries,
            "p_per_guess": p,
            "days": float(days),
            "p_success_in_period": p_success,
            "expected_days": expected / tries,
        }
    return budget
