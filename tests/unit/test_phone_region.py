"""National numbers under ``IDV_DEFAULT_REGION`` (service.domain.phone): pure, no app."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.domain.errors import InvalidRequest
from service.domain.phone import is_region, normalize_e164


@given(st.text(max_size=24), st.sampled_from(["CN", "GB", "US", "DE"]))
def test_any_text_is_e164_or_a_400(raw, region):
    try:
        e164 = normalize_e164(raw, region)
    except InvalidRequest:
        return
    # Whatever is accepted is canonical E.164 and valid (API.md: answers stay E.164).
    parsed = phonenumbers.parse(e164, None)
    assert phonenumbers.is_valid_number(parsed)
    assert phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) == e164


@given(st.from_regex(r"1[3-9][0-9]{9}", fullmatch=True))
def test_a_cn_mobile_number_is_its_e164_form(national):
    if not phonenumbers.is_valid_number(phonenumbers.parse("+86" + national, None)):
        return
    assert normalize_e164(national, "CN") == "+86" + national
    assert normalize_e164("+86" + national, "CN") == "+86" + national


@pytest.mark.parametrize(
    ("raw", "region", "e164"),
    [
        ("07400123456", "GB", "+447400123456"),  # trunk 0 dropped
        ("2015550123", "US", "+12015550123"),
        ("13800138000", "CN", "+8613800138000"),
    ],
)
def test_trunk_prefixes_are_the_regions_own(raw, region, e164):
    assert normalize_e164(raw, region) == e164


def test_without_a_region_only_e164():
    with pytest.raises(InvalidRequest):
        normalize_e164("13800138000")
    with pytest.raises(InvalidRequest):
        normalize_e164("01144207700900", "US")  # US international prefix: not a national number
    assert is_region("CN") and not is_region("XX") and not is_region("cn")
