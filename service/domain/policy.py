"""The policy engine: which factor combinations a subject may use for an action, right now.

Pure: no framework, no storage, no clock of its own (``now`` is passed in). The file format and
its validation live in ``service.domain.policy_file``; the names are re-exported here.

``decide`` answers the stolen-phone chain (THREATS.md T1) and recycled numbers (T2): carrier
signals take SMS away or hold sensitive actions, and a subject left with nothing is ``denied``
with reasons a caller can act on, never silently let through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from service.domain.policy_file import (
    SENSITIVE_EVENTS,
    ActionPolicy,
    Conditional,
    FactorCatalog,
    Policy,
    format_duration,
    load_policy,
    parse_duration,
    parse_policy,
)

__all__ = [
    "ActionPolicy",
    "Conditional",
    "FactorCatalog",
    "Decision",
    "Policy",
    "SubjectState",
    "decide",
    "attestation_counts",
    "completed_options",
    "open_options",
    "format_decision",
    "load_policy",
    "parse_duration",
    "parse_policy",
    "state_from_args",
]


@dataclass(frozen=True)
class SubjectState:
    """What the engine knows about a subject when it decides: factors and carrier signals."""

    factors: frozenset[str]
    last_sim_change: datetime | None = None
    sim_lost_since: datetime | None = None
    number_recycled: bool = False
    signal_unavailable: bool = False
    last_events: Mapping[str, datetime] = field(default_factory=dict)
    locked_until: datetime | None = None
    # API.md, Recovery: a subject's first 24 h (none for a phone erased from the tenant lately),
    # and the phone-bound factors a waiting delayed recovery suspends (in no option, except
    # for the actions whose policy says ``suspended_factors_count``).
    onboarding: bool = False
    suspended: frozenset[str] = frozenset()

    def recovered_ago(self, now: datetime) -> timedelta | None:
        """How long ago the subject's latest recovery completed (None: never)."""
        at = self.last_events.get("recovered")
        return None if at is None else now - at

    def recovered_with_knowledge(self) -> bool:
        """Whether the latest recovery proved the PIN (its ``recovered_by_pin`` event)."""
        at, by_pin = self.last_events.get("recovered"), self.last_events.get("recovered_by_pin")
        return at is not None and by_pin is not None and by_pin >= at


@dataclass(frozen=True)
class Decision:
    """The outcome for one action: ``pending`` with usable options, or ``denied`` with reasons."""

    action: str
    status: str
    options: list[list[str]]
    reasons: list[str]
    explanation: list[str]
    held_until: datetime | None


def _ts(moment: datetime) -> str:
    """RFC 3339 UTC, as in the HTTP contract."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _end(start: datetime, window: timedelta) -> datetime:
    """``start + window``, clamped instead of overflowing: ``decide`` never raises on a state."""
    try:
        return start + window
    except OverflowError:
        return datetime.max.replace(tzinfo=UTC)


def _within(now: datetime, moment: datetime, window: timedelta) -> bool:
    """Whether ``moment`` lies inside ``window`` before ``now``; a future moment counts (skew)."""
    return now - moment < window


class _Findings:
    """Reasons (unique, in order of discovery), explanation lines and the latest hold end."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.lines: list[str] = []
        self.held_until: datetime | None = None

    def add(self, reason: str | None, line: str, until: datetime | None = None) -> None:
        if reason is not None and reason not in self.reasons:
            self.reasons.append(reason)
        self.lines.append(line)
        if until is not None and (self.held_until is None or until > self.held_until):
            self.held_until = until


# Holds that come from the SIM: they never block an option with no phone-bound factor (API.md,
# Recovery: none of a recovery's factors travels with the SIM).
_SIM_HOLDS = frozenset({"recent_sim_change", "sim_lost"})


