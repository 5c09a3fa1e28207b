"""The policy engine: the default policy row by row, every signal at its window's edges, the T1
property over any subject state, and strict validation of policy files."""

from __future__ import annotations

import functools
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import policy as engine
from service.domain.errors import PolicyError, UnknownAction
from service.domain.policy import (
    Decision,
    Policy,
    SubjectState,
    decide,
    format_decision,
    parse_duration,
)
from service.factors.registry import CATALOG

parse_policy = functools.partial(engine.parse_policy, factors=CATALOG)
load_policy = functools.partial(engine.load_policy, factors=CATALOG)
state_from_args = functools.partial(engine.state_from_args, known=CATALOG.names)

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
SECOND = timedelta(seconds=1)
ALL = frozenset({"sms", "totp", "device", "knowledge"})
STRONG = [["device", "knowledge"], ["totp", "knowledge"]]
SENSITIVE = [
    "view_personal_data",
    "change_phone",
    "enroll_factor",
    "password_reset",
    "payment_password_reset",
    "loan_application",
    "sim_unblock",
]
MONEY = ["payment_password_reset", "loan_application"]
# API.md, Recovery: the account lifecycle's actions (all sensitive).
LIFECYCLE = ["recover", "recover_delayed", "cancel_recovery", "reset_knowledge", "delete_account"]


@pytest.fixture(scope="module")
def policy() -> Policy:
    return load_policy(Path(__file__).parents[2] / "policies" / "default.toml")


def state(*factors: str, **signals: object) -> SubjectState:
    return SubjectState(factors=frozenset(factors), **signals)  # type: ignore[arg-type]


# --- the default policy, row by row -------------------------------------------------------


def test_default_policy_defines_exactly_the_documented_actions(policy: Policy) -> None:
    assert set(policy.actions) == {"login", *SENSITIVE, *LIFECYCLE}
    assert policy.knowledge_min_length == 6
    assert policy.action("login").acr == "aal1" and not policy.action("login").sensitive
    for name in SENSITIVE:
        rule = policy.action(name)
        assert rule.acr == "aal2" and rule.sensitive
        assert rule.lifetime == timedelta(minutes=10) and rule.failure_limit == 5
        # Fail closed where money is at stake; elsewhere a missing carrier answer drops SMS.
        assert rule.on_signal_unavailable == ("deny" if name in MONEY else "block_sms")
    assert policy.action("login").on_signal_unavailable == "allow"


@pytest.mark.parametrize(
    ("action", "factors", "options"),
    [
        ("login", ALL, [["sms"], ["totp"], ["device"]]),
        ("login", {"sms"}, [["sms"]]),
        ("login", {"totp", "knowledge"}, [["totp"]]),
        ("view_personal_data", ALL, [*STRONG, ["sms", "knowledge"]]),
        ("view_personal_data", {"sms", "knowledge"}, [["sms", "knowledge"]]),
        ("change_phone", ALL, STRONG),
        ("change_phone", {"device", "knowledge"}, [["device", "knowledge"]]),
        ("enroll_factor", ALL, [*STRONG, ["sms", "knowledge"]]),
        (
            "enroll_factor",
            {"totp", "knowledge", "sms"},
            [["totp", "knowledge"], ["sms", "knowledge"]],
        ),
        ("password_reset", ALL, STRONG),
        ("password_reset", {"totp", "knowledge"}, [["totp", "knowledge"]]),
        ("payment_password_reset", ALL, STRONG),
        ("loan_application", ALL, STRONG),
        ("loan_application", {"device", "knowledge"}, [["device", "knowledge"]]),
        ("sim_unblock", ALL, [["knowledge", "totp"], ["knowledge", "device"]]),
        ("sim_unblock", {"knowledge", "device"}, [["knowledge", "device"]]),
    ],
)
def test_default_policy_options(policy: Policy, action: str, factors: set[str], options) -> None:
    decision = decide(policy, action, state(*factors), NOW)
    assert decision == Decision(action, "pending", options, [], decision.explanation, None)


@pytest.mark.parametrize("action", [a for a in SENSITIVE if a != "enroll_factor"])
def test_sms_and_knowledge_alone_cannot_do_strong_only_actions(policy: Policy, action) -> None:
    # T1 step 3-5: the stolen phone plus a read-off ID number opens none of these.
    decision = decide(policy, action, state("sms", "knowledge"), NOW)
    if action == "view_personal_data":
        assert decision.options == [["sms", "knowledge"]]
    else:
        assert decision.status == "denied"
        assert decision.reasons == ["no_eligible_factors"]


