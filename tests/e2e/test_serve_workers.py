"""How many workers a real ``idv serve`` runs, the line it prints at start to say so, and that
several workers with Redis share one set of rate-limit counters (service.workers)."""

from __future__ import annotations

import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.e2e.conftest import IDV, running, serve_env

pytestmark = pytest.mark.slow

REDIS = os.environ.get("IDV_TEST_REDIS_URL")


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _booted(log: str) -> int:
    return len(re.findall(r"Booting worker with pid", log))


def test_the_start_line_says_how_many_cores_serve_uses_and_why(tmp_path, database_url):
    with running(tmp_path, database_url) as server:
        log = (tmp_path / "serve.log").read_text()
    lines = [line for line in log.splitlines() if re.match(r"idv: \d+ workers? on ", line)]
    assert len(lines) == 1, log
    cores = _cores()
    if "IDV_REDIS_URL" not in server.env:
        idle = f" of {cores} cores, {cores - 1} idle" if cores > 1 else " core"
        assert lines[0].startswith(f"idv: 1 worker on 1{idle} ("), lines[0]
        assert "in-process rate limits need one process" in lines[0]
        assert "set IDV_REDIS_URL" in lines[0]
        assert _booted(log) == 1, log
    else:
        n = cores if database_url.startswith("postgresql") else min(cores, 2)
        assert lines[0].startswith(f"idv: {n} worker"), lines[0]
        assert lines[0].endswith("rate limits shared through Redis)"), lines[0]
        assert _booted(log) == n, log


def test_more_workers_without_redis_are_refused_in_one_line(tmp_path, database_url):
    env = serve_env(tmp_path, database_url)
    env.pop("IDV_REDIS_URL", None)
    out = subprocess.run(
        [*IDV, "serve", "--port", "1", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "idv: --workers: 2 workers need IDV_REDIS_URL: without it each process keeps its own "
        "rate-limit counters, and a caller would get every budget once per process"
    ]


def _totals(text: str) -> int:
    """This worker's count of ``GET /v1/client`` answers (its own /metrics registry)."""
    found = re.findall(r'idv_http_requests_total\{[^}]*route="/v1/client"[^}]*\} ([0-9.]+)', text)
    return int(sum(float(v) for v in found))


@pytest.mark.skipif(not REDIS, reason="needs IDV_TEST_REDIS_URL: workers share limits there")
def test_two_workers_with_redis_share_one_budget(tmp_path, database_url):
    """12 requests a minute for one client, 48 sent on fresh connections over 8 threads: the
    two workers both answer some of them (each worker's /metrics counts only its own), and
    exactly 12 pass between them, not 12 each."""
    limit, sent = 12, 48
    with running(
        tmp_path,
        database_url,
        {"IDV_RATE_LIMITS": f"client={limit}/minute"},
        ("--workers", "2"),
    ) as server:
        assert _booted((tmp_path / "serve.log").read_text()) == 2
        headers = {"Authorization": f"Bearer {server.api_key('verify')}"}

        def one(_: int) -> int:
            # a new connection each time: the kernel hands it to whichever worker accepts first
            with httpx.Client(base_url=server.url, timeout=10) as c:
                return c.get("/v1/client", headers=headers).status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(one, range(sent)))
        assert statuses.count(200) == limit, statuses
        assert statuses.count(429) == sent - limit, statuses
        seen: set[int] = set()
        for _ in range(40):  # each /metrics answer is one worker's own counts
            with httpx.Client(base_url=server.url, timeout=10) as c:
                seen.add(_totals(c.get("/metrics").text))
            if len(seen - {0}) == 2 or (seen - {0} and max(seen) < sent):
                break
        served = seen - {0}
        assert served and max(served) < sent, seen  # no worker answered them all
