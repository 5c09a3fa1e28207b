"""Hypothesis against every parser of outside input: phone numbers, carrier events, policy files,
device keys and signatures, assertions. Each may refuse its input only in its documented way
(InvalidRequest, PolicyError, False, StepUpRequired); anything else would be a 500 or a crash
at start-up.
"""

from __future__ import annotations

import base64
import functools
import json
import math
import tomllib
from datetime import UTC, datetime, timedelta
from typing import Any

import phonenumbers
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.crypto.keyring import KeyRing
from service.domain import assertions
from service.domain import policy as engine
from service.domain.errors import InvalidRequest, PolicyError, StepUpRequired
from service.domain.phone import mask_phone, normalize_e164
from service.domain.policy import Policy
from service.factors import device
from service.factors.registry import CATALOG
from service.settings import packaged_policy_file

parse_policy = functools.partial(engine.parse_policy, factors=CATALOG)

FUZZ = settings(max_examples=200, deadline=None, database=None)
# Function-scoped fixtures (the Flask app) are fine here: every example is independent of state.
FUZZ_HTTP = settings(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)


# -- phone numbers ---------------------------------------------------------------------------
phone_like = (
    st.text(max_size=24)
    | st.text(alphabet="+0123456789 -()", max_size=20)
    | st.from_regex(r"\A\+[0-9]{1,17}\Z")
    | st.integers().map(lambda n: f"+{n}")
)


@FUZZ
@given(raw=phone_like | json_values)
@example(raw="+٨٦١٣٨٠٠١٣٨٠٠٠")  # Arabic-Indic digits pass str.isdigit()
@example(raw="+86138001380²0")  # so does a superscript two
@example(raw="+8613800138000\n")
def test_normalize_e164_refuses_only_with_invalid_request(raw: Any) -> None:
    """Any input: the canonical E.164 string back, or InvalidRequest; never another error."""
    try:
        e164 = normalize_e164(raw)
    except InvalidRequest:
        return
    assert e164 == raw  # only canonical input is accepted, and it comes back unchanged
    assert e164.isascii() and e164[1:].isdigit()
    masked = mask_phone(e164)
    assert masked.startswith("+") and "*" in masked


@FUZZ
@given(
    region=st.sampled_from(sorted(phonenumbers.SUPPORTED_REGIONS)),
    kind=st.sampled_from(
        [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE]
    ),
)
def test_valid_e164_round_trips(region: str, kind: int) -> None:
    """Every region's example number in E.164 is accepted as it is."""
    number = phonenumbers.example_number_for_type(region, kind)
    if number is None:
        return
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    if not 8 <= len(e164) <= 16:
        return
    assert normalize_e164(e164) == e164


# -- carrier events through the HTTP layer ---------------------------------------------------
timestamps = (
    st.datetimes(timezones=st.timezones() | st.just(UTC)).map(lambda d: d.isoformat())
    | st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)).map(
        lambda d: d.strftime("%Y-%m-%dT%H:%M:%S") + "+01:00"
    )
    | st.text(max_size=40)
)
carrier_bodies = (
    st.fixed_dictionaries(
        {},
        optional={
            "phone": st.sampled_from(["+8613800138000", "+14155552671"]) | phone_like | json_values,
            "type": st.sampled_from(["sim_swap", "sim_lost", "sim_unblocked", "number_recycled"])
            | json_values,
            "occurred_at": timestamps | json_values,
            "extra": json_values,
        },
    )
    | json_values
)


@FUZZ_HTTP
@given(body=carrier_bodies)
def test_carrier_event_is_202_or_400(http, carrier_auth, body: Any) -> None:  # type: ignore[no-untyped-def]
    """Arbitrary JSON to ``POST /v1/carrier-events``: 202 or a 400 error body, never a 5xx."""
    r = http.post("/v1/carrier-events", json=body, headers=carrier_auth)
    assert r.status_code in (202, 400), (r.status_code, r.json)
    if r.status_code == 400:
        assert r.json["error"] == "invalid_request" and r.json["message"]


