"""The policy engine and file for recovery codes and attested proofing (API.md, Recovery)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import pytest

from service.domain import assertions
from service.domain import policy as engine
from service.domain.errors import PolicyError
from service.domain.policy import (
    SubjectState,
    attestation_counts,
    completed_options,
    decide,
    open_options,
)
from service.factors import attested, registry
from service.factors.registry import CATALOG

parse_policy = functools.partial(engine.parse_policy, factors=CATALOG)

NOW = datetime(2026, 12, 7, tzinfo=UTC)

RECOVER = """
version = 1
[actions.recover]
acr = "aal2"
sensitive = true
options = [["knowledge", "recovery_code"], ["knowledge", "attested"], ["recovery_code", "attested"]]
"""


def test_both_factors_are_known_and_not_phone_bound():
    # A thief with the unlocked phone has neither the printed codes nor the person's face.
    assert {"recovery_code", "attested"} <= CATALOG.names
    assert not {"recovery_code", "attested"} & CATALOG.phone_bound


def test_default_method_rule():
    rule = parse_policy(RECOVER).action("recover")
    assert rule.attested_methods == ("face", "in_person")
    assert rule.attested_methods_with_knowledge == ("face", "eid", "id_document", "in_person")


@pytest.mark.parametrize("method", ["id_document", "eid"])
def test_id_document_and_eid_complete_only_beside_knowledge(method):
    rule = parse_policy(RECOVER).action("recover")
    options = [list(o) for o in rule.options]
    with_codes = completed_options(rule, options, ["attested", "recovery_code"], method)
    assert with_codes == []
    with_pin = completed_options(rule, options, ["attested", "knowledge"], method)
    assert with_pin == [["knowledge", "attested"]]
    assert attestation_counts(rule, options, method)
    assert not attestation_counts(rule, [["recovery_code", "attested"]], method)


@pytest.mark.parametrize("method", ["face", "in_person"])
def test_face_and_in_person_complete_beside_a_recovery_code(method):
    rule = parse_policy(RECOVER).action("recover")
    options = [list(o) for o in rule.options]
    assert completed_options(rule, options, ["attested", "recovery_code"], method) == [
        ["recovery_code", "attested"]
    ]


def test_an_accepted_method_closes_the_options_where_it_does_not_count():
    rule = parse_policy(RECOVER).action("recover")
    options = [list(o) for o in rule.options]
    assert open_options(rule, options, None) == options
    assert open_options(rule, options, "face") == options
    assert open_options(rule, options, "eid") == [
        ["knowledge", "recovery_code"],
        ["knowledge", "attested"],
    ]


def test_options_without_attested_ignore_the_method():
    rule = parse_policy(RECOVER).action("recover")
    options = [list(o) for o in rule.options]
    done = completed_options(rule, options, ["knowledge", "recovery_code"], None)
    assert done == [["knowledge", "recovery_code"]]


def test_methods_are_set_in_defaults_and_overridden_per_action():
    policy = parse_policy(
        RECOVER.replace("version = 1", 'version = 1\n[defaults]\nattested_methods = ["face"]')
        + '\n[actions.strict]\nacr = "aal2"\noptions = [["knowledge", "attested"]]\n'
        'attested_methods_with_knowledge = ["in_person"]\n'
    )
    assert policy.action("recover").attested_methods == ("face",)
    strict = policy.action("strict")
    assert strict.attested_methods == ("face",)
    assert strict.attested_methods_with_knowledge == ("in_person",)
    assert (
        completed_options(strict, [["knowledge", "attested"]], ["attested", "knowledge"], "face")
        == []
    )


@pytest.mark.parametrize(
    ("where", "value", "problem"),
    [
        ("defaults", "[]", "non-empty"),
        ("defaults", '"face"', "non-empty list"),
        ("defaults", '["selfie"]', "unknown method"),
        ("defaults", '["face", "face"]', "twice"),
        ("actions.recover", "[1]", "unknown method"),
    ],
)
def test_method_settings_are_validated_strictly(where, value, problem):
    if where == "defaults":
        text = RECOVER.replace(
            "version = 1", f"version = 1\n[defaults]\nattested_methods = {value}"
        )
        key = "defaults.attested_methods"
    else:
        text = RECOVER + f"attested_methods_with_knowledge = {value}\n"
        key = "actions.recover.attested_methods_with_knowledge"
    with pytest.raises(PolicyError) as err:
        parse_policy(text)
    assert err.value.key == key and problem in str(err.value)


def test_options_offer_the_new_factors_only_when_the_subject_can_use_them():
    policy = parse_policy(RECOVER)
    nothing = decide(policy, "recover", SubjectState(frozenset({"knowledge"})), NOW)
    assert nothing.status == "denied" and nothing.reasons == ["no_eligible_factors"]
    codes = decide(policy, "recover", SubjectState(frozenset({"knowledge", "recovery_code"})), NOW)
    assert codes.options == [["knowledge", "recovery_code"]]
    both = decide(
        policy, "recover", SubjectState(frozenset({"knowledge", "recovery_code", "attested"})), NOW
    )
    assert len(both.options) == 3


def test_amr_of_recovery_code_is_otp_and_face_attestation_is_face():
    # RFC 8176 §2: a look-up secret is an "otp"; facial recognition is "face".
    def amr(factors: list[str], method: str | None = None) -> list[str]:
        extra = [attested.METHOD_AMR[method]] if method in attested.METHOD_AMR else []
        return assertions.amr_for(registry.amr_values(factors, extra))

    assert amr(["knowledge", "recovery_code"]) == ["otp", "pin", "mfa"]
    assert amr(["attested", "recovery_code"], "face") == ["face", "otp", "mfa"]
    assert amr(["attested", "knowledge"], "id_document") == ["pin"]
    assert amr(["attested"], "in_person") == []
