"""``idv serve``'s worker count (service.workers): one process without Redis, and a line that
says so; one per core with Redis on PostgreSQL; argon2's default slots split between them."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.domain.errors import ConfigError
from service.settings import Settings
from service.workers import cpu_quota, plan, share_argon2

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


def _cgroup(root: Path, cpu_max: str | None, path: str = "/kubepods/pod1") -> Path:
    (root / "proc/self").mkdir(parents=True)
    (root / "proc/self/cgroup").write_text(f"0::{path}\n")
    if cpu_max is not None:
        where = root / "sys/fs/cgroup" / path.lstrip("/")
        where.mkdir(parents=True)
        (where / "cpu.max").write_text(cpu_max + "\n")
    return root


@pytest.mark.parametrize(
    ("cpu_max", "cores"),
    [("200000 100000", 2), ("150000 100000", 2), ("50000 100000", 1), ("max 100000", None)],
)
def test_a_cgroup_cpu_quota_counts_as_cores(tmp_path, cpu_max, cores):
    """``docker run --cpus 1.5`` writes ``150000 100000``: two workers, not one per host core."""
    assert cpu_quota(_cgroup(tmp_path, cpu_max)) == cores


def test_no_readable_quota_is_no_quota(tmp_path):
    assert cpu_quota(_cgroup(tmp_path / "a", None)) is None  # no cpu.max file
    assert cpu_quota(tmp_path / "nothing") is None  # no /proc/self/cgroup
    v1 = tmp_path / "v1" / "proc/self"
    v1.mkdir(parents=True)
    (v1 / "cgroup").write_text("4:cpu,cpuacct:/docker/abc\n")
    assert cpu_quota(tmp_path / "v1") is None  # cgroup v1: not read