# Any code point, surrogates and U+0000 included, as a JSON escape when json.dumps writes it.
any_text = st.text(st.characters() | st.characters(categories=["Cs"]), max_size=12)
any_json = st.recursive(
    st.none() | st.integers() | any_text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


def _unstorable(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, dict):
        return any(_unstorable(k) or _unstorable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable(v) for v in value)
    return False


@FUZZ_HTTP
@given(context=st.dictionaries(any_text, any_json, max_size=3))
@example(context={"ip": "a\x00b"})  # a 500 on PostgreSQL: the audit entry could not be written
@example(context={"user_agent": "\ud800"})  # a 500 on both: no UTF-8 encoder takes it
def test_verification_context_is_201_or_400(http, auth, user, context: Any) -> None:  # type: ignore[no-untyped-def]
    """Any JSON as a verification's context (it is audited): 201, or 400 exactly when a string
    in it holds U+0000 or an unpaired surrogate; never a 5xx."""
    body = json.dumps({"subject_id": "alice", "action": "login", "context": context})
    r = http.post("/v1/verifications", data=body, content_type="application/json", headers=auth)
    assert r.status_code == (400 if _unstorable(context) else 201), (r.status_code, r.json)


@pytest.mark.parametrize("occurred_at", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_carrier_event_at_the_edge_of_time_is_400(http, carrier_auth, occurred_at: str) -> None:  # type: ignore[no-untyped-def]
    """Regression: a timestamp whose UTC form is outside year 1..9999 is a 400, not a 500."""
    r = http.post(
        "/v1/carrier-events",
        json={"phone": "+8613800138000", "type": "sim_swap", "occurred_at": occurred_at},
        headers=carrier_auth,
    )
    assert r.status_code == 400, r.json


# -- policy files ----------------------------------------------------------------------------
def _str(text: str) -> str:
    """A TOML basic string (JSON's ``\\ud83d`` surrogate escapes are not valid TOML)."""
    out = []
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml(value: Any) -> str:
    """A minimal TOML writer for generated documents: everything as inline values."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "nan"
    if isinstance(value, str):
        return _str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_str(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def _document(data: dict[str, Any]) -> str:
    return "\n".join(f"{_str(k)} = {_toml(v)}" for k, v in data.items()) + "\n"


DEFAULT_POLICY = tomllib.loads(packaged_policy_file().read_text())
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(["0s", "10m", "7d", "99999999999d", "-1h", "sms", "totp", "knowledge"])
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(min_size=1, max_size=12), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def mutated_policies(draw: st.DrawFn) -> dict[str, Any]:
    """The default policy with a few leaves replaced, deleted or added."""
    data = json.loads(json.dumps(DEFAULT_POLICY))
    for _ in range(draw(st.integers(1, 4))):
        node = data
        while True:
            keys = list(node) if isinstance(node, dict) else list(range(len(node)))
            if not keys:
                break
            key = draw(st.sampled_from(keys))
            child = node[key]
            if isinstance(child, dict | list) and draw(st.integers(0, 4)) > 0:
                node = child
                continue
            op = draw(st.sampled_from(["replace", "delete", "add"]))
            if op == "replace":
                node[key] = draw(toml_values)
            elif op == "delete":
                del node[key]
            elif isinstance(node, dict):
                node[draw(st.text(min_size=1, max_size=12))] = draw(toml_values)
            else:
                node.append(draw(toml_values))
            break
    return data


@pytest.mark.parametrize(
    "options",
    ['[[["totp"]]]', "[[{a = 1}]]"],
)
def test_policy_with_a_list_for_a_factor_is_a_policy_error(options: str) -> None:
    """Regression: a list or table where a factor name belongs is a PolicyError naming the key."""
    text = f'version = 1\n[actions.login]\nacr = "aal1"\noptions = {options}\n'
    with pytest.raises(PolicyError, match="actions.login.options"):
        parse_policy(text)


def test_policy_with_a_list_for_subject_lacks_is_a_policy_error() -> None:
    """Regression: ``subject_lacks = ["knowledge"]`` is a PolicyError, not a TypeError."""
    text = (
        'version = 1\n[actions.login]\nacr = "aal1"\noptions = [["totp"]]\n'
        '[[actions.login.when]]\nsubject_lacks = ["knowledge"]\noptions = [["sms"]]\n'
    )
    with pytest.raises(PolicyError, match="subject_lacks"):
        parse_policy(text)


@FUZZ
@given(text=st.text(max_size=300))
def test_parse_policy_arbitrary_text(text: str) -> None:
    """Any text: a Policy or a PolicyError."""
    try:
        result = parse_policy(text, "fuzz.toml")
    except PolicyError:
        return
    assert isinstance(result, Policy)


@settings(max_examples=400, deadline=None, database=None)
@given(data=mutated_policies())
def test_parse_policy_mutated_default(data: dict[str, Any]) -> None:
    """Near-valid policies (the default with a few leaves changed): a Policy or a PolicyError
    naming a key; never a TypeError, KeyError or OverflowError at start-up."""
    text = _document(data)
    try:
        result = parse_policy(text, "fuzz.toml")
    except PolicyError as exc:
        assert "fuzz.toml" in str(exc)
        return
    assert isinstance(result, Policy) and result.actions


def test_default_policy_survives_the_writer() -> None:
    """The TOML writer above is faithful: the default policy written back still parses."""
    assert parse_policy(_document(DEFAULT_POLICY)).actions.keys() == (
        parse_policy(packaged_policy_file().read_text()).actions.keys()
    )


# -- device keys and signatures --------------------------------------------------------------
EC_KEY = ec.generate_private_key(ec.SECP256R1())
ED_KEY = ed25519.Ed25519PrivateKey.generate()


def _pem(key: Any) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


PEMS = {"ES256": _pem(EC_KEY), "EdDSA": _pem(ED_KEY)}
OTHER_CURVE_PEM = _pem(ec.generate_private_key(ec.SECP384R1()))
pems = (
    st.sampled_from([*PEMS.values(), OTHER_CURVE_PEM])
    | st.text(max_size=300)
    | st.binary(max_size=300)
    | st.sampled_from(list(PEMS.values())).flatmap(
        lambda p: st.integers(0, len(p) - 1).map(lambda i: p[:i] + "A" + p[i + 1 :])
    )
    | json_values
)
algs = st.sampled_from(["ES256", "EdDSA", "RS256", "none", "", "es256"]) | json_values


@FUZZ
@given(pem=pems, alg=algs)
def test_load_public_key_refuses_only_with_invalid_request(pem: Any, alg: Any) -> None:
    """Any key text and alg: a key of the named type, or InvalidRequest."""
    try:
        key = device.load_public_key(pem, alg)
    except InvalidRequest:
        return
    expected = ec.EllipticCurvePublicKey if alg == "ES256" else ed25519.Ed25519PublicKey
    assert isinstance(key, expected)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


CHALLENGE = device.make_challenge("vf_x", "login", 2_000_000_000, b"\x01" * 32)
GOOD_SIGNATURES = {
    "ES256": _b64(EC_KEY.sign(CHALLENGE.encode(), ec.ECDSA(hashes.SHA256()))),
    "EdDSA": _b64(ED_KEY.sign(CHALLENGE.encode())),
}
signatures = (
    st.text(max_size=200)
    | st.binary(max_size=100).map(_b64)
    | st.sampled_from(list(GOOD_SIGNATURES.values())).flatmap(
        lambda s: st.integers(0, len(s) - 1).map(
            lambda i: s[:i] + ("A" if s[i] != "A" else "B") + s[i + 1 :]
        )
    )
    | json_values
)


@FUZZ
@given(pem=pems, alg=algs, challenge=st.just(CHALLENGE) | st.text(max_size=100), sig=signatures)
def test_verify_signature_never_raises(pem: Any, alg: Any, challenge: Any, sig: Any) -> None:
    """Garbage keys, algs, challenges and signatures are False, never an exception; a tampered
    signature never verifies."""
    assert device.verify_signature(pem, alg, challenge, sig) in (True, False)


@FUZZ
@given(alg=st.sampled_from(["ES256", "EdDSA"]), data=st.data())
def test_tampered_signature_is_false(alg: str, data: st.DataObject) -> None:
    """One changed character of a good signature, or a signature over another challenge: False."""
    good = GOOD_SIGNATURES[alg]
    assert device.verify_signature(PEMS[alg], alg, CHALLENGE, good)
    i = data.draw(st.integers(0, len(good) - 1))
    tampered = good[:i] + ("A" if good[i] != "A" else "B") + good[i + 1 :]
    if base64.urlsafe_b64decode(tampered + "==") == base64.urlsafe_b64decode(good + "=="):
        return  # the last character's low bits are padding: same bytes, same signature
    assert not device.verify_signature(PEMS[alg], alg, CHALLENGE, tampered)
    other = data.draw(st.text(max_size=50).filter(lambda t: t != CHALLENGE))
    assert not device.verify_signature(PEMS[alg], alg, other, good)


@FUZZ
@given(challenge=st.text(max_size=200) | st.just(CHALLENGE))
def test_parse_challenge_total(challenge: str) -> None:
    """parse_challenge is total: a dict that rebuilds the same string, or None."""
    parsed = device.parse_challenge(challenge)
    if parsed is not None:
        assert device.make_challenge(**parsed) == challenge


# -- assertions (JWTs handed back to idv) ----------------------------------------------------
RING = KeyRing.generate()
NOW = datetime(2030, 1, 1, tzinfo=UTC)
CLAIMS = dict(issuer="idv", audience="cl_a", subject="alice", action="enroll_factor")
GOOD_TOKEN = assertions.issue(
    RING,
    **CLAIMS,
    acr="aal2",
    amr=["otp", "pin"],
    auth_time=NOW,
    now=NOW,
    ttl=300,
    jti="vf_1",
)


def _segment(value: Any) -> str:
    return _b64(json.dumps(value).encode())


def _forged_tokens() -> st.SearchStrategy[str]:
    """Tokens with a chosen header and payload and the good token's signature."""
    header, payload, sig = GOOD_TOKEN.split(".")
    real_header = json.loads(base64.urlsafe_b64decode(header + "=="))
    headers = (
        st.fixed_dictionaries(
            {},
            optional={
                "alg": st.sampled_from(["ES256", "EdDSA", "none", "HS256"]) | json_values,
                "kid": st.just(real_header["kid"]) | json_values,
                "typ": st.just(assertions.TYP) | json_values,
                "crit": json_values,
            },
        )
        | json_values
    )
    payloads = (
        st.fixed_dictionaries(
            {},
            optional={
                "iss": st.just("idv") | json_values,
                "aud": st.just("cl_a") | json_values,
                "sub": st.just("alice") | json_values,
                "action": st.just("enroll_factor") | json_values,
                "exp": st.integers() | st.floats() | json_values,
                "iat": st.integers() | json_values,
                "jti": json_values,
            },
        )
        | json_values
    )
    return st.builds(
        lambda h, p, s: f"{_segment(h)}.{_segment(p)}.{s}",
        headers,
        payloads,
        st.just(sig) | st.text(max_size=20),
    )


tokens = (
    st.text(max_size=200)
    | st.lists(st.text(max_size=30), min_size=1, max_size=5).map(".".join)
    | st.integers(0, len(GOOD_TOKEN) - 1).map(
        lambda i: GOOD_TOKEN[:i] + ("A" if GOOD_TOKEN[i] != "A" else "B") + GOOD_TOKEN[i + 1 :]
    )
    | _forged_tokens()
)


@FUZZ
@given(token=tokens)
def test_assertion_garbage_is_step_up_required(token: str) -> None:
    """Garbage, tampered and forged tokens raise StepUpRequired, never anything else."""
    try:
        assertions.verify(RING, token, **CLAIMS, now=NOW)
    except StepUpRequired:
        return
    # Only the genuine token (or one that decodes to the same bytes) may pass.
    assert token.split(".")[1] == GOOD_TOKEN.split(".")[1]


def test_good_assertion_verifies_and_expires() -> None:
    """The reference token for the fuzzers above verifies, and not once expired."""
    assert assertions.verify(RING, GOOD_TOKEN, **CLAIMS, now=NOW)["sub"] == "alice"
    with pytest.raises(StepUpRequired):
        assertions.verify(RING, GOOD_TOKEN, **CLAIMS, now=NOW + timedelta(seconds=300))
