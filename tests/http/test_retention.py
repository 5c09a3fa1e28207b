"""Retention (issue 23, API.md "Retention"): what the purge removes, when, and what it keeps.

Driven through the contract (the Flask test client) with the time-machine clock; the purge is
the real ``service.usecases.purge`` over the test's database (SQLite, or PostgreSQL + Redis).
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner
from sqlalchemy import func, insert, select

from service.cli import cli
from service.context import ServiceContext
from service.domain.retention import parse_retention
from service.storage.tables import (
    attestation_jtis,
    carrier_events,
    totp_used_steps,
    used_assertions,
    verifications,
    webhook_outbox,
)
from service.usecases.purge import purge
from tests.http.flow import carrier_event, now_rfc3339

DAY = 24 * 3600


def _count(ctx: ServiceContext, table) -> int:
    with ctx.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_a_finished_verification_goes_after_its_retention_then_answers_404(user, http, auth, ctx):
    user.add_totp()
    vid = user.start("login").json["verification_id"]
    assert user.prove_factor(vid, "totp").json["status"] == "satisfied"
    user.advance(29 * DAY)
    early = purge(ctx)
    assert early["verifications"] == 0  # 30 days after it finished, not before
    assert early["replay"] == 2  # its TOTP steps (activation, login) are long dead
    assert http.get(f"/v1/verifications/{vid}", headers=auth).status_code == 200
    user.advance(2 * DAY)
    removed = purge(ctx)
    assert removed["verifications"] == 1
    answer = http.get(f"/v1/verifications/{vid}", headers=auth)
    assert answer.status_code == 404 and answer.json["error"] == "not_found"
    # A pending one is not finished until it expires: a fresh one stays.
    fresh = user.start("login").json["verification_id"]
    user.advance(60)
    purge(ctx)
    assert http.get(f"/v1/verifications/{fresh}", headers=auth).status_code == 200


def test_replay_records_outlive_any_setting_while_they_guard(ctx, user, clock):
    """replay=1s still keeps a TOTP step through its ±1 window (RFC 6238 §5.2), a used assertion
    until its exp, and an attestation jti until iat + 360 s (API.md, Retention)."""
    user.add_totp()
    short = replace(ctx, settings=replace(ctx.settings, retention=parse_retention("replay=1s")))
    now = datetime.now(UTC)
    with ctx.engine.begin() as conn:
        conn.execute(
            insert(used_assertions).values(
                jti="vf_alive", used_at=now, expires_at=now + timedelta(minutes=5)
            )
        )
        conn.execute(insert(attestation_jtis).values(client_id="c", jti="j1", used_at=now))
    steps = _count(ctx, totp_used_steps)
    assert steps == 1  # the activation code's step
    user.advance(60)
    purge(short)
    assert _count(ctx, totp_used_steps) == 1  # still inside the window (+1 step of drift)
    assert _count(ctx, used_assertions) == 1 and _count(ctx, attestation_jtis) == 1
    user.advance(300)
    purge(short)
    assert _count(ctx, totp_used_steps) == 0  # dead: no code of that step is accepted now
    assert _count(ctx, used_assertions) == 0  # past its exp
    assert _count(ctx, attestation_jtis) == 1  # iat + 360 s not yet over
    user.advance(60)
    purge(short)
    assert _count(ctx, attestation_jtis) == 0


def test_carrier_events_keep_the_latest_of_each_type_per_phone(http, carrier_auth, ctx, clock):
    phone = "+8613900139000"
    for days_ago in (200, 150, 100):
        r = carrier_event(http, carrier_auth, phone, "sim_swap", now_rfc3339(-days_ago * DAY))
        assert r.status_code == 202
    r = carrier_event(http, carrier_auth, phone, "number_recycled", now_rfc3339(-300 * DAY))
    assert r.status_code == 202
    assert purge(ctx)["carrier_events"] == 0  # received just now: kept 90 days from receipt
    clock.shift(91 * DAY)
    removed = purge(ctx)
    # Both older sim_swaps go; the latest sim_swap and the only number_recycled stay, however
    # old: the recycled-number rule compares a phone's set time against it.
    assert removed["carrier_events"] == 2
    with ctx.engine.connect() as conn:
        kept = sorted(r.type for r in conn.execute(select(carrier_events.c.type)))
    assert kept == ["number_recycled", "sim_swap"]


def test_dry_run_counts_and_removes_nothing_and_the_cli_prints_per_kind(user, ctx, settings):
    user.add_totp()
    vid = user.start("login").json["verification_id"]
    user.prove_factor(vid, "totp")
    user.advance(31 * DAY)
    env = {
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
    }
    dry = CliRunner().invoke(cli, ["purge", "--dry-run"], env=env, catch_exceptions=False)
    assert dry.exit_code == 0 and "verifications: would remove 1" in dry.output
    assert _count(ctx, verifications) == 1
    done = CliRunner().invoke(cli, ["purge"], env=env, catch_exceptions=False)
    assert done.exit_code == 0, done.output
    assert "verifications: removed 1" in done.output and "audit: removed 0" in done.output
    assert _count(ctx, verifications) == 0


def test_delivered_webhooks_go_after_a_week_undelivered_after_a_month(ctx, clock):
    now = datetime.now(UTC)
    client_id = _tenant(ctx)
    with ctx.engine.begin() as conn:
        for i, delivered in enumerate((now - timedelta(days=8), now - timedelta(days=6), None)):
            conn.execute(
                insert(webhook_outbox).values(
                    id=f"ev_{i}",
                    client_id=client_id,
                    type="subject.recovered",
                    payload="{}",
                    created_at=now - timedelta(days=9),
                    next_attempt_at=now,
                    attempts=1,
                    delivered_at=delivered,
                )
            )
    assert purge(ctx)["webhooks"] == 1
    clock.shift(22 * DAY)
    assert purge(ctx)["webhooks"] == 2  # the week-old one, and the one undelivered for 31 days


def _tenant(ctx: ServiceContext) -> str:
    from service.usecases.clients import create_client

    return create_client(ctx, "tenant-w", ["verify"])[0].id


def test_one_purger_at_a_time(ctx):
    from service.usecases import purge as module

    with module._only_purger(ctx) as first:
        assert first
        assert purge(ctx) is None  # another purge running: this one skips its turn


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("audit=90d", "180 days"),
        ("verifications=30", "not a duration"),
        ("passwords=1d", "unknown kind"),
        ("webhooks=0d", "positive"),
    ],
)
def test_a_bad_retention_stops_idv_at_start_with_one_line(value, words, tmp_path):
    env = {
        **os.environ,
        "IDV_RETENTION": value,
        "IDV_DATA_DIR": str(tmp_path),
    }
    run = subprocess.run(
        [sys.executable, "-c", "from service.cli import main; main()", "purge", "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idv: IDV_RETENTION") and words in lines[0]


def test_idv_serve_purges_on_a_timer(user, ctx):
    """The thread ``idv serve`` starts (service/cli.py) purges without being asked."""
    import time

    from service.usecases.purge import Purger

    vid = user.start("login").json["verification_id"]
    user.advance(31 * DAY)
    purger = Purger(ctx, interval=0.05)
    purger.start()
    try:
        deadline = time.monotonic() + 10
        while _count(ctx, verifications) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        purger.stop()
    assert _count(ctx, verifications) == 0, vid
