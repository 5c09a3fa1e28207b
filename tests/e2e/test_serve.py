"""A real ``idv serve`` process: starts with nothing configured, keys appear with 0600, the CLI
prints a working key, and nothing personal is stored in clear."""

from __future__ import annotations

import os
import re
import sqlite3
import stat
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def test_serve_clients_and_subjects_over_http(server):
    key_file = server.data_dir / "keys.json"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600

    key = server.api_key("verify")
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=10) as c:
        assert c.get("/v1/client").json()["scopes"] == ["verify"]
        r = c.put("/v1/subjects/alice", json={"phone": "+8613800138000"})
        assert r.status_code == 201
        assert r.json()["phone"] == "+86 138****8000"
        bad = c.put(
            "/v1/subjects/alice", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400 and bad.json()["error"] == "invalid_request"
        assert c.get("/readyz").json() == {"status": "ready"}
        assert c.get("/nope").json()["error"] == "not_found"

    listed = server.idv("clients", "list")
    assert listed.returncode == 0 and key not in listed.stdout
    client_id = listed.stdout.split()[0]
    assert server.idv("clients", "revoke", client_id).returncode == 0
    assert httpx.get(server.url + "/v1/client", headers=headers).status_code == 401


def test_database_holds_no_phone_or_key_in_clear(server):
    key = server.api_key("verify")
    httpx.put(
        server.url + "/v1/subjects/bob",
        json={"phone": "+8613800138000"},
        headers={"Authorization": f"Bearer {key}"},
    )
    db_url = server.env["IDV_DATABASE_URL"]
    if db_url.startswith("sqlite"):
        path = db_url.split("sqlite:///", 1)[1]
        from pathlib import Path

        blob = b"".join(
            Path(path + suffix).read_bytes()
            for suffix in ("", "-wal")
            if Path(path + suffix).exists()
        )
        assert b"13800138000" not in blob
        assert key.encode() not in blob


def test_bad_setting_stops_with_one_line(server):
    env = dict(server.env, IDV_ARGON2_TIME_COST="lots")
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "idv: IDV_ARGON2_TIME_COST: must be an integer, got 'lots'"
    ]


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("IDV_DATABASE_URL", "postgresql+psycopg://nobody@127.0.0.1:1/x", "IDV_DATABASE_URL"),
        ("IDV_DATABASE_URL", "sqlite:///", "IDV_DATABASE_URL"),
        ("IDV_DATABASE_URL", "mysql://x", "IDV_DATABASE_URL"),
        ("IDV_DATA_DIR", "/proc/no-such-dir", "IDV_DATA_DIR"),
        ("IDV_KEYS", "{not json", "IDV_KEYS"),
        ("IDV_POLICY_FILE", "/nonexistent.toml", "IDV_POLICY_FILE"),
        ("IDV_SMS_SENDER", "ftp://x", "IDV_SMS_SENDER"),
        ("IDV_REDIS_URL", "http://x", "IDV_REDIS_URL"),
        ("IDV_PIN_THREADS", "maybe", "IDV_PIN_THREADS"),
        ("IDV_ARGON2_NICE", "lowest", "IDV_ARGON2_NICE"),
        ("IDV_CLIENT_TIMEOUT", "0", "IDV_CLIENT_TIMEOUT"),
        ("IDV_CLIENT_TIMEOUT", "ten", "IDV_CLIENT_TIMEOUT"),
    ],
)
def test_bad_configuration_is_one_line_never_a_traceback(tmp_path, variable, value, says):
    import os
    import subprocess
    import sys

    env = {**os.environ, "IDV_DATA_DIR": str(tmp_path / "data"), variable: value}
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("idv: ") and says in lines[0], out.stderr
    assert "Traceback" not in out.stderr


def test_serve_checkpoints_the_wal_off_the_requests(server, database_url):
    """``idv serve`` on SQLite copies committed writes into the database file from its
    background checkpointer within moments; SQLite's own checkpoint would wait for 1,000 WAL
    pages, in a request's COMMIT (storage.db.Checkpointer)."""
    if not database_url.startswith("sqlite"):
        pytest.skip("SQLite only")
    path = database_url.split("///", 1)[1]

    def subjects_in_database_file() -> int:
        with sqlite3.connect(f"file:{path}?immutable=1", uri=True) as raw:
            return int(raw.execute("SELECT count(*) FROM subjects").fetchone()[0])

    key = server.api_key("verify")
    headers = {"Authorization": f"Bearer {key}"}
    assert subjects_in_database_file() == 0
    r = httpx.put(
        server.url + "/v1/subjects/wal", json={"phone": "+8613800138001"}, headers=headers
    )
    assert r.status_code == 201
    seen, deadline = 0, time.monotonic() + 5
    while seen == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
        try:
            seen = subjects_in_database_file()
        except sqlite3.DatabaseError:  # read while a checkpoint writes: look again
            continue
    assert seen == 1  # a few pages of WAL, copied without waiting for 1,000


