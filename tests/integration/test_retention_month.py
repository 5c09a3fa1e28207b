"""A month of simulated traffic under a fixed, shifted clock (issue 23 "Done when"): with the
purge running once a simulated day, every table the traffic fills stops growing once its
retention has passed (row counts flat), on SQLite and on PostgreSQL + Redis.

Traffic, small on purpose: two subjects log in with TOTP every three simulated hours (a
verification, a used TOTP step, an idempotent answer each), a third one with SMS once a day (a
challenge) and changes its phone once a day (a webhook, delivered), and the carrier reports a
SIM swap on one of three phones a day.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.domain.retention import parse_retention
from service.storage import audit
from service.storage.tables import (
    audit_log,
    carrier_events,
    challenges,
    idempotency_keys,
    totp_used_steps,
    verifications,
    webhook_outbox,
)
from service.usecases import notify
from service.usecases.purge import purge
from tests.http.flow import User, carrier_event, now_rfc3339

HOUR = 3600
DAYS = 36  # past the longest retention that applies (30 d) by a few days
TABLES = {
    "verifications": verifications,
    "challenges": challenges,
    "totp_used_steps": totp_used_steps,
    "idempotency_keys": idempotency_keys,
    "webhook_outbox": webhook_outbox,
    "carrier_events": carrier_events,
}


@pytest.fixture
def settings(settings):  # type: ignore[no-untyped-def]
    """The defaults, but carrier events asked to go after a day: the policy's longest window
    (30 d) is kept anyway."""
    return replace(settings, retention=parse_retention("carrier_events=1d"))


def _counts(ctx) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with ctx.engine.connect() as conn:
        return {
            name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
            for name, t in TABLES.items()
        }


def _login(user: User, n: int) -> None:
    r = user.http.post(
        "/v1/verifications",
        json={"subject_id": user.subject_id, "action": "login", "context": {"ip": "192.0.2.1"}},
        headers={**user.auth, "Idempotency-Key": f"{user.subject_id}-{n}"},
    )
    assert r.status_code == 201, r.json
    vid = r.json["verification_id"]
    factor = "totp" if ["totp"] in r.json["options"] else r.json["options"][0][0]
    assert user.prove_factor(vid, factor).json["status"] == "satisfied"


def test_a_month_of_traffic_leaves_every_table_bounded(
    http, auth, settings, clock, ctx, carrier_auth, monkeypatch
):
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    notify.register(ctx, client_id, "http://127.0.0.1:9/hook")
    monkeypatch.setattr(notify, "_post", lambda *_args: None)  # the tenant answers 2xx
    sms = Path(settings.sms_sender.split(":", 1)[1])
    people = [User(http, auth, subject_id=s, sms_file=sms, clock=clock) for s in ("al", "bo")]
    for i, person in enumerate(people):
        assert person.put(f"+861380013800{i}").status_code == 201
        person.add_totp()
    carol = User(http, auth, subject_id="carol", sms_file=sms, clock=clock)
    assert carol.put("+8613900000000").status_code == 201

    daily: list[dict[str, int]] = []
    n = 0
    for day in range(DAYS):
        for _slot in range(8):  # every three hours
            for person in people:
                n += 1
                _login(person, n)
            clock.shift(3 * HOUR - 60)  # prove_factor moved the clock 30 s per person
        _login(carol, n)
        assert carol.put(f"+86139000000{day % 2 + 1:02d}").status_code == 200  # a webhook
        phone = f"+861370000000{day % 3}"
        assert carrier_event(http, carrier_auth, phone, "sim_swap", now_rfc3339()).status_code
        notify.deliver_due(ctx)
        removed = purge(ctx)
        assert removed is not None
        daily.append(_counts(ctx))

    settled = daily[31:]
    for name in TABLES:
        series = [d[name] for d in settled]
        assert max(series) == min(series) > 0, (name, [d[name] for d in daily])
    # What each count is, once flat: 30 days of logins (verifications 30 d after they finish),
    # TOTP steps of the last day (1 d after they are dead), 24 h of idempotent answers, a day of
    # challenges, 7 days of delivered webhooks, 30 days of carrier events (the policy's window).
    last = daily[-1]
    assert last["verifications"] == pytest.approx(30 * 17, abs=17)
    assert last["idempotency_keys"] == pytest.approx(16, abs=2)
    assert last["webhook_outbox"] == pytest.approx(7, abs=1)
    assert last["carrier_events"] == pytest.approx(31, abs=2)
    assert daily[5]["verifications"] < last["verifications"]  # it did grow, then stopped

    # The audit trail is kept three years (the Cybersecurity Law asks six months at least):
    # three years on, only what was written since remains, and every chain still verifies.
    clock.shift(3 * 365 * 24 * HOUR - (DAYS - 2) * 24 * HOUR)
    with ctx.engine.connect() as conn:
        before = int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())
    assert purge(ctx)["audit"] > 0
    with ctx.engine.connect() as conn:
        kept = int(conn.execute(select(func.count()).select_from(audit_log)).scalar_one())
        assert audit.verify_chain(conn, ctx.keys.derived_keys("audit-mac")) == []
    assert 0 < kept < before
