"""Recovery codes (NIST SP 800-63B-4 look-up secrets): generation, normalisation, keyed digests."""

from __future__ import annotations

import math
import re
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from service.factors import recovery_code as rc

KEY = bytes(range(32))


def test_a_set_is_ten_distinct_codes_of_four_groups_of_four():
    codes = rc.new_codes()
    assert len(codes) == 10 == len(set(codes))
    for code in codes:
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{4}(-[0-9A-HJKMNP-TV-Z]{4}){3}", code), code


def test_each_code_carries_at_least_64_random_bits():
    # NIST SP 800-63B-4: a look-up secret has at least 64 bits of entropy (here 16 x 5 = 80).
    assert len(set(rc.ALPHABET)) == 32 and rc.CODE_LENGTH == 16
    assert rc.BITS_PER_CODE == rc.CODE_LENGTH * math.log2(len(rc.ALPHABET)) == 80 >= 64
    # Ambiguous letters never appear: I, L, O (read as 1 and 0) and U.
    assert not set("ILOU") & set(rc.ALPHABET)


def test_symbols_are_drawn_uniformly():
    # 200 sets = 32,000 symbols: each of the 32 expected 1,000 times; a biased draw (e.g. a
    # modulo of a byte over 32 symbols is fine, over 30 would not be) shows far outside +-20%.
    counts = Counter(ch for _ in range(200) for code in rc.new_codes() for ch in code if ch != "-")
    assert set(counts) == set(rc.ALPHABET)
    assert all(800 < n < 1200 for n in counts.values()), counts


def test_two_sets_share_no_code():
    assert not set(rc.new_codes()) & set(rc.new_codes())


def test_typing_is_case_space_and_hyphen_insensitive():
    code = "7K3M-Q9XD-2HVR-8BNC"
    expected = "7K3MQ9XD2HVR8BNC"
    for typed in (
        code,
        code.lower(),
        "7k3m q9xd 2hvr 8bnc",
        " 7K3MQ9XD2HVR8BNC ",
        "7-k-3-m q9xd2hvr8bnc",
    ):
        assert rc.normalize(typed) == expected, typed


def test_lookalike_letters_read_as_digits():
    # Crockford base32: O is 0, I and L are 1 (what people copy from a printed sheet).
    assert rc.normalize("OOOO-IIII-LLLL-0000") == "0000111111110000"


def test_what_is_no_code_normalises_to_none():
    for typed in (
        "",
        "7K3M-Q9XD-2HVR",
        "7K3M-Q9XD-2HVR-8BNCX",
        "7K3M-Q9XD-2HVR-8BNU",
        "😀" * 16,
        "7K3M_Q9XD_2HVR_8BNC",
        "x" * 500,
    ):
        assert rc.normalize(typed) is None, typed
    assert rc.normalize(None) is None  # type: ignore[arg-type]


@given(st.text(max_size=80))
def test_normalize_never_raises_and_only_yields_canonical_codes(text):
    out = rc.normalize(text)
    assert out is None or (len(out) == 16 and set(out) <= set(rc.ALPHABET))


def test_digest_is_keyed_bound_to_its_set_and_the_same_however_typed():
    code = rc.new_codes()[0]
    d = rc.digest(KEY, "fa_1", code)
    assert re.fullmatch(r"[0-9a-f]{64}", d)
    assert rc.digest(KEY, "fa_1", code.lower().replace("-", " ")) == d
    assert rc.digest(KEY, "fa_2", code) != d  # bound to its set
    assert rc.digest(bytes(32), "fa_1", code) != d  # without the key, nothing to compare
    assert code.replace("-", "") not in d


def test_digest_refuses_what_is_no_code():
    import pytest

    with pytest.raises(ValueError):
        rc.digest(KEY, "fa_1", "not a code")
