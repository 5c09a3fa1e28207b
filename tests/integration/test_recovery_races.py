"""Concurrency of delayed recovery (API.md, Recovery): a subject has at most one ``waiting``
verification, whatever the concurrency, on SQLite and PostgreSQL (the partial unique index
``uq_verifications_one_waiting`` is the guard, not a read-then-write)."""

from __future__ import annotations

from collections import Counter

from service.context import Argon2Gate
from tests.http.flow import PIN
from tests.integration.test_races import outcome, run_together

RACERS = 8


def test_racing_pin_proofs_start_one_wait(app, ctx, user, auth):
    ctx.argon2_slots = Argon2Gate(RACERS, wait=30)  # let every PIN check run: the race is after
    user.add_all_factors()
    vids = [user.start("recover_delayed").json["verification_id"] for _ in range(RACERS)]

    def prove(vid):
        return lambda c: c.post(
            f"/v1/verifications/{vid}/proofs",
            json={"factor": "knowledge", "secret": PIN},
            headers=auth,
        )

    counts = Counter(outcome(r) for r in run_together(app, [prove(v) for v in vids]))
    assert counts == {"waiting accepted=True": 1, "409 conflict": RACERS - 1}, counts
    shown = Counter(
        user.http.get(f"/v1/verifications/{v}", headers=auth).json["status"] for v in vids
    )
    assert shown == {"waiting": 1, "pending": RACERS - 1}, shown
