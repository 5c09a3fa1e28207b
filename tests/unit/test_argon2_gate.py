"""The argon2 gate: bounded concurrency that answers 429 instead of queueing server threads."""

from __future__ import annotations

import threading

import pytest

from service.context import Argon2Gate
from service.domain.errors import RateLimited


def test_gate_admits_up_to_its_slots_then_refuses_fast():
    gate = Argon2Gate(1, wait=0.05)
    entered, release = threading.Event(), threading.Event()

    def hold() -> str:
        entered.set()
        release.wait(5)
        return threading.current_thread().name

    worker = threading.Thread(target=gate.run, args=(hold,))
    worker.start()
    assert entered.wait(5)
    with pytest.raises(RateLimited) as err:
        gate.run(lambda: None)
    assert err.value.retry_after == 1
    release.set()
    worker.join(5)
    release.set()
    # Free again, and the work runs on the gate's own thread, not the caller's.
    assert gate.run(hold).startswith("idv-argon2")
