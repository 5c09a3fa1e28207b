"""Hostile input against the contract: schemathesis drives every operation of our own
``/openapi.json`` through the Flask app in-process (WSGI, no sockets).

Checks: no 5xx (``not_a_server_error``) and every response matches the schema declared for its
status (``response_schema_conformance``). Bounded: ``MAX_EXAMPLES`` per operation and generation
mode; once with a fixed seed (reproducible in CI) and once with a random seed (hypothesis prints
``@seed(...)`` to reproduce a failure). Each operation gets a fresh app and database, so one
operation's rate limit counters never throttle the next.
"""

from __future__ import annotations

from datetime import UTC

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from service.context import ServiceContext
from service.domain.policy import load_policy
from service.factors.registry import CATALOG
from service.http.openapi import ROUTES
from service.settings import packaged_policy_file
from service.usecases.clients import create_client

MAX_EXAMPLES = 30
FIXED_SEED = 20240611
CHECKS = [not_a_server_error, response_schema_conformance]
ACTIONS = sorted(load_policy(packaged_policy_file(), factors=CATALOG).actions)
_PEM = (
    ec.generate_private_key(ec.SECP256R1())
    .public_key()
    .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    .decode()
)
OPERATIONS = [
    pytest.param(method, path, id=f"{method.upper()} {path}") for method, path, *_ in ROUTES
]
FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture
def known(app, ctx: ServiceContext) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """A key with every scope, a subject ``alice`` with a phone and a pending verification,
    so that generated requests also reach the code behind the 404s."""
    key = create_client(ctx, "fuzz", ["verify", "carrier", "admin"])[1]
    headers = {"Authorization": f"Bearer {key}"}
    http = app.test_client()
    assert (
        http.put(
            "/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=headers
        ).status_code
        == 201
    )
    r = http.post(
        "/v1/verifications", json={"subject_id": "alice", "action": "login"}, headers=headers
    )
    assert r.status_code == 201, r.json
    return {"key": key, "verification_id": r.json["verification_id"]}


def _cases(app, known: dict[str, str], method: str, path: str):  # type: ignore[no-untyped-def]
    """Positive and negative cases for one operation, half of them on the known ids."""
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    operation = schema[path][method.upper()]
    fixed = {
        name: value
        for name, value in (
            ("subject_id", "alice"),
            ("verification_id", known["verification_id"]),
        )
        if "{" + name + "}" in path
    }
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
    ]
    if fixed:
        strategies.append(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed))
    body = _plausible_bodies().get((method, path))
    if body is not None:
        # Schema-valid but random strings almost never get past the first check (a valid
        # E.164 number, a known action, RFC 3339): these bodies reach the code behind it.
        strategies.append(
            body.flatmap(
                lambda b: operation.as_strategy(
                    GenerationMode.POSITIVE, path_parameters=fixed or None, body=b
                )
            )
        )
    return st.one_of(strategies)


def _plausible_bodies() -> dict[tuple[str, str], st.SearchStrategy]:
    """Request bodies built from the contract's vocabulary, mixed with arbitrary values."""
    phones = st.sampled_from(["+8613800138000", "+14155552671", "+447911123456"]) | st.text(
        max_size=20
    )
    times = (
        st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat())
        | st.datetimes(timezones=st.just(UTC)).map(lambda d: d.strftime("%Y-%m-%dT%H:%M:%SZ"))
        | st.text(max_size=40)
    )
    factors = st.sampled_from(["totp", "sms", "knowledge", "device"]) | st.text(max_size=8)
    short = st.text(max_size=64)
    return {
        ("put", "/v1/subjects/{subject_id}"): st.fixed_dictionaries(
            {"phone": phones}, optional={"assertion": short}
        ),
        ("post", "/v1/subjects/{subject_id}/factors"): st.fixed_dictionaries(
            {"type": st.sampled_from(["totp", "knowledge", "device"])},
            optional={
                "secret": st.from_regex(r"\A[0-9]{4,12}\Z") | short,
                "public_key": st.just(_PEM) | short,
                "alg": st.sampled_from(["ES256", "EdDSA"]),
                "label": short,
            },
        ),
        ("post", "/v1/subjects/{subject_id}/factors/{factor_id}/activate"): st.fixed_dictionaries(
            {"code": st.from_regex(r"\A[0-9]{6}\Z") | st.text(max_size=16)}
        ),
        ("post", "/v1/verifications"): st.fixed_dictionaries(
            {
                "subject_id": st.just("alice") | st.from_regex(r"\A[a-z]{1,8}\Z"),
                "action": st.sampled_from(ACTIONS) | st.text(max_size=16),
            },
            optional={
                "context": st.dictionaries(
                    st.sampled_from(["ip", "user_agent", "x"]) | st.text(max_size=8),
                    st.none() | st.integers() | st.text(max_size=80) | st.lists(st.integers()),
                    max_size=4,
                )
            },
        ),
        ("post", "/v1/verifications/{verification_id}/challenges"): st.fixed_dictionaries(
            {"factor": factors}
        ),
        ("post", "/v1/verifications/{verification_id}/proofs"): st.fixed_dictionaries(
            {"factor": factors},
            optional={
                "code": st.from_regex(r"\A[0-9]{6}\Z") | st.text(max_size=16),
                "secret": short,
                "factor_id": short,
                "signature": st.text(max_size=200),
            },
        ),
        ("post", "/v1/carrier-events"): st.fixed_dictionaries(
            {
                "phone": phones,
                "type": st.sampled_from(
                    ["sim_swap", "sim_lost", "sim_unblocked", "number_recycled"]
                ),
                "occurred_at": times,
            }
        ),
    }


def _run(app, known: dict[str, str], method: str, path: str, pinned_seed: int | None) -> None:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {known['key']}"}

    @FUZZ_SETTINGS
    @given(case=_cases(app, known, method, path))
    def check(case) -> None:  # type: ignore[no-untyped-def]
        response = case.call(headers=headers)
        case.validate_response(response, checks=CHECKS, headers=headers)

    if pinned_seed is not None:
        check = seed(pinned_seed)(check)
    check()


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_fixed_seed(app, known, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """Reproducible run: the same examples on every CI run."""
    _run(app, known, method, path, FIXED_SEED)


@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_operation_random_seed(app, known, method: str, path: str) -> None:  # type: ignore[no-untyped-def]
    """A fresh seed each run; a failure prints the ``@seed`` that reproduces it."""
    _run(app, known, method, path, None)
