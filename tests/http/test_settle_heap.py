"""``settle_heap``: what a server worker does after building the app (``idv serve``).

Start-up objects go to the GC's permanent generation, so full collections under load no longer
walk them (a 54 ms GIL pause before, about 6 ms after: bench/RESULTS.md); everything made later
is still collected.
"""

from __future__ import annotations

import gc
import weakref

import pytest

from service.app import settle_heap


class _Node:
    """A plain object that can sit in a reference cycle (only the cycle collector frees it)."""

    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.fixture
def frozen_heap():  # type: ignore[no-untyped-def]
    yield
    gc.unfreeze()  # the rest of the test session collects as before


def _tracked(obj: object) -> bool:
    """Whether ``obj`` is in a generation the collector walks (frozen objects are not)."""
    return any(o is obj for o in gc.get_objects())


def test_start_up_objects_leave_the_collected_generations(app, frozen_heap) -> None:  # type: ignore[no-untyped-def]
    context = app.extensions["idv"]
    before = gc.get_freeze_count()
    assert _tracked(context.__dict__)

    frozen = settle_heap()

    assert frozen > before
    # Not ==: a daemon thread of an earlier test may free a frozen object meanwhile.
    assert gc.get_freeze_count() > before
    assert not _tracked(context.__dict__)  # the wired service: no longer walked by gen-2 GCs


def test_objects_made_after_settling_are_still_collected(app, frozen_heap) -> None:  # type: ignore[no-untyped-def]
    settle_heap()
    a, b = _Node(), _Node()
    a.other, b.other = b, a  # a cycle: reference counting alone never frees it
    gone = weakref.ref(a)
    del a, b

    gc.collect()

    assert gone() is None


def test_requests_work_after_settling(http, auth, frozen_heap) -> None:  # type: ignore[no-untyped-def]
    settle_heap()
    statuses = []
    for _ in range(3):
        put = http.put("/v1/subjects/s-heap", json={"phone": "+8613800001234"}, headers=auth)
        statuses.append(put.status_code)
        assert http.get("/healthz").status_code == 200
    assert statuses == [201, 200, 200]
