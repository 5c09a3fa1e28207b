"""TOTP proofs against ``idv serve`` on PostgreSQL + Redis with 1 worker, then 2, interleaved.

    flock /tmp/idv-bench.lock python bench/workers.py --pg-url postgresql+psycopg://.../idv_bench \\
        --redis-url redis://127.0.0.1:6379/12 --order 1,2,1,2 --duration 8
    python bench/workers.py ... --count 400     # also what one proof costs the database and Redis

Each round starts a fresh ``idv serve --workers N`` on the same database (re-created at start),
times TOTP proofs (run.py's TOTP scenario: each a distinct pending login verification with a
valid code, 16 keep-alive connections) and stops it. Rounds alternate so that the 2/1 ratio
compares neighbours on a machine whose speed drifts by the minute. Prints one table: rate, p50,
p99, server CPU per proof (master and workers, /proc), then the 2/1 ratio of the medians.

``--count N`` first sends N proofs one at a time to a 1-worker server and reports, per proof,
the PostgreSQL transactions committed (``pg_stat_database.xact_commit`` of the bench database,
which counts every client of it: the server's background threads too) and the Redis commands
it ran (``MONITOR``, filtered to the bench's Redis database; commands inside a Lua script are
shown apart from the round trips that carried them). MONITOR slows Redis, so this phase is
never timed.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from run import (  # noqa: E402
    Result,
    Setup,
    drive,
    ensure_pg_database,
    free_port,
    from_list,
    machine,
    say,
    start,
    totp_jobs,
)


def _env(args: argparse.Namespace, data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "IDV_DATA_DIR": str(data_dir), "IDV_LOG_LEVEL": "WARNING"}
    env.pop("IDV_SMS_SENDER", None)
    env["IDV_DATABASE_URL"] = args.pg_url
    env["IDV_REDIS_URL"] = args.redis_url
    return env


def _serve(env: dict[str, str], workers: int, args: argparse.Namespace, log: Path):  # type: ignore[no-untyped-def]
    port = free_port()
    cmd = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--workers", str(workers), "--threads", str(args.threads)]
    return start(cmd, env, port, log)


def _round(  # type: ignore[no-untyped-def]
    setup: Setup, env: dict[str, str], workers: int, n: int, args: argparse.Namespace, log: Path
):
    """One timed round of ``n`` prepared TOTP proofs on a fresh ``idv serve --workers N``."""
    say(f"{workers} worker(s): preparing {n} TOTP proofs")
    codes = totp_jobs(setup, n)
    server = _serve(env, workers, args, log)
    try:
        time.sleep(1)  # the workers' start-up CPU stays out of the timed phase
        say(f"{workers} worker(s): timing")
        result = drive(server, from_list(codes()), args, {200})
    finally:
        server.stop()
    return result


def _count(setup: Setup, env: dict[str, str], args: argparse.Namespace, log: Path) -> str:
    """Per proof: PostgreSQL commits and Redis commands, one proof at a time, 1 worker."""
    import httpx
    import redis
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    n = args.count
    codes = totp_jobs(setup, n)
    server = _serve(env, 1, args, log)
    url = make_url(args.pg_url)
    stats = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    commits_sql = text(
        "SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted"
        " FROM pg_stat_database WHERE datname = :d"
    )
    rdb = int(urlsplit(args.redis_url).path.strip("/") or 0)
    commands: collections.Counter[str] = collections.Counter()
    stop = threading.Event()
    ready = threading.Event()

    def monitor() -> None:
        # No read timeout (redis-py's default is 5 s): Redis is quiet while the counters settle.
        with redis.Redis.from_url(args.redis_url, socket_timeout=None).monitor() as m:
            ready.set()
            for event in m.listen():
                if stop.is_set():
                    return
                if int(event["db"]) != rdb:
                    continue
                command = event["command"].split(" ", 1)[0].strip('"').upper()
                inside = event.get("client_type") == "lua"
                commands[("lua: " if inside else "") + command] += 1

    watcher = threading.Thread(target=monitor, daemon=True)
    watcher.start()
    ready.wait(5)
    try:
        jobs = codes()[:n]
        # A backend reports its commits to pg_stat_database when idle, at most once a second,
        # else within 10 s (PostgreSQL 15+, PGSTAT_IDLE_INTERVAL): wait that out both sides.
        time.sleep(11)
        with stats.connect() as conn:
            idle = conn.execute(commits_sql, {"d": url.database}).one()
        time.sleep(11)  # what the server's background threads do with no request: subtracted
        with stats.connect() as conn:
            before = conn.execute(commits_sql, {"d": url.database}).one()
        t0 = time.perf_counter()
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            for _method, path, body, headers in jobs:
                r = client.post(
                    path, content=body, headers={**headers, "Content-Type": "application/json"}
                )
                assert r.status_code == 200 and r.json().get("accepted"), r.text
        elapsed = time.perf_counter() - t0
        time.sleep(11 - elapsed % 11)  # the same 11-s windows as the idle one, and settled
        with stats.connect() as conn:
            after = conn.execute(commits_sql, {"d": url.database}).one()
    finally:
        stop.set()
        redis.Redis.from_url(args.redis_url).ping()  # wakes the monitor so that it sees stop
        server.stop()
        stats.dispose()
    trips = sum(v for k, v in commands.items() if not k.startswith("lua: "))
    inside = sum(v for k, v in commands.items() if k.startswith("lua: "))
    detail = ", ".join(f"{k} {v / n:.2f}" for k, v in sorted(commands.items()))
    windows = -(-elapsed // 11)  # ceil: how many idle windows' worth of background to subtract
    per = [(a - b - (b - i) * windows) / n for a, b, i in zip(after, before, idle, strict=True)]
    background = (before[0] - idle[0]) / 11
    return (
        f"{n} TOTP proofs one at a time ({elapsed:.1f} s, 1 worker), per proof:\n"
        f"- PostgreSQL (pg_stat_database of the bench db, less {background:.1f}/s of transactions "
        f"the idle server ran): {per[0]:.2f} transactions committed (read-only ones count), "
        f"{per[1]:.2f} rolled back; rows {per[2]:.2f} inserted, {per[3]:.2f} updated, "
        f"{per[4]:.2f} deleted\n"
        f"- Redis: {trips / n:.2f} commands sent (round trips), {inside / n:.2f} run inside Lua "
        f"scripts; by command: {detail}"
    )


def table(results: list[tuple[int, Result]], args: argparse.Namespace) -> str:
    head = ["round", "workers", "proofs/s", "p50 ms", "p99 ms", "server CPU ms/proof", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (workers, r) in enumerate(results, 1):
        note = ", ".join(f"{k}x{v}" for k, v in sorted(r.errors.items()))
        if r.exhausted:
            note = (note + "; " if note else "") + f"pool ran dry after {r.elapsed:.1f} s"
        lines.append(
            f"| {i} | {workers} | {r.rate:.0f} | {r.percentile(0.5):.1f} | "
            f"{r.percentile(0.99):.1f} | {r.cpu_ms_per_request:.2f} | {note} |"
        )
    by: dict[int, list[Result]] = collections.defaultdict(list)
    for workers, r in results:
        by[workers].append(r)
    summary = []
    for workers in sorted(by):
        rates = [r.rate for r in by[workers]]
        cpu = [r.cpu_ms_per_request for r in by[workers]]
        summary.append(
            f"- {workers} worker(s): median {statistics.median(rates):.0f} proofs/s "
            f"({', '.join(f'{x:.0f}' for x in rates)}), "
            f"median {statistics.median(cpu):.2f} ms of server CPU per proof"
        )
    if 1 in by and 2 in by:
        ratio = statistics.median(r.rate for r in by[2]) / statistics.median(r.rate for r in by[1])
        pairs = [b.rate / a.rate for a, b in zip(by[1], by[2], strict=False) if a.rate]
        summary.append(
            f"- 2/1 ratio of the medians: {ratio:.2f} (round by round: "
            f"{', '.join(f'{p:.2f}' for p in pairs)})"
        )
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    return (
        f"idv workers bench, {stamp}; {machine()}\n"
        f"PostgreSQL + Redis, gunicorn gthread x {args.threads} threads; "
        f"{args.connections} connections, {args.duration:g} s per round\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(summary)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "IDV_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/idv_bench"
        ),
        help="dropped and re-created at start (default: %(default)s)",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/12", help="emptied first")
    parser.add_argument("--order", default="1,2,1,2", help="workers per round, in order")
    parser.add_argument("--duration", type=float, default=8.0, help="seconds per round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--expect", type=float, default=500, help="proofs/s one worker may reach (first pool)"
    )
    parser.add_argument("--count", type=int, default=0, help="proofs for the per-proof counts")
    args = parser.parse_args()
    order = [int(x) for x in args.order.split(",") if x.strip()]

    import redis

    redis.Redis.from_url(args.redis_url).flushdb()
    ensure_pg_database(args.pg_url)
    tmp = Path(tempfile.mkdtemp(prefix="idv-bench-workers-"))
    env = _env(args, tmp)
    subprocess.run(
        [sys.executable, "-m", "service.cli", "db", "upgrade"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    setup = Setup(env)
    counted = _count(setup, env, args, tmp / "count.log") if args.count else ""
    results: list[tuple[int, Result]] = []
    try:
        for i, workers in enumerate(order):
            # Pools sized from what was measured so far (preparing costs ~15 ms a proof, in
            # this process): a pool that runs dry ends its round early, its rate still right.
            fastest = max([r.rate for _, r in results], default=0.0)
            n = max(200, int(max(fastest, args.expect * workers) * args.duration * 1.3))
            round_log = tmp / f"serve{i}.log"
            results.append((workers, _round(setup, env, workers, n, args, round_log)))
    finally:
        setup.ctx.engine.dispose()
    if results:
        print(table(results, args))
    if counted:
        print("\n" + counted)


if __name__ == "__main__":
    main()