@pytest.mark.parametrize("action", SENSITIVE)
def test_phone_only_subject_is_denied_sensitive_actions(policy: Policy, action: str) -> None:
    decision = decide(policy, action, state("sms", "totp", "device", onboarding=True), NOW)
    if action == "enroll_factor":  # bootstrap: no PIN yet, in onboarding: the when block applies
        assert decision.options == [["totp"], ["device"], ["sms"]]
    else:
        assert decision.status == "denied" and decision.options == []
        assert "no_eligible_factors" in decision.reasons


def test_unknown_action_raises(policy: Policy) -> None:
    with pytest.raises(UnknownAction, match="unknown action: transfer"):
        decide(policy, "transfer", state(*ALL), NOW)


# --- enroll_factor's when block -----------------------------------------------------------


def test_enroll_factor_bootstrap_replaces_options_while_subject_lacks_knowledge(policy) -> None:
    decision = decide(policy, "enroll_factor", state("sms", onboarding=True), NOW)
    assert decision.status == "pending" and decision.options == [["sms"]]
    assert any("when[0] applies" in line for line in decision.explanation)
    # Issue 19, hole 1: after onboarding the phone alone never sets the first PIN.
    later = decide(policy, "enroll_factor", state("sms", "totp", "device"), NOW)
    assert later.status == "denied" and "no_eligible_factors" in later.reasons
    attested = decide(policy, "enroll_factor", state("sms", "totp", "attested"), NOW)
    assert attested.options == [["attested"]]


def test_enroll_factor_needs_the_pin_once_it_exists(policy: Policy) -> None:
    # "once a PIN exists nobody changes factors without it"
    pin_first = decide(policy, "enroll_factor", state("sms", "knowledge"), NOW)
    assert pin_first.options == [["sms", "knowledge"]]  # a PIN set first is no dead end
    with_totp = decide(policy, "enroll_factor", state("totp", "knowledge"), NOW)
    assert with_totp.options == [["totp", "knowledge"]]
    assert all("knowledge" in option for option in pin_first.options + with_totp.options)


def test_enroll_factor_bootstrap_sms_blocked_for_30_days_after_sim_change(policy) -> None:
    inside = state(
        "sms", "totp", last_sim_change=NOW - timedelta(days=30) + SECOND, onboarding=True
    )
    outside = state("sms", "totp", last_sim_change=NOW - timedelta(days=30), onboarding=True)
    assert decide(policy, "enroll_factor", inside, NOW).options == [["totp"]]
    assert decide(policy, "enroll_factor", inside, NOW).reasons == ["recent_sim_change"]
    assert decide(policy, "enroll_factor", outside, NOW).options == [["totp"], ["sms"]]


def test_subject_has_condition(policy: Policy) -> None:
    custom = parse_policy(
        'version = 1\n[actions.a]\nacr = "x"\noptions = [["totp"]]\n'
        '[[actions.a.when]]\nsubject_has = "device"\noptions = [["device"]]\n'
    )
    assert decide(custom, "a", state("device", "totp"), NOW).options == [["device"]]
    assert decide(custom, "a", state("totp"), NOW).options == [["totp"]]


# --- signals and their window edges -------------------------------------------------------


@pytest.mark.parametrize(
    ("action", "window"), [("login", timedelta(days=7)), ("view_personal_data", timedelta(days=30))]
)
def test_sms_blocked_after_sim_change_edges(policy: Policy, action: str, window) -> None:
    factors = ("sms", "totp", "knowledge")
    inside = decide(policy, action, state(*factors, last_sim_change=NOW - window + SECOND), NOW)
    outside = decide(policy, action, state(*factors, last_sim_change=NOW - window), NOW)
    assert inside.status == "pending" and inside.reasons == ["recent_sim_change"]
    assert all("sms" not in option for option in inside.options)
    assert any(
        f"actions.{action}.sms_blocked_after_sim_change = {window.days}d" in line
        for line in inside.explanation
    )
    assert outside.reasons == [] and any("sms" in option for option in outside.options)


def test_explanation_names_rule_signal_and_times(policy: Policy) -> None:
    changed = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)
    decision = decide(policy, "login", state("sms", "totp", last_sim_change=changed), NOW)
    assert (
        "sms ineligible: SIM changed at 2026-11-21T10:00:00Z, within "
        "actions.login.sms_blocked_after_sim_change = 7d (until 2026-11-28T10:00:00Z)"
    ) in decision.explanation
    assert decision.held_until is None  # only a narrowing, not a hold