def _holds(rule: ActionPolicy, state: SubjectState, now: datetime, found: _Findings) -> None:
    """Signals that deny the action outright, whatever factors the subject has (step 3)."""
    key = f"actions.{rule.name}"
    if state.locked_until is not None and state.locked_until > now:
        # Abuse control: the per-subject lockout that makes a 6-digit PIN safe (STANDARDS.md).
        found.add(
            "subject_locked",
            f"held: subject locked until {_ts(state.locked_until)}",
            state.locked_until,
        )
    window, changed = rule.hold_after_sim_change, state.last_sim_change
    if window is not None and changed is not None and _within(now, changed, window):
        # T1: after a SIM event the most sensitive actions wait (the thief holds the new SIM).
        until = _end(changed, window)
        found.add(
            "recent_sim_change",
            f"held: SIM changed at {_ts(changed)}, within "
            f"{key}.hold_after_sim_change = {format_duration(window)} (until {_ts(until)})",
            until,
        )
    if window is not None and state.sim_lost_since is not None:
        # T1 step 4: a SIM reported lost holds these actions until it is unblocked.
        found.add(
            "sim_lost",
            f"held: SIM reported lost at {_ts(state.sim_lost_since)} and not unblocked "
            f"since; {key}.hold_after_sim_change applies",
        )
    if rule.cooling_off is not None:
        # T1 "sensitive events chain": the next sensitive action waits out a cooling-off period.
        latest: tuple[datetime, str] | None = None
        for event in rule.cooling_off_after:
            moment = state.last_sim_change if event == "sim_event" else state.last_events.get(event)
            if moment is not None and (latest is None or moment > latest[0]):
                latest = (moment, event)
        if latest is not None and _within(now, latest[0], rule.cooling_off):
            until = _end(latest[0], rule.cooling_off)
            found.add(
                "cooling_off",
                f"held: {latest[1]} at {_ts(latest[0])}, within {key}.cooling_off = "
                f"{format_duration(rule.cooling_off)} (until {_ts(until)})",
                until,
            )
    if state.signal_unavailable and rule.on_signal_unavailable == "deny":
        # Fail closed where money is at stake: no carrier answer, no action.
        found.add(
            "signal_unavailable",
            f"denied: a carrier signal provider could not answer and "
            f"{key}.on_signal_unavailable = deny",
        )


def _sms_ineligible(
    rule: ActionPolicy, state: SubjectState, now: datetime, found: _Findings | None
) -> bool:
    """Whether carrier signals take SMS away for this action (step 4); records why if asked."""
    key = f"actions.{rule.name}"
    ruled_out = False

    def note(reason: str, line: str) -> None:
        nonlocal ruled_out
        ruled_out = True
        if found is not None:
            found.add(reason, f"sms ineligible: {line}")

    if state.number_recycled:
        # T2: the number now belongs to someone else; its codes prove nothing about this subject.
        note("number_recycled", "the number was recycled after it was set on this subject")
    if state.sim_lost_since is not None:
        note(
            "sim_lost", f"SIM reported lost at {_ts(state.sim_lost_since)} and not unblocked since"
        )
    window, changed = rule.sms_blocked_after_sim_change, state.last_sim_change
    if window is not None and changed is not None and _within(now, changed, window):
        # NIST SP 800-63B-4: check SIM change before trusting a restricted (PSTN) authenticator.
        until = _end(changed, window)
        note(
            "recent_sim_change",
            f"SIM changed at {_ts(changed)}, within "
            f"{key}.sms_blocked_after_sim_change = {format_duration(window)} (until {_ts(until)})",
        )
    if state.signal_unavailable and rule.on_signal_unavailable == "block_sms":
        note(
            "signal_unavailable",
            f"a carrier signal provider could not answer and "
            f"{key}.on_signal_unavailable = block_sms",
        )
    return ruled_out


def _base_options(
    rule: ActionPolicy, state: SubjectState, now: datetime, found: _Findings
) -> tuple[tuple[str, ...], ...]:
    """The action's options, or those of the first replacing ``when`` block that applies, plus
    those of every adding block that applies (step 5)."""
    ago, by_pin = state.recovered_ago(now), state.recovered_with_knowledge()
    base: tuple[tuple[str, ...], ...] | None = None
    added: list[tuple[str, ...]] = []
    for index, block in enumerate(rule.conditional):
        if (block.add or base is None) and block.applies(
            state.factors,
            onboarding=state.onboarding,
            recovered_ago=ago,
            recovered_with_knowledge=by_pin,
        ):
            verb = "are offered beside the others" if block.add else "replace the base options"
            found.add(
                None,
                f"actions.{rule.name}.when[{index}] applies ({block.describe()}): its "
                f"options {verb}",
            )
            if block.add:
                added.extend(block.options)
            else:
                base = block.options
    options = list(rule.options if base is None else base)
    options.extend(o for o in added if o not in options)
    return tuple(options)


