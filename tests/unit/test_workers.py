"""``idv serve``'s worker count (service.workers): one process without Redis, and a line that
says so; one per core with Redis on PostgreSQL; argon2's default slots split between them."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.domain.errors import ConfigError
from service.settings import Settings
from service.workers import plan, share_argon2

PG = "postgresql+psycopg://postgres@127.0.0.1:5432/x"
REDIS = "redis://127.0.0.1:6379/0"


def _settings(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"IDV_DATA_DIR": str(tmp_path), **env})


def test_without_redis_one_worker_and_the_idle_cores_are_named(tmp_path):
    got = plan(_settings(tmp_path), None, 16)
    assert got.workers == 1
    assert got.line.startswith("idv: 1 worker on 1 of 16 cores, 15 idle (")
    assert "in-process rate limits need one process" in got.line
    assert "IDV_REDIS_URL" in got.line
    alone = plan(_settings(tmp_path), None, 1)
    assert alone.workers == 1 and alone.line.startswith("idv: 1 worker on 1 core (")
    assert plan(_settings(tmp_path), 1, 4).workers == 1  # asking for one is fine


@pytest.mark.parametrize("requested", [2, 16])
def test_without_redis_more_workers_are_refused_they_would_multiply_every_budget(
    tmp_path, requested
):
    with pytest.raises(ConfigError) as caught:
        plan(_settings(tmp_path), requested, 16)
    assert caught.value.variable == "--workers"
    assert "IDV_REDIS_URL" in caught.value.problem


def test_zero_workers_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="at least 1"):
        plan(_settings(tmp_path, IDV_REDIS_URL=REDIS), 0, 4)


def test_redis_and_postgresql_run_one_worker_per_core(tmp_path):
    settings = _settings(tmp_path, IDV_REDIS_URL=REDIS, IDV_DATABASE_URL=PG)
    got = plan(settings, None, 16)
    assert got.workers == 16
    assert (
        got.line
        == "idv: 16 workers on 16 of 16 cores (one per core; rate limits shared through Redis)"
    )
    assert plan(settings, 4, 16).line.startswith(
        "idv: 4 workers on 4 of 16 cores, 12 idle (--workers;"
    )
    assert plan(settings, 3, 2).line.startswith("idv: 3 workers on 2 cores (--workers;")


def test_redis_and_sqlite_stop_at_two_workers_one_writer_at_a_time(tmp_path):
    settings = _settings(tmp_path, IDV_REDIS_URL=REDIS)
    got = plan(settings, None, 16)
    assert got.workers == 2
    assert "2 workers on 2 of 16 cores, 14 idle (SQLite writes one transaction" in got.line
    assert plan(settings, None, 2).workers == 2
    assert plan(settings, None, 1).workers == 1
    assert plan(settings, 6, 16).workers == 6  # asked for: allowed, the counters are in Redis


def test_default_argon2_slots_are_split_between_workers_a_set_value_is_kept(tmp_path):
    settings = _settings(tmp_path)
    per_host = settings.argon2_concurrency
    split = share_argon2(settings, 2, {})
    assert split.argon2_concurrency == max(1, per_host // 2)
    assert share_argon2(settings, 1, {}) is settings
    assert share_argon2(settings, 64, {}).argon2_concurrency == 1
    chosen = _settings(tmp_path, IDV_ARGON2_CONCURRENCY="3")
    kept = share_argon2(chosen, 4, {"IDV_ARGON2_CONCURRENCY": "3"})
    assert kept.argon2_concurrency == 3