def test_recycled_phone_only_subject_is_denied(policy: Policy) -> None:
    # T2: codes to a recycled number prove nothing; denied with a reason the caller can act on.
    decision = decide(policy, "login", state("sms", number_recycled=True), NOW)
    assert decision.status == "denied" and decision.options == []
    assert decision.reasons == ["number_recycled", "no_eligible_factors"]


def test_recycled_number_leaves_other_factors(policy: Policy) -> None:
    decision = decide(policy, "login", state("sms", "totp", number_recycled=True), NOW)
    assert decision.status == "pending" and decision.options == [["totp"]]
    assert decision.reasons == ["number_recycled"]


def test_sim_lost_removes_sms(policy: Policy) -> None:
    decision = decide(policy, "login", state("sms", "device", sim_lost_since=NOW), NOW)
    assert decision.options == [["device"]] and decision.reasons == ["sim_lost"]


def test_sim_lost_holds_actions_with_a_sim_change_hold(policy: Policy) -> None:
    lost = state(*ALL, sim_lost_since=NOW - timedelta(days=365))
    for action in ["password_reset", *MONEY]:
        decision = decide(policy, action, lost, NOW)
        assert decision.status == "denied" and decision.reasons == ["sim_lost"]
        assert decision.held_until is None
    # T1 step 4: unblocking the lost SIM is the point, so sim_unblock is not held.
    assert decide(policy, "sim_unblock", lost, NOW).status == "pending"


@pytest.mark.parametrize(
    ("action", "window"),
    [
        ("password_reset", timedelta(hours=72)),
        ("payment_password_reset", timedelta(days=7)),
        ("loan_application", timedelta(days=7)),
    ],
)
def test_hold_after_sim_change_edges(policy: Policy, action: str, window: timedelta) -> None:
    changed = NOW - window + SECOND
    inside = decide(policy, action, state(*ALL, last_sim_change=changed), NOW)
    assert inside.status == "denied" and inside.reasons == ["recent_sim_change"]
    assert inside.held_until == changed + window == NOW + SECOND
    outside = decide(policy, action, state(*ALL, last_sim_change=NOW - window), NOW)
    assert outside.status == "pending" and outside.options == STRONG


def test_future_sim_change_counts_as_recent(policy: Policy) -> None:
    # Clock skew must not open a window early: a change "in the future" is inside it.
    decision = decide(policy, "password_reset", state(*ALL, last_sim_change=NOW + SECOND), NOW)
    assert decision.reasons == ["recent_sim_change"]


@pytest.mark.parametrize("action", MONEY)
@pytest.mark.parametrize(
    "event", ["password_reset", "factor_added", "factor_removed", "phone_changed"]
)
def test_cooling_off_edges(policy: Policy, action: str, event: str) -> None:
    day = timedelta(hours=24)
    inside = decide(policy, action, state(*ALL, last_events={event: NOW - day + SECOND}), NOW)
    assert inside.status == "denied" and inside.reasons == ["cooling_off"]
    assert inside.held_until == NOW + SECOND
    assert any(f"{event} at" in line and "cooling_off = 1d" in line for line in inside.explanation)
    outside = decide(policy, action, state(*ALL, last_events={event: NOW - day}), NOW)
    assert outside.status == "pending"


def test_cooling_off_uses_the_latest_event(policy: Policy) -> None:
    events = {"password_reset": NOW - timedelta(hours=23), "factor_added": NOW - timedelta(hours=1)}
    decision = decide(policy, "loan_application", state(*ALL, last_events=events), NOW)
    assert decision.held_until == NOW + timedelta(hours=23)


def test_cooling_off_not_applied_to_other_actions(policy: Policy) -> None:
    recent = state(*ALL, last_events={"password_reset": NOW})
    assert decide(policy, "password_reset", recent, NOW).status == "pending"


def test_cooling_off_sim_event_means_last_sim_change() -> None:
    custom = parse_policy(
        'version = 1\n[actions.a]\nacr = "x"\noptions = [["totp"]]\n'
        'cooling_off = "1h"\ncooling_off_after = ["sim_event"]\n'
    )
    held = decide(custom, "a", state("totp", last_sim_change=NOW - timedelta(minutes=10)), NOW)
    assert held.reasons == ["cooling_off"] and held.held_until == NOW + timedelta(minutes=50)