def _default_workers(env: dict[str, str]) -> int:
    """``idv serve``'s worker count without ``--workers`` (tests/unit/test_workers.py)."""
    from service.settings import Settings
    from service.workers import plan, usable_cores

    return plan(Settings.from_env(env), None, usable_cores()).workers


def _cpus_of_threads(pid: int) -> dict[int, str]:
    """Each thread of ``pid`` and the CPUs it may run on (``Cpus_allowed_list``)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[int(task.name)] = line.split(":", 1)[1].strip()
    return out


def test_serve_pins_request_threads_to_one_cpu_and_leaves_background_threads_free(server):
    """service.affinity through a real ``idv serve``: the worker's main thread and the request
    threads it starts sit on one CPU; the checkpointer and webhook threads (started before)
    keep every CPU."""
    if sys.platform != "linux" or len(os.sched_getaffinity(0)) < 2:
        pytest.skip("needs Linux and at least two CPUs")
    everything = _cpus_of_threads(os.getpid())[os.getpid()]
    key = server.api_key("verify")
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        for i in range(16):  # start a few request threads in each worker
            r = client.put(f"{server.url}/v1/subjects/pin{i}", json={"phone": "+8613800138000"})
            assert r.status_code in (200, 201), r.text
    log = (server.data_dir.parent / "serve.log").read_text()
    said = re.findall(r"request threads of worker (\d+) on CPU (\d+)", log)
    workers = len(re.findall(r"Booting worker with pid", log))  # idv serve's default
    assert workers == _default_workers(server.env), log
    assert len(said) == workers, log
    assert len({cpu for _, cpu in said}) == workers, log  # each worker a CPU of its own
    pinned_in_all = 0
    for pid, cpu in said:
        threads = _cpus_of_threads(int(pid))
        assert threads[int(pid)] == cpu != everything, threads  # the worker's main thread
        pinned = [tid for tid, cpus in threads.items() if cpus == cpu]
        free = [tid for tid, cpus in threads.items() if cpus == everything]
        assert len(free) >= 1, threads  # background threads
        assert sorted(pinned + free) == sorted(threads), threads
        pinned_in_all += len(pinned)
    assert pinned_in_all > workers  # besides the main threads, the request threads that served


def _scheduling_policies(pids: list[int]) -> list[int]:
    """The scheduling policy (proc(5) ``stat`` field 41) of every thread of ``pids``."""
    out = []
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            stat_line = (task / "stat").read_text()
            fields = stat_line[stat_line.rindex(")") + 2 :].split()  # fields 3 onwards
            out.append(int(fields[41 - 3]))
    return out


def test_serve_hashes_pins_under_sched_idle_and_serves_requests_normally(server):
    """PINs hashed through a real ``idv serve`` (enrolment, then a proof): the argon2 thread
    runs under SCHED_IDLE (IDV_ARGON2_NICE's default; a PIN flood must not delay TOTP proofs or
    the database's backends), every other thread under the normal policy. (Python 3.11 does
    not name OS threads, so the hashing thread is the one that hashing the PIN added.)"""
    if sys.platform != "linux":
        pytest.skip("SCHED_IDLE is Linux")
    log_file = server.data_dir.parent / "serve.log"
    workers = [int(p) for p in re.findall(r"Booting worker with pid: (\d+)", log_file.read_text())]
    assert workers, log_file.read_text()
    key = server.api_key("verify")
    with httpx.Client(headers={"Authorization": f"Bearer {key}"}) as client:
        r = client.put(f"{server.url}/v1/subjects/pin-idle", json={"phone": "+8613800138000"})
        assert r.status_code == 201, r.text
        before = _scheduling_policies(workers)  # no PIN hashed yet: no argon2 thread
        assert before and all(policy == os.SCHED_OTHER for policy in before), before
        r = client.post(  # enrolment hashes the PIN: the first argon2 thread starts here
            f"{server.url}/v1/subjects/pin-idle/factors",
            json={"type": "knowledge", "secret": "739184"},
        )
        assert r.status_code == 201, r.text
        r = client.post(
            f"{server.url}/v1/verifications",
            json={"subject_id": "pin-idle", "action": "view_personal_data"},
        )
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        r = client.post(
            f"{server.url}/v1/verifications/{r.json()['verification_id']}/proofs",
            json={"factor": "knowledge", "secret": "739184"},
        )
        assert r.status_code == 200 and r.json()["accepted"] is True, r.text
    after = _scheduling_policies(workers)
    # one argon2 slot per worker: one hashing thread in each worker that hashed a PIN
    assert 1 <= after.count(os.SCHED_IDLE) <= len(workers), after
    assert after.count(os.SCHED_OTHER) == len(after) - 1, after
