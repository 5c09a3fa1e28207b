"""``jsontext.compact`` writes what ``json.dumps`` writes with the same arguments."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.domain import jsontext

VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(value=VALUES, sort_keys=st.booleans(), ensure_ascii=st.booleans())
def test_the_same_text_as_json_dumps(value, sort_keys, ensure_ascii):
    dumps = jsontext.compact(sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    expected = json.dumps(
        value, separators=(",", ":"), sort_keys=sort_keys, ensure_ascii=ensure_ascii
    )
    assert dumps(value) == expected
    assert dumps(value) == expected  # the reused encoder keeps no state between calls


def test_default_is_used_for_other_types_and_errors_are_json_dumps_errors():
    at = datetime(2026, 12, 7, tzinfo=UTC)
    dumps = jsontext.compact(default=lambda v: v.isoformat())
    assert dumps({"at": at}) == '{"at":"2026-12-07T00:00:00+00:00"}'
    with pytest.raises(TypeError):
        jsontext.compact()({"at": at})
    with pytest.raises(TypeError):  # keys that are not str, int, float, bool or None
        jsontext.compact()({(1, 2): 3})