def test_signal_unavailable_per_mode(policy: Policy) -> None:
    subject = state(*ALL, signal_unavailable=True)
    login = decide(policy, "login", subject, NOW)  # "allow"
    assert login.reasons == [] and ["sms"] in login.options
    view = decide(policy, "view_personal_data", subject, NOW)  # "block_sms"
    assert view.status == "pending" and view.reasons == ["signal_unavailable"]
    assert ["sms", "knowledge"] not in view.options
    for action in MONEY:  # "deny": fail closed where money is at stake
        decision = decide(policy, action, subject, NOW)
        assert decision.status == "denied" and decision.reasons == ["signal_unavailable"]


def test_sms_reasons_only_when_sms_is_on_offer(policy: Policy) -> None:
    noisy = state(*ALL, number_recycled=True, signal_unavailable=True)
    decision = decide(policy, "change_phone", noisy, NOW)
    assert decision.status == "pending" and decision.reasons == []


def test_subject_locked_edges(policy: Policy) -> None:
    locked = decide(policy, "login", state(*ALL, locked_until=NOW + SECOND), NOW)
    assert locked.status == "denied" and locked.reasons == ["subject_locked"]
    assert locked.held_until == NOW + SECOND
    assert decide(policy, "login", state(*ALL, locked_until=NOW), NOW).status == "pending"


def test_all_hold_reasons_are_collected(policy: Policy) -> None:
    subject = state(
        *ALL,
        locked_until=NOW + timedelta(minutes=10),
        last_sim_change=NOW - timedelta(days=1),
        sim_lost_since=NOW - timedelta(hours=1),
        last_events={"phone_changed": NOW},
        signal_unavailable=True,
    )
    decision = decide(policy, "payment_password_reset", subject, NOW)
    assert decision.reasons == [
        "subject_locked",
        "recent_sim_change",
        "sim_lost",
        "cooling_off",
        "signal_unavailable",
    ]
    assert decision.held_until == NOW + timedelta(days=6)  # the latest end of all holds
    assert decision.options == []


# --- properties over any subject state ----------------------------------------------------

moments = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
near = st.builds(lambda s: NOW + timedelta(seconds=s), st.integers(-90 * 86400, 86400))
times = st.one_of(st.none(), near, moments)
states = st.builds(
    SubjectState,
    factors=st.frozensets(st.sampled_from(sorted(ALL))),
    last_sim_change=times,
    sim_lost_since=times,
    number_recycled=st.booleans(),
    signal_unavailable=st.booleans(),
    last_events=st.dictionaries(
        st.sampled_from(["password_reset", "factor_added", "factor_removed", "phone_changed"]),
        st.one_of(near, moments),
    ),
    locked_until=times,
)
DEFAULT = load_policy(Path(__file__).parents[2] / "policies" / "default.toml")


@settings(max_examples=300, deadline=None)
@given(subject=states, action=st.sampled_from(SENSITIVE))
def test_t1_no_sensitive_option_travels_with_the_phone(subject: SubjectState, action) -> None:
    # T1 and NIST SP 800-63B-4: a stolen phone (sms, totp app, device key) never suffices.
    decision = decide(DEFAULT, action, subject, NOW)
    bootstrap = action == "enroll_factor" and "knowledge" not in subject.factors
    for option in decision.options:
        if bootstrap:
            continue
        assert option != ["sms"]
        assert not set(option) <= CATALOG.phone_bound
        assert "knowledge" in option


@settings(max_examples=300, deadline=None)
@given(
    subject=states, action=st.sampled_from(sorted(DEFAULT.actions)), now=st.one_of(near, moments)
)
def test_decision_invariants(subject: SubjectState, action: str, now: datetime) -> None:
    decision = decide(DEFAULT, action, subject, now)  # never raises for any state
    assert decision.status in ("pending", "denied")
    assert (decision.status == "denied") == (decision.options == [])
    assert all(set(option) <= subject.factors for option in decision.options)
    assert len(set(decision.reasons)) == len(decision.reasons)
    assert decision.held_until is None or decision.held_until > now
    if decision.status == "denied":
        assert decision.reasons
    sms_void = subject.number_recycled or subject.sim_lost_since is not None
    if sms_void:  # T2 and T1 step 4: a recycled number or lost SIM never carries a code
        assert all("sms" not in option for option in decision.options)


# --- validation ---------------------------------------------------------------------------

GOOD = 'version = 1\n[actions.a]\nacr = "aal1"\noptions = [["totp"]]\n'


def error_key(text: str) -> str:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, "test.toml")
    assert caught.value.file == "test.toml"
    return caught.value.key


