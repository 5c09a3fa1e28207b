"""Carrier signals pulled from a CAMARA provider inside the decision (T1, T2), against the
simulator over real HTTP: a swap removes SMS, an outage fails closed where money is at stake,
and a hanging carrier cannot hold a login past its deadline."""

from __future__ import annotations

import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from service.app import create_app
from service.carrier.simulator import CarrierSimulator
from service.context import ServiceContext
from service.usecases.clients import create_client
from tests.http.flow import PHONE, User


@pytest.fixture
def sim():
    with CarrierSimulator() as s:
        yield s


@pytest.fixture
def pulled(settings, sim, clock):
    cfg = replace(
        settings,
        carrier_url=sim.base_url,
        carrier_token_url=sim.token_url,
        carrier_client_id=sim.client_id,
        carrier_client_secret=sim.client_secret,
    )
    context = ServiceContext.build(cfg)
    app = create_app(context=context)
    key = create_client(context, "tenant", ["verify"])[1]
    user = User(app.test_client(), {"Authorization": f"Bearer {key}"}, clock=clock)
    yield user
    context.engine.dispose()


def test_pulled_swap_removes_sms_from_login(pulled, sim):
    now = datetime.now(UTC)
    sim.add_number(PHONE, activated_at=now - timedelta(days=400), swaps=[now - timedelta(days=2)])
    assert pulled.put().status_code == 201
    v = pulled.start("login").json
    assert v["status"] == "denied" and "recent_sim_change" in v["reasons"]


def test_no_swap_keeps_sms(pulled, sim):
    sim.add_number(PHONE, activated_at=datetime.now(UTC) - timedelta(days=400))
    pulled.put()
    v = pulled.start("login").json
    assert v["status"] == "pending" and v["options"] == [["sms"]] and v["reasons"] == []


def test_pulled_recycling_voids_phone(pulled, sim):
    pulled.put()
    pulled.advance(2 * 86400)  # the number is reassigned a day after it was set on the subject
    sim.add_number(
        PHONE,
        activated_at=datetime.now(UTC) - timedelta(days=400),
        recycled_at=datetime.now(UTC) - timedelta(days=1),
    )
    v = pulled.start("login").json
    assert v["status"] == "denied" and "number_recycled" in v["reasons"]


def test_outage_fails_closed_for_money_and_open_for_login(pulled, sim):
    sim.add_number(PHONE, activated_at=datetime.now(UTC) - timedelta(days=400))
    pulled.put()
    sim.mode(None, "error")
    login = pulled.start("login").json
    assert login["status"] == "pending" and ["sms"] in login["options"]
    money = pulled.start("payment_password_reset").json
    assert money["status"] == "denied" and "signal_unavailable" in money["reasons"]


@pytest.mark.parametrize("mode", ["hang", "trickle"])
def test_a_hanging_or_trickling_carrier_is_bounded_by_the_login_deadline(pulled, sim, mode):
    """``trickle`` answers a byte every quarter second, so no socket timeout ever fires: the
    deadline is the whole exchange's (``service.outbound``), not each read's. That one took
    36 s (18.5 s with a 1 s deadline) before."""
    sim.add_number(PHONE, activated_at=datetime.now(UTC) - timedelta(days=400))
    pulled.put()
    sim.mode(None, mode)
    started = time.monotonic()
    v = pulled.start("login").json
    elapsed = time.monotonic() - started
    assert elapsed < 2.0 + 1.0, elapsed  # ~2 s deadline for login, never the 10 s hang
    assert v["status"] == "pending"  # login is not sensitive: SMS stays, the reason is told
    assert sim.requests  # the carrier was asked, not skipped


def test_a_revoked_key_from_memory_asks_the_carrier_nothing(pulled, sim):
    """Verification create takes a key it verified before from memory (issue 24); the key is
    confirmed live before the carrier is asked, so a revoked key costs no carrier query."""
    from service.storage import clients as client_store

    sim.add_number(PHONE, activated_at=datetime.now(UTC) - timedelta(days=400))
    assert pulled.put().status_code == 201
    assert pulled.start("login").status_code == 201  # the key is now known to the process
    asked = len(sim.requests)
    assert asked > 0
    context = pulled.http.application.extensions["idv"]
    client_id = pulled.http.get("/v1/client", headers=pulled.auth).json["client_id"]
    with context.engine.begin() as conn:
        assert client_store.revoke(conn, client_id, context.clock())
    r = pulled.http.post(
        "/v1/verifications", json={"subject_id": "alice", "action": "login"}, headers=pulled.auth
    )
    assert r.status_code == 401, r.json
    assert len(sim.requests) == asked
