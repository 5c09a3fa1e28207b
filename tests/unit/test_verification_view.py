"""``VerificationView.answer`` is the contract's JSON object, as ``dataclasses.asdict`` gave it
(issue 24: the verification routes build it without ``asdict``'s recursive deep copy)."""

from __future__ import annotations

import json
from dataclasses import asdict

from hypothesis import given
from hypothesis import strategies as st

from service.usecases.verifications import VerificationView

_text = st.text(max_size=12)
_views = st.builds(
    VerificationView,
    verification_id=_text,
    status=st.sampled_from(["pending", "satisfied", "denied", "expired", "waiting"]),
    action=_text,
    options=st.lists(st.lists(_text, max_size=3), max_size=3),
    reasons=st.lists(_text, max_size=3),
    expires_at=_text,
    satisfied=st.lists(_text, max_size=3),
    held_until=st.none() | _text,
    ready_at=st.none() | _text,
)


@given(_views)
def test_answer_is_asdict(view: VerificationView) -> None:
    answer = view.answer()
    assert answer == asdict(view)
    assert list(answer) == list(asdict(view))  # the same members in the same order
    assert json.dumps(answer) == json.dumps(asdict(view))