def _phone_free(
    options: tuple[tuple[str, ...], ...], phone_bound: frozenset[str]
) -> tuple[tuple[str, ...], ...]:
    return tuple(o for o in options if not phone_bound & set(o))


def decide(policy: Policy, action: str, state: SubjectState, now: datetime) -> Decision:
    """Decide which factor combinations ``state``'s subject may use for ``action`` at ``now``.

    Raises ``UnknownAction`` for an action the policy does not define; never raises for a state.
    """
    rule = policy.action(action)
    found = _Findings()
    _holds(rule, state, now, found)
    chosen = _Findings()  # which when blocks applied, explained after the holds
    candidates = _base_options(rule, state, now, chosen)
    if found.reasons:
        # A SIM change never holds an option none of whose factors travels with the SIM.
        free = (
            _phone_free(candidates, policy.factors.phone_bound)
            if set(found.reasons) <= _SIM_HOLDS
            else ()
        )
        if not free:
            return Decision(action, "denied", [], found.reasons, found.lines, found.held_until)
        candidates = free
        found.add(None, "options with a phone-bound factor held; phone-free options remain")
        found.reasons.clear()
        found.held_until = None
    found.lines.extend(chosen.lines)

    phone_number = policy.factors.phone_number  # SMS: the phone number itself
    involves_sms = any(phone_number.intersection(option) for option in candidates)
    # Only name SMS signals when SMS is on offer; otherwise the reason is noise.
    sms_out = _sms_ineligible(rule, state, now, found if involves_sms else None)
    usable = set(state.factors) - (phone_number if sms_out else set())
    if rule.suspended_factors_count:
        usable |= state.suspended  # cancel_recovery: the victim's own phone factors still count
    elif state.suspended:
        found.add(
            None,
            f"suspended while a delayed recovery waits: {', '.join(sorted(state.suspended))}",
        )

    options: list[list[str]] = []
    for option in candidates:
        missing = [factor for factor in option if factor not in usable]
        if not missing:
            options.append(list(option))
            continue
        why = ", ".join(
            f"{f} ineligible"
            if f in state.factors
            else f"{f} suspended while a delayed recovery waits"
            if f in state.suspended
            else f"subject has no active {f}"
            for f in missing
        )
        # A caller can tell the person why: their own recovery (or someone's with their PIN)
        # suspended the phone's factors (API.md, Recovery).
        pending_recovery = any(f in state.suspended for f in missing)
        found.add(
            "recovery_pending" if pending_recovery else None,
            f"option {'+'.join(option)} ruled out: {why}",
        )

    if not options:
        found.add(
            "no_eligible_factors",
            f"denied: no option of actions.{rule.name} can be used by this subject now",
        )
        return Decision(action, "denied", [], found.reasons, found.lines, found.held_until)
    return Decision(action, "pending", options, found.reasons, found.lines, found.held_until)


def attestation_counts(rule: ActionPolicy, options: list[list[str]], method: str) -> bool:
    """Whether an attestation by ``method`` can help complete one of ``options``.

    API.md, Recovery: beside a phone-bound factor or a recovery code only the methods of
    ``attested_methods`` count (``face``, ``in_person``: a stolen phone may hold photos of the ID
    and the national identity app); beside ``knowledge``, ``attested_methods_with_knowledge``.
    """
    return any(
        rule.attests(option) and method in rule.counted_methods(option) for option in options
    )


def open_options(
    rule: ActionPolicy, options: list[list[str]], attested_method: str | None
) -> list[list[str]]:
    """The options a verification can still complete once it accepted an attestation by
    ``attested_method`` (None: none yet): those with ``attested`` where that method does not
    count are closed, so no recovery code is spent on an option that can never complete."""
    if attested_method is None:
        return options
    return [
        option
        for option in options
        if not rule.attests(option) or attested_method in rule.counted_methods(option)
    ]


def completed_options(
    rule: ActionPolicy,
    options: list[list[str]],
    satisfied: list[str],
    attested_method: str | None,
) -> list[list[str]]:
    """The options that the factors in ``satisfied`` complete.

    An option with ``attested`` is complete only when the accepted attestation's method counts
    in it (``ActionPolicy.counted_methods``): an ``id_document`` attestation beside a recovery
    code completes nothing, beside the PIN it does.
    """
    done = set(satisfied)
    return [
        option
        for option in open_options(rule, options, attested_method)
        if set(option) <= done and (not rule.attests(option) or attested_method is not None)
    ]


