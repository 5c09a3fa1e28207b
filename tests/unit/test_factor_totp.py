"""TOTP verifier: drift window, malformed codes, secrets and provisioning (RFC 6238)."""

from __future__ import annotations

import base64
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.factors import totp

SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"
NOW = 1_700_000_015.0  # mid-step, fixed: no sleeping, no wall clock
T = int(NOW // 30)


def code_at_step(step: int) -> str:
    """The code an authenticator shows during time step ``step``."""
    return pyotp.TOTP(SECRET).at(step * 30)


def test_constants_follow_rfc_6238():
    assert (totp.STEP_SECONDS, totp.DIGITS, totp.DRIFT_STEPS) == (30, 6, 1)


def test_new_secret_is_160_bits_of_base32():
    secret = totp.new_secret()
    assert len(secret) == 32
    assert len(base64.b32decode(secret)) == 20  # RFC 4226 §4: 160 bits
    assert totp.new_secret() != secret


@pytest.mark.parametrize("offset", [-1, 0, 1])
def test_code_within_one_step_of_drift_is_accepted_with_its_step(offset):
    # RFC 6238 §5.2: one step of drift each way
    assert totp.matching_step(SECRET, code_at_step(T + offset), NOW) == T + offset


@pytest.mark.parametrize("offset", [-3, -2, 2, 3])
def test_code_two_or_more_steps_away_is_refused(offset):
    code = code_at_step(T + offset)
    assert code not in {code_at_step(T + d) for d in (-1, 0, 1)}  # no collision in the fixture
    assert totp.matching_step(SECRET, code, NOW) is None


def test_step_boundaries_use_floor_of_now():
    start = T * 30.0
    assert totp.matching_step(SECRET, code_at_step(T - 1), start) == T - 1
    assert totp.matching_step(SECRET, code_at_step(T + 2), start + 29.999) is None
    assert totp.matching_step(SECRET, code_at_step(T + 2), start + 30.0) == T + 2


def test_wrong_code_is_refused():
    valid = {code_at_step(T + d) for d in (-1, 0, 1)}
    wrong = next(f"{n:06d}" for n in range(1_000_000) if f"{n:06d}" not in valid)
    assert totp.matching_step(SECRET, wrong, NOW) is None


def test_code_for_another_secret_is_refused():
    other = pyotp.TOTP("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").at(NOW)
    assert other not in {code_at_step(T + d) for d in (-1, 0, 1)}  # no collision in the fixture
    assert totp.matching_step(SECRET, other, NOW) is None


@pytest.mark.parametrize(
    "code",
    [
        *("", "12345", "1234567", "12345a", " 123456", "123456 ", "12 456", "-12345"),
        *("１２３４５６", "١٢٣٤٥٦", "12345\n", None, 123456, b"123456"),
    ],
)
def test_malformed_codes_are_none_not_errors(code):
    assert totp.matching_step(SECRET, code, NOW) is None


def test_fullwidth_digits_of_a_valid_code_are_refused():
    code = code_at_step(T)
    fullwidth = "".join(chr(ord(c) + 0xFEE0) for c in code)
    assert totp.matching_step(SECRET, fullwidth, NOW) is None


@given(st.text(max_size=12))
def test_arbitrary_text_never_raises(code):
    result = totp.matching_step(SECRET, code, NOW)
    assert result is None or result in (T - 1, T, T + 1)


def test_provisioning_uri_round_trips_through_pyotp():
    uri = totp.provisioning_uri(SECRET, "alice@example.com", "idv")
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    query = parse_qs(parts.query)
    assert query["secret"] == [SECRET]
    assert query["issuer"] == ["idv"]
    parsed = pyotp.parse_uri(uri)
    assert parsed.now() == pyotp.TOTP(SECRET).now()


def test_qr_svg_is_an_svg_document():
    svg = totp.qr_svg(totp.provisioning_uri(SECRET, "alice", "idv"))
    assert svg.startswith(("<?xml", "<svg"))
    assert "<svg" in svg and svg.rstrip().endswith("</svg>")


# RFC 6238 Appendix B, SHA-1 (secret "12345678901234567890"): the vectors are eight digits;
# six-digit codes are their low six digits (RFC 4226 §5.3: value mod 10^Digit).
RFC_6238_SECRET = base64.b32encode(b"12345678901234567890").decode()


@pytest.mark.parametrize(
    ("at", "eight_digits"),
    [
        (59, "94287082"),
        (1111111109, "07081804"),
        (1111111111, "14050471"),
        (1234567890, "89005924"),
        (2000000000, "69279037"),
        (20000000000, "65353130"),
    ],
)
def test_rfc_6238_appendix_b_vectors(at, eight_digits):
    assert totp.matching_step(RFC_6238_SECRET, eight_digits[-6:], float(at)) == at // 30


@settings(max_examples=200)
@given(
    secret=st.binary(min_size=14, max_size=40).map(lambda b: base64.b32encode(b).decode()),
    counter=st.integers(min_value=0, max_value=2**40),
    lower=st.booleans(),
    unpadded=st.booleans(),
)
def test_codes_are_pyotps_codes(secret, counter, lower, unpadded):
    # The hand-rolled HOTP (one hmac.digest per code) against the library it replaced on the
    # hot path, for any secret length, letter case and padding pyotp itself accepts.
    written = secret.lower() if lower else secret
    written = written.rstrip("=") if unpadded else written
    expected = pyotp.TOTP(written).generate_otp(counter)
    assert totp.matching_step(written, expected, counter * 30.0 + 15) == counter


def test_a_secret_under_112_bits_is_refused_as_pyotp_refuses_it():
    short = base64.b32encode(b"x" * 13).decode()
    with pytest.raises(ValueError):
        pyotp.TOTP(short).now()
    with pytest.raises(ValueError):
        totp.matching_step(short, "123456", NOW)