def test_minimal_policy_parses_with_defaults() -> None:
    rule = parse_policy(GOOD).action("a")
    assert rule.lifetime == timedelta(minutes=10) and rule.failure_limit == 5
    assert rule.on_signal_unavailable == "allow" and rule.conditional == ()


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("version = 1\n[action.a]\n", "action"),
        (GOOD + "colour = 'red'\n", "actions.a.colour"),
        (GOOD + 'sms_blocked_after_sim_chnage = "7d"\n', "actions.a.sms_blocked_after_sim_chnage"),
        ("version = 1\n[defaults]\nlifetim = '10m'\n" + GOOD[11:], "defaults.lifetim"),
        (
            GOOD + '[actions.a.limits]\nfailed_proof = "10/minute"\n',
            "actions.a.limits.failed_proof",
        ),
        (
            GOOD + '[[actions.a.when]]\nsubject_lacks = "sms"\noptions = [["totp"]]\nx = 1\n',
            "actions.a.when[0].x",
        ),
    ],
)
def test_unknown_keys_are_named(text: str, key: str) -> None:
    assert error_key(text) == key


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ('lifetime = "10 minutes"', "actions.a.lifetime"),
        ('hold_after_sim_change = "3w"', "actions.a.hold_after_sim_change"),
        ('sms_blocked_after_sim_change = "0d"', "actions.a.sms_blocked_after_sim_change"),
        ("cooling_off = 24", "actions.a.cooling_off"),
        ("failure_limit = 0", "actions.a.failure_limit"),
        ("failure_limit = 101", "actions.a.failure_limit"),
        ("failure_limit = true", "actions.a.failure_limit"),
        ('on_signal_unavailable = "ignore"', "actions.a.on_signal_unavailable"),
        ('cooling_off_after = ["password_reset"]', "actions.a.cooling_off_after"),
        # Found by hypothesis: a list inside the list was a TypeError, not a policy error.
        (
            'cooling_off = "1h"\ncooling_off_after = [["password_reset"]]',
            "actions.a.cooling_off_after",
        ),
        ('cooling_off = "1h"\ncooling_off_after = [{ a = 1 }]', "actions.a.cooling_off_after"),
        ("sensitive = 1", "actions.a.sensitive"),
        ('limits = { failed_proofs = "lots" }', "actions.a.limits.failed_proofs"),
    ],
)
def test_bad_action_values(line: str, key: str) -> None:
    assert error_key(GOOD + line + "\n") == key


@pytest.mark.parametrize(
    ("options", "key"),
    [
        ("[]", "actions.a.options"),
        ("[[]]", "actions.a.options"),
        ('[["sms", "pin"]]', "actions.a.options"),
        ('[["totp", "totp"]]', "actions.a.options"),
        ('"totp"', "actions.a.options"),
    ],
)
def test_bad_options(options: str, key: str) -> None:
    assert error_key(f'version = 1\n[actions.a]\nacr = "x"\noptions = {options}\n') == key


def test_unknown_factor_named() -> None:
    with pytest.raises(PolicyError, match="unknown factor 'pin'"):
        parse_policy('version = 1\n[actions.a]\nacr = "x"\noptions = [["pin"]]\n')


def test_sms_alone_in_sensitive_action_is_refused() -> None:
    # T1; NIST SP 800-63B-4: SMS is a restricted authenticator.
    text = 'version = 1\n[actions.a]\nacr = "x"\nsensitive = true\noptions = [["totp"], ["sms"]]\n'
    with pytest.raises(PolicyError, match="SMS alone is never enough") as caught:
        parse_policy(text)
    assert caught.value.key == "actions.a.options"


def test_sms_alone_allowed_in_when_block_and_in_plain_actions() -> None:
    parse_policy('version = 1\n[actions.a]\nacr = "x"\noptions = [["sms"]]\n')
    parse_policy(
        'version = 1\n[actions.a]\nacr = "x"\nsensitive = true\noptions = [["sms", "knowledge"]]\n'
        '[[actions.a.when]]\nsubject_lacks = "knowledge"\noptions = [["sms"]]\n'
    )