def _signal_duration(arg: str, value: str | None) -> timedelta:
    if value is None:
        raise ValueError(f"signal {arg!r} needs a duration, e.g. {arg}=2d")
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise ValueError(f"signal {arg!r}: {exc}") from None


def state_from_args(
    factors: list[str], signals: list[str], now: datetime, *, known: frozenset[str]
) -> SubjectState:
    """Build a ``SubjectState`` from CLI arguments (``idv policy explain``).

    ``factors``: names, each item may hold several separated by commas. ``signals``:
    ``sim_swap=2d`` / ``sim_unblocked=2d`` (a SIM change that long before ``now``),
    ``sim_lost=1h``, ``number_recycled``, ``signal_unavailable``, ``onboarding`` (the subject's
    first 24 h), ``event:NAME=3h`` (``event:recovered=10m``, ``event:recovered_by_pin=10m``) and
    ``locked=10m`` (locked for that much longer). Bad arguments raise ``ValueError``.
    """
    names = {name.strip() for item in factors for name in item.split(",") if name.strip()}
    unknown = sorted(names - known)
    if unknown:
        raise ValueError(
            f"unknown factor(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    sim_change: datetime | None = None
    sim_lost: datetime | None = None
    unblocked: datetime | None = None
    recycled = unavailable = False
    events: dict[str, datetime] = {}
    locked: datetime | None = None
    onboarding = False
    for raw in signals:
        arg = raw.strip()
        name, _, value = arg.partition("=")
        value_or_none = value if "=" in arg else None
        if name in ("number_recycled", "signal_unavailable", "onboarding"):
            if value_or_none is not None:
                raise ValueError(f"signal {name!r} takes no value")
            recycled = recycled or name == "number_recycled"
            unavailable = unavailable or name == "signal_unavailable"
            onboarding = onboarding or name == "onboarding"
        elif name in ("sim_swap", "sim_unblocked"):
            moment = now - _signal_duration(name, value_or_none)
            sim_change = moment if sim_change is None else max(sim_change, moment)
            if name == "sim_unblocked":
                unblocked = moment if unblocked is None else max(unblocked, moment)
        elif name == "sim_lost":
            moment = now - _signal_duration(name, value_or_none)
            sim_lost = moment if sim_lost is None else max(sim_lost, moment)
        elif name == "locked":
            locked = now + _signal_duration(name, value_or_none)
        elif name.startswith("event:"):
            event = name.removeprefix("event:")
            known = SENSITIVE_EVENTS | {"recovered_by_pin"}
            if event not in known:
                raise ValueError(f"unknown event {event!r}; known: {', '.join(sorted(known))}")
            events[event] = now - _signal_duration(name, value_or_none)
        else:
            raise ValueError(
                f"unknown signal {arg!r}; use sim_swap=D, sim_unblocked=D, sim_lost=D, "
                "number_recycled, signal_unavailable, onboarding, event:NAME=D or locked=D"
            )
    if sim_lost is not None and unblocked is not None and unblocked > sim_lost:
        sim_lost = None  # a sim_lost followed by a later sim_unblocked is over
    return SubjectState(
        factors=frozenset(names),
        last_sim_change=sim_change,
        sim_lost_since=sim_lost,
        number_recycled=recycled,
        signal_unavailable=unavailable,
        last_events=events,
        locked_until=locked,
        onboarding=onboarding,
    )


def format_decision(decision: Decision) -> str:
    """Multi-line text for the CLI: status, options, reasons, hold end and explanation."""
    options = " | ".join("+".join(option) for option in decision.options) or "none"
    lines = [
        f"action: {decision.action}",
        f"status: {decision.status}",
        f"options: {options}",
        f"reasons: {', '.join(decision.reasons) or 'none'}",
    ]
    if decision.held_until is not None:
        lines.append(f"held until: {_ts(decision.held_until)}")
    lines.append("explanation:")
    lines.extend(
        f"  - {line}" for line in decision.explanation or ["no signal narrowed the options"]
    )
    return "\n".join(lines)
