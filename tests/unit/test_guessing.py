"""The subject lockout and the guessing arithmetic README quotes (NIST SP 800-63B-4 throttling:
no more than 100 consecutive failures; RFC 4226 §7.3)."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.guessing import daily_guesses, guessing_budget, lockout_for
from service.ratelimit import DEFAULTS

README = Path(__file__).resolve().parents[2] / "README.md"


@pytest.mark.parametrize(
    ("failures", "lock"),
    [
        (0, None),
        (14, None),
        (15, timedelta(minutes=15)),  # 3 × the failure limit
        (16, None),  # the next verification's worth of guesses ...
        (19, None),
        (20, timedelta(minutes=30)),  # ... then twice as long
        (25, timedelta(hours=1)),
        (30, timedelta(hours=2)),
        (45, timedelta(hours=16)),
        (50, timedelta(hours=24)),
        (10**9, timedelta(hours=24)),
    ],
)
def test_the_subject_locks_at_its_15th_failure_then_every_5th_doubling_to_a_day(failures, lock):
    assert lockout_for(failures) == lock


def test_the_marks_follow_the_failure_limit():
    assert lockout_for(9, failure_limit=3) == timedelta(minutes=15)
    assert lockout_for(12, failure_limit=3) == timedelta(minutes=30)
    assert lockout_for(15, failure_limit=3) == timedelta(hours=1)


@given(st.integers(min_value=15, max_value=10_000))
def test_a_later_lock_is_never_shorter(n):
    locks = [lockout_for(k) for k in range(15, n + 1)]
    lengths = [lock for lock in locks if lock is not None]
    assert lengths == sorted(lengths) and lengths[-1] <= timedelta(hours=24)


def test_the_daily_budget_stays_far_under_nists_100():
    budget = guessing_budget(DEFAULTS)
    assert set(budget) == {"totp", "knowledge", "sms", "recovery_code"}
    for figures in budget.values():
        assert figures["guesses_per_day"] == 45 < 100
    # 10 then 5 guesses (the per-factor window), locked 15 min, 5 more, 30 min, ... 16 h.
    assert daily_guesses("10/15minutes", "20/hour", 5, days=1) == 45


def test_the_budget_follows_the_limits_in_force():
    looser = dict(DEFAULTS, subject_failures="1000/hour", failed_proofs="1000/hour")
    # Without the lockout the windows alone would allow thousands; the lockout still binds.
    assert guessing_budget(looser)["totp"]["guesses_per_day"] == 45
    assert guessing_budget(looser, failure_limit=10)["totp"]["guesses_per_day"] == 90
    tight = dict(DEFAULTS, subject_failures="2/hour")
    # 2 an hour would be 48 a day; with the marks at 15, 20, 25 ... falling in between: 40.
    assert guessing_budget(tight)["totp"]["guesses_per_day"] == 40
    tighter = dict(DEFAULTS, subject_failures="1/hour")
    assert guessing_budget(tighter)["totp"]["guesses_per_day"] == 24


def test_the_odds_per_factor():
    budget = guessing_budget(DEFAULTS)
    totp, pin, sms, codes = (budget[f] for f in ("totp", "knowledge", "sms", "recovery_code"))
    assert totp["p_per_guess"] == pytest.approx(3e-6)  # RFC 6238 §5.2: ±1 step
    assert totp["p_success_in_period"] == pytest.approx(1 - (1 - 3e-6) ** (45 * 30))
    assert pin["p_success_in_period"] == pytest.approx(45 * 30 / 10**6)
    # An SMS proof is checked against 5 live codes, and 20 codes a day each take 5 proofs.
    assert sms["tries_per_day"] == min(5 * 45, 5 * 20) == 100
    assert codes["p_per_guess"] == pytest.approx(10 / 2**64)


_ROW = re.compile(r"^\| (TOTP|PIN|SMS code|recovery code) \| ([^|]+) \| ([^|]+) \| ([^|]+) \|$")
_NAMES = {"TOTP": "totp", "PIN": "knowledge", "SMS code": "sms", "recovery code": "recovery_code"}


def test_readme_states_the_figures_guessing_budget_computes():
    """README's guessing table is guessing_budget() over the default limits, row by row."""
    budget = guessing_budget(DEFAULTS)
    matches = map(_ROW.match, README.read_text().splitlines())
    rows = {m.group(1): m.groups()[1:] for m in matches if m}
    assert set(rows) == set(_NAMES), rows
    for name, (guesses, tries, odds) in rows.items():
        figures = budget[_NAMES[name]]
        assert int(guesses) == figures["guesses_per_day"], name
        assert int(tries) == figures["tries_per_day"], name
        assert odds.strip() == _percent(figures["p_success_in_period"]), name


def _percent(p: float) -> str:
    """How README writes a probability: in percent to two places, or as a power of ten."""
    if p < 1e-4:
        return f"{p:.0e}"
    return f"{p * 100:.2f} %"