def test_bad_toml_syntax() -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy("version = 1\n[actions.a\n", "bad.toml")
    assert caught.value.key == "<toml>" and caught.value.file == "bad.toml"
    assert caught.value.problem  # the parser's own message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("version = 1\n", "actions"),
        ("version = 1\n[actions]\n", "actions"),
        (GOOD.replace("version = 1", "version = 2"), "version"),
        (GOOD.replace("version = 1\n", ""), "version"),
        (GOOD.replace('acr = "aal1"', 'acr = ""'), "actions.a.acr"),
        (GOOD.replace('acr = "aal1"\n', ""), "actions.a.acr"),
        (GOOD.replace("[actions.a]", "[actions.Login]"), "actions.Login"),
        (
            "version = 1\n[defaults]\nknowledge_min_length = 4\n" + GOOD[11:],
            "defaults.knowledge_min_length",
        ),
        (GOOD + '[[actions.a.when]]\noptions = [["totp"]]\n', "actions.a.when[0]"),
        (
            GOOD + '[[actions.a.when]]\nsubject_has = "pin"\noptions = [["totp"]]\n',
            "actions.a.when[0].subject_has",
        ),
    ],
)
def test_structural_errors(text: str, key: str) -> None:
    assert error_key(text) == key


def test_load_policy_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path / "nope.toml")
    assert caught.value.key == "<file>"


def test_per_action_limits_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        GOOD + 'lifetime = "5m"\nfailure_limit = 3\nlimits = { failed_proofs = "10/15minutes" }\n'
    )
    loaded = load_policy(path)
    rule = loaded.action("a")
    assert loaded.source == str(path)
    assert rule.lifetime == timedelta(minutes=5) and rule.failure_limit == 3
    assert dict(rule.limits) == {"failed_proofs": "10/15minutes"}


# --- durations, CLI arguments and formatting ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("30s", timedelta(seconds=30)),
        ("10m", timedelta(minutes=10)),
        ("24h", timedelta(hours=24)),
        ("7d", timedelta(days=7)),
    ],
)
def test_parse_duration(text: str, delta: timedelta) -> None:
    assert parse_duration(text) == delta


@pytest.mark.parametrize("text", ["", "7", "d", "-1d", "1.5h", "7 d", "1w", "99999999999d"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_state_from_args() -> None:
    subject = state_from_args(
        ["totp,knowledge", "sms"],
        [
            "sim_swap=2d",
            "sim_unblocked=3d",
            "sim_lost=1h",
            "number_recycled",
            "signal_unavailable",
            "event:password_reset=3h",
            "locked=10m",
        ],
        NOW,
    )
    assert subject == SubjectState(
        factors=frozenset({"totp", "knowledge", "sms"}),
        last_sim_change=NOW - timedelta(days=2),
        sim_lost_since=NOW - timedelta(hours=1),
        number_recycled=True,
        signal_unavailable=True,
        last_events={"password_reset": NOW - timedelta(hours=3)},
        locked_until=NOW + timedelta(minutes=10),
    )


def test_state_from_args_unblock_after_loss_ends_it() -> None:
    subject = state_from_args(["sms"], ["sim_lost=2d", "sim_unblocked=1d"], NOW)
    assert subject.sim_lost_since is None and subject.last_sim_change == NOW - timedelta(days=1)


@pytest.mark.parametrize(
    ("factors", "signals", "message"),
    [
        (["pin"], [], "unknown factor"),
        (["sms"], ["sim_swap"], "needs a duration"),
        (["sms"], ["sim_swap=2 days"], "not a duration"),
        (["sms"], ["number_recycled=1d"], "takes no value"),
        (["sms"], ["event:birthday=1d"], "unknown event"),
        (["sms"], ["moon_phase=full"], "unknown signal"),
    ],
)
def test_state_from_args_rejects(factors, signals, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        state_from_args(factors, signals, NOW)


def test_cli_round_trip(policy: Policy) -> None:
    subject = state_from_args(["totp,knowledge,sms"], ["sim_swap=2d"], NOW)
    text = format_decision(decide(policy, "login", subject, NOW))
    assert text.splitlines()[:4] == [
        "action: login",
        "status: pending",
        "options: totp",
        "reasons: recent_sim_change",
    ]
    assert "actions.login.sms_blocked_after_sim_change = 7d (until 2026-11-28T10:00:00Z)" in text

    held = format_decision(decide(policy, "password_reset", subject, NOW))
    assert "status: denied" in held and "options: none" in held
    assert "held until: 2026-11-24T10:00:00Z" in held  # 72h after the swap


def test_format_decision_without_signals(policy: Policy) -> None:
    text = format_decision(decide(policy, "change_phone", state(*ALL), NOW))
    assert "options: device+knowledge | totp+knowledge" in text
    assert "reasons: none" in text and "held until" not in text
