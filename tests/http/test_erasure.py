"""Erasure is complete (issue 23, PIPL art. 47): after ``DELETE /v1/subjects/{id}`` no row of
any table, no byte of the SQLite file or its WAL and no log line names the subject id, its phone
or its IP address. What stays: the pseudonymised audit trail (keyed hash of the subject, IPs
truncated to their /24 or /48) and ``erased_phones`` (the phone's keyed hash, 30 days).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, table, text

from service.context import ServiceContext
from service.storage.db import sqlite_file
from service.usecases import notify
from tests.http.flow import User

SUBJECT = "erasure-subject-5f2c9e"
PHONE = "+8613812345678"
IP = "198.51.100.77"
NEEDLES = (SUBJECT, PHONE, PHONE[3:], IP)


def _every_value(ctx: ServiceContext) -> list[tuple[str, str, str]]:
    """(table, column, text) of every non-null value of every table in the database."""
    found = []
    with ctx.engine.connect() as conn:
        for name in inspect(conn).get_table_names():
            columns = [c["name"] for c in inspect(conn).get_columns(name)]
            query = select(*(text(f'"{c}"') for c in columns)).select_from(table(name))
            for row in conn.execute(query):
                found.extend((name, c, str(v)) for c, v in zip(columns, row, strict=True) if v)
    return found


def _rows(ctx: ServiceContext, name: str) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one())


def _naming(values: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
    return [v for v in values if any(n in v[2] for n in NEEDLES)]


@pytest.fixture
def person(http, auth, settings, clock, ctx):  # type: ignore[no-untyped-def]
    """A subject of ``auth``'s tenant with everything that could name it somewhere."""
    return _person(http, auth, settings, clock, ctx)


def _person(http, auth, settings, clock, ctx):  # type: ignore[no-untyped-def]
    """A subject with every factor, webhook events, a verification with its context, an
    idempotent answer, and SMS sent: everything that could name it somewhere."""
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    notify.register(ctx, client_id, "http://127.0.0.1:9/hook")
    u = User(http, auth, subject_id=SUBJECT, sms_file=Path(settings.sms_sender[5:]), clock=clock)
    assert u.put(PHONE).status_code == 201
    u.add_all_factors()
    r = http.post(
        "/v1/verifications",
        json={
            "subject_id": SUBJECT,
            "action": "login",
            "context": {"ip": IP, "user_agent": "Mozilla/5.0", "note": SUBJECT},
        },
        headers={**auth, "Idempotency-Key": "erasure-1"},
        environ_base={"REMOTE_ADDR": IP},
    )
    assert r.status_code == 201, r.json
    assert u.prove_factor(r.json["verification_id"], "sms").json["accepted"]
    return u


def test_after_erasure_nothing_names_the_subject_its_phone_or_its_ip(
    person, http, auth, ctx, settings, caplog
):
    caplog.set_level(logging.DEBUG)
    before = _naming(_every_value(ctx))
    assert {t for t, _c, _v in before} >= {"subjects", "webhook_outbox"}
    assert _rows(ctx, "idempotency_keys") == 1  # its answer (encrypted) names the subject
    assertion = person.step_up("delete_account", ["totp", "knowledge"])
    gone = http.delete(
        f"/v1/subjects/{SUBJECT}",
        json={"assertion": assertion},
        headers=auth,
        environ_base={"REMOTE_ADDR": IP},
    )
    assert gone.status_code == 204
    assert http.get(f"/v1/subjects/{SUBJECT}/factors", headers=auth).status_code == 404

    assert _naming(_every_value(ctx)) == []
    assert _rows(ctx, "idempotency_keys") == 0 and _rows(ctx, "verifications") == 0
    with ctx.engine.connect() as conn:
        erased = list(conn.execute(text("SELECT phone_hash FROM erased_phones")))
        refs = {r[0] for r in conn.execute(text("SELECT subject_ref FROM audit_log"))}
    assert len(erased) == 1 and len(erased[0][0]) == 64  # the keyed hash only
    assert len(refs - {None}) == 1  # the pseudonym the trail keeps
    if sqlite_file(ctx.engine):
        database = Path(ctx.engine.url.database or "")
        for path in (database, Path(f"{database}-wal")):
            data = path.read_bytes() if path.exists() else b""
            assert not [n for n in NEEDLES if n.encode() in data], path
    assert not [n for n in NEEDLES if n in caplog.text]


def test_the_desks_erasure_alert_is_the_one_row_left_until_it_is_delivered(
    http, ctx, settings, clock, monkeypatch
):
    from service.usecases.clients import create_client

    desk = {"Authorization": f"Bearer {create_client(ctx, 'desk', ['verify', 'admin'])[1]}"}
    _person(http, desk, settings, clock, ctx)
    gone = http.delete(f"/v1/admin/subjects/{SUBJECT}", headers={**desk, "Idv-Operator": "agent-7"})
    assert gone.status_code == 204, gone.json
    left = _naming(_every_value(ctx))
    assert {(t, c) for t, c, _v in left} == {("webhook_outbox", "payload")}
    monkeypatch.setattr(notify, "_post", lambda *_args: None)  # the tenant answers 2xx
    assert notify.deliver_due(ctx)[0] == 1
    assert _naming(_every_value(ctx)) == []
