"""Knowledge hashes follow the configured argon2 cost: a successful proof rehashes a PIN stored
with older parameters (issue 3; OWASP password storage: upgrade hashes on login)."""

from __future__ import annotations

from dataclasses import replace

from argon2 import extract_parameters
from sqlalchemy import select

from service.app import create_app
from service.context import ServiceContext
from service.storage.tables import factors
from tests.http.flow import User


def _stored_hash(ctx: ServiceContext) -> str:
    with ctx.engine.connect() as conn:
        row = conn.execute(
            select(factors.c.id, factors.c.secret_ct).where(factors.c.type == "knowledge")
        ).one()
    return ctx.keys.decrypt(row.secret_ct, f"factor:{row.id}")


def test_pin_is_rehashed_when_argon2_parameters_grow(user, ctx, settings, auth, clock):
    user.add_pin()  # stored with the test settings: t=1, 1 MiB
    old = _stored_hash(ctx)
    assert extract_parameters(old).time_cost == 1
    stronger = ServiceContext.build(replace(settings, argon2_time_cost=2, argon2_memory_kib=2048))
    u = User(create_app(context=stronger).test_client(), auth, clock=clock, sms_file=user.sms_file)
    # A PIN holder enrols a TOTP with SMS + PIN: the PIN proof is the "login" that rehashes.
    u.add_totp(assertion=u.step_up("enroll_factor", ["sms", "knowledge"]))
    new = _stored_hash(stronger)
    assert new != old
    params = extract_parameters(new)
    assert (params.time_cost, params.memory_cost) == (2, 2048)
    u.step_up("password_reset", ["totp", "knowledge"])  # the new hash still verifies the PIN
    stronger.engine.dispose()
