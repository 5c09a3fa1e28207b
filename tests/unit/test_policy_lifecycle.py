"""The policy format's account-lifecycle rules (API.md, Recovery; issue 19), on the pure engine."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta

import pytest

from service.domain import policy as engine
from service.domain.errors import PolicyError
from service.domain.policy import (
    SubjectState,
    decide,
)
from service.factors.registry import CATALOG
from service.settings import packaged_policy_file

parse_policy = functools.partial(engine.parse_policy, factors=CATALOG)
load_policy = functools.partial(engine.load_policy, factors=CATALOG)
state_from_args = functools.partial(engine.state_from_args, known=CATALOG.names)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def policy():
    return load_policy(packaged_policy_file())


def state(*factors: str, **kw: object) -> SubjectState:
    return SubjectState(factors=frozenset(factors), **kw)  # type: ignore[arg-type]


def test_lifecycle_actions_of_the_default_policy(policy) -> None:
    assert policy.action("recover_delayed").delay == timedelta(hours=72)
    assert policy.action("recover").recovers and policy.action("recover_delayed").recovers
    assert policy.action("cancel_recovery").suspended_factors_count
    assert policy.action("reset_knowledge").hold_after_sim_change == timedelta(hours=72)
    for money in ("payment_password_reset", "loan_application"):
        events = policy.action(money).cooling_off_after
        assert {"recovered", "knowledge_reset", "first_knowledge"} <= set(events)


def test_sim_windows_never_hold_an_option_without_a_phone_bound_factor(policy) -> None:
    # API.md: recovery ignores SIM-change windows; none of its factors travels with the SIM.
    lost = state("knowledge", "recovery_code", "sms", sim_lost_since=NOW - timedelta(hours=1))
    decision = decide(policy, "recover", lost, NOW)
    assert decision.status == "pending"
    assert decision.options == [["knowledge", "recovery_code"]]
    # reset_knowledge has only phone-bound options: held after a SIM change (T1).
    swapped = state("totp", "recovery_code", last_sim_change=NOW - timedelta(hours=1))
    held = decide(policy, "reset_knowledge", swapped, NOW)
    assert held.status == "denied" and held.reasons == ["recent_sim_change"]


def test_a_sim_hold_keeps_only_phone_free_options() -> None:
    custom = parse_policy(
        'version = 1\n[actions.a]\nacr = "x"\nhold_after_sim_change = "1d"\n'
        'options = [["totp", "knowledge"], ["knowledge", "attested"]]\n'
    )
    s = state("totp", "knowledge", "attested", last_sim_change=NOW - timedelta(hours=1))
    decision = decide(custom, "a", s, NOW)
    assert decision.status == "pending" and decision.options == [["knowledge", "attested"]]


def test_one_hour_window_after_a_recovery_adds_options(policy) -> None:
    by_pin = {
        "recovered": NOW - timedelta(minutes=10),
        "recovered_by_pin": NOW - timedelta(minutes=10),
    }
    pin = decide(policy, "enroll_factor", state("sms", "knowledge", last_events=by_pin), NOW)
    assert pin.options == [["sms", "knowledge"], ["knowledge"]]
    codes = {"recovered": NOW - timedelta(minutes=10)}
    s = state("knowledge", "recovery_code", "attested", last_events=codes)
    assert decide(policy, "change_phone", s, NOW).options == [
        ["knowledge"],
        ["recovery_code"],
        ["attested"],
    ]
    closed = {"recovered": NOW - timedelta(hours=1)}
    s = state("knowledge", "recovery_code", last_events=closed)
    assert decide(policy, "change_phone", s, NOW).status == "denied"


def test_cooling_off_after_recovery_even_in_onboarding(policy) -> None:
    s = state(
        "totp", "knowledge", onboarding=True, last_events={"recovered": NOW - timedelta(hours=2)}
    )
    decision = decide(policy, "loan_application", s, NOW)
    assert decision.status == "denied" and decision.reasons == ["cooling_off"]


def test_suspended_factors_count_only_where_the_policy_says(policy) -> None:
    s = state("knowledge", suspended=frozenset({"totp", "sms"}))
    assert decide(policy, "login", s, NOW).status == "denied"
    assert decide(policy, "cancel_recovery", s, NOW).options == [["knowledge", "totp"]]


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ('delay = "soon"', "actions.a.delay"),
        ("recovers = 1", "actions.a.recovers"),
        ("suspended_factors_count = 'yes'", "actions.a.suspended_factors_count"),
        ('[[actions.a.when]]\nadd = true\noptions = [["totp"]]', "actions.a.when[0]"),
        (
            '[[actions.a.when]]\nrecovered_with_knowledge = true\noptions = [["totp"]]',
            "actions.a.when[0].recovered_with_knowledge",
        ),
        (
            '[[actions.a.when]]\nonboarding = 1\noptions = [["totp"]]',
            "actions.a.when[0].onboarding",
        ),
        ('[[actions.a.when]]\nrecovered_within = "1x"\noptions = [["totp"]]', "actions.a.when[0]"),
        ('[[actions.a.when]]\nonboarding = true\nsoon = 1\noptions = [["totp"]]', "when[0].soon"),
    ],
)
def test_lifecycle_keys_are_strictly_validated(body: str, key: str) -> None:
    text = f'version = 1\n[actions.a]\nacr = "x"\noptions = [["totp"]]\n{body}\n'
    with pytest.raises(PolicyError) as caught:
        parse_policy(text)
    assert key in caught.value.key


def test_explain_takes_onboarding_and_recovery_events(policy) -> None:
    s = state_from_args(["sms"], ["onboarding"], NOW)
    assert decide(policy, "enroll_factor", s, NOW).options == [["sms"]]
    s = state_from_args(["sms,knowledge"], ["event:recovered=5m"], NOW)
    assert ["knowledge"] in decide(policy, "enroll_factor", s, NOW).options
