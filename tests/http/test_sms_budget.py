"""SMS budgets per tenant and phone, the per-phone ceiling, regions and pumping (issue 20 items
3 and 4; ASVS 6.6.3; NIST SP 800-63B-4 restricts PSTN, and SMS costs its tenant money).

The per-phone limit used to be global: tenant B created its own subject with A's user's phone,
spent the 5-per-10-minutes budget, and A's user got 429 (and B's Retry-After told it when A
last texted that number). And nothing but 1,200 verifications a minute bounded a tenant's SMS."""

from __future__ import annotations

from dataclasses import replace

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from service.app import create_app
from service.cli import cli
from service.context import ServiceContext
from service.storage.db import dispose
from service.storage.tables import audit_log, webhook_outbox
from service.usecases.clients import create_client
from tests.http.flow import PHONE, User


class Tenant:
    """A tenant's backend: its key and one subject per phone it texts."""

    def __init__(self, ctx, clock, name: str) -> None:
        record, key = create_client(ctx, name, ["verify"])
        self.id = record.id
        self.http = create_app(context=ctx).test_client()
        self.auth = {"Authorization": f"Bearer {key}"}
        self.clock = clock

    def send(self, phone: str = PHONE, subject: str = "someone"):
        """Create (or reuse) a subject with ``phone`` and ask for an SMS code."""
        user = User(self.http, self.auth, subject_id=subject, clock=self.clock)
        assert user.put(phone).status_code in (200, 201)
        vid = user.start("login").json["verification_id"]
        return user.challenge(vid, "sms")


@pytest.fixture
def tenants(ctx, clock):
    return [Tenant(ctx, clock, name) for name in ("bank", "lender", "shop", "telco")]


def test_another_tenant_cannot_spend_a_phones_budget(tenants, clock):
    a, b = tenants[:2]
    assert a.send(subject="alice").status_code == 200
    clock.shift(5 * 60)
    # B registers A's user's number under its own subject and texts it: its own budget only.
    assert [b.send(subject="victim").status_code for _ in range(5)] == [200] * 5
    refused = b.send(subject="victim")
    assert refused.status_code == 429
    # B's Retry-After is its own window (10 min from its first send), not A's (5 min from now).
    assert 9 * 60 < int(refused.headers["Retry-After"]) <= 10 * 60
    assert [a.send(subject="alice").status_code for _ in range(4)] == [200] * 4


def test_the_per_phone_ceiling_needs_several_tenants_and_reveals_none_of_them(tenants, clock):
    """15 per 10 minutes per phone across tenants: three tenants' whole budgets."""
    for tenant in tenants[:3]:
        assert [tenant.send().status_code for _ in range(5)] == [200] * 5
        clock.shift(60)
    refused = tenants[3].send()
    assert refused.status_code == 429 and refused.json["error"] == "rate_limited"
    # Nothing of when the others sent: the whole window, and no count in the message.
    assert refused.headers["Retry-After"] == str(10 * 60)
    assert refused.json["message"] == "too many SMS to this phone number; retry later"


def test_a_ceiling_one_tenant_could_reach_alone_stops_start_up(settings):
    from service.domain.errors import ConfigError
    from service.ratelimit import RateLimits
    from service.settings import Settings

    with pytest.raises(ValueError, match="sms_phone"):
        RateLimits(None, {"sms_phone": "5/10minutes"})
    with pytest.raises(ValueError, match="sms_phone_daily"):
        RateLimits(None, {"sms_sends_daily": "100/day"})  # over the 60 a day ceiling
    with pytest.raises(ConfigError):
        Settings.from_env(
            {"IDV_DATA_DIR": str(settings.data_dir), "IDV_RATE_LIMITS": "sms_phone=3/hour"}
        )


def _regions(settings, client_id: str, regions: str):
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
    }
    return CliRunner().invoke(cli, ["clients", "sms-regions", client_id, regions], env=env)


HK, US = "+85291234567", "+12025550123"


def test_a_tenant_texts_only_its_regions(tenants, settings, ctx):
    bank = tenants[0]
    done = _regions(settings, bank.id, "cn, HK")
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[-1] == f"{bank.id} may text CN, HK"
    assert bank.send(PHONE, "cn").status_code == 200
    assert bank.send(HK, "hk").status_code == 200
    outside = bank.send(US, "us")
    assert outside.status_code == 422 and outside.json["error"] == "factor_not_allowed"
    assert _regions(settings, bank.id, "any").exit_code == 0
    assert bank.send(US, "us").status_code == 200
    # Unknown codes and clients are refused, and change nothing.
    assert _regions(settings, bank.id, "CN,XX").exit_code != 0
    assert _regions(settings, "cl_nobody", "CN").exit_code != 0
    with ctx.engine.connect() as conn:
        entries = conn.execute(
            select(audit_log.c.event).where(audit_log.c.event == "client.sms_regions")
        ).all()
    assert len(entries) == 2


@pytest.fixture
def tight(settings, clock):
    """A service whose SMS budgets are small enough to reach in a test."""

    def build(**limits: str):
        ctx = ServiceContext.build(replace(settings, rate_limits=tuple(limits.items())))
        built.append(ctx)
        return ctx, Tenant(ctx, clock, "pump")

    built: list[ServiceContext] = []
    yield build
    for ctx in built:
        dispose(ctx.engine)


def _us(i: int) -> str:
    return f"+1202555{i:04d}"


def test_a_tenant_without_regions_is_throttled_per_calling_code(tight):
    _, tenant = tight(sms_calling_code="3/minute")
    assert [tenant.send(_us(i), f"us{i}").status_code for i in range(4)] == [200] * 3 + [429]
    assert tenant.send(PHONE, "cn").status_code == 200  # +86 has its own budget


def test_a_tenants_sms_budget_bounds_pumping(tight, clock):
    _, tenant = tight(sms_client="4/minute", sms_calling_code="10/minute")
    assert [tenant.send(_us(i), f"us{i}").status_code for i in range(5)] == [200] * 4 + [429]
    clock.shift(61)
    assert tenant.send(_us(9), "us9").status_code == 200


def test_a_jump_in_a_tenants_send_rate_alerts_its_operators(tight):
    from service.usecases.notify import register

    ctx, tenant = tight(sms_surge="3/minute", sms_calling_code="10/minute")
    register(ctx, tenant.id, "https://tenant.example/idv-events")
    for i in range(5):
        assert tenant.send(_us(i), f"us{i}").status_code == 200
    with ctx.engine.connect() as conn:
        alerts = conn.execute(
            select(audit_log.c.outcome, audit_log.c.client_id).where(
                audit_log.c.event == "operator.alert"
            )
        ).all()
        queued = conn.execute(
            select(webhook_outbox.c.type).where(webhook_outbox.c.client_id == tenant.id)
        ).all()
    assert [tuple(a) for a in alerts] == [("sms_surge", tenant.id)]  # once, at the 3rd
    assert [q.type for q in queued] == ["operator.alert"]
