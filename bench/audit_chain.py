"""Audit-chain throughput with two writer processes (STYLE.md: the chain must not become one
global lock that every write across every instance waits on).

Two processes ("instances"), each with several threads, append audit entries in their own
transactions for a fixed time against one database; the script prints appends/s per process and
in total, the p50/p99 of one append transaction, and then walks the whole chain with
``verify_chain`` to show that concurrent writers left it intact. Nothing here asserts a speed.

    python bench/audit_chain.py --db postgresql+psycopg://postgres@127.0.0.1:5432/idv_bench
    python bench/audit_chain.py --db sqlite:////tmp/audit-bench.db --seconds 3
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402

from service.storage import audit  # noqa: E402
from service.storage.db import make_engine, upgrade  # noqa: E402
from service.storage.tables import metadata  # noqa: E402

MAC_KEY = b"k" * 32  # a benchmark key: the figures, not the secrecy, matter here


def _instance(url: str, threads: int, seconds: float, out: multiprocessing.Queue) -> None:
    """One 'instance': ``threads`` threads appending until the time is up."""
    audit.configure(MAC_KEY)
    engine = make_engine(url)
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def work() -> None:
        mine: list[float] = []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            with engine.begin() as conn:
                audit.append(
                    conn,
                    event="bench.append",
                    outcome="ok",
                    now=datetime.now(UTC),
                    client_id="cl_bench",
                    subject_ref="s" * 32,
                    detail={"n": len(mine)},
                )
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    engine.dispose()
    out.put(latencies)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", required=True, help="SQLAlchemy URL (tables are recreated)")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()

    engine = make_engine(args.db)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    upgrade(engine)
    engine.dispose()

    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    procs = [
        ctx.Process(target=_instance, args=(args.db, args.threads, args.seconds, out))
        for _ in range(args.processes)
    ]
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()

    audit.configure(MAC_KEY)
    engine = make_engine(args.db)
    with engine.connect() as conn:
        problems = audit.verify_chain(conn, MAC_KEY)
        entries, chains = audit.stats(conn)
    engine.dispose()

    every = sorted(x for r in results for x in r)
    print(
        f"audit chain, {args.processes} processes x {args.threads} threads, "
        f"{args.seconds:g} s, {args.db.split('://')[0]}"
    )
    print("| instance | appends/s |")
    print("|---|---|")
    for i, r in enumerate(results):
        print(f"| {i + 1} | {len(r) / args.seconds:.0f} |")
    print(f"| total | {len(every) / args.seconds:.0f} |")
    if every:
        p99 = every[min(len(every) - 1, int(len(every) * 0.99))]
        print(
            f"append transaction p50 {statistics.median(every) * 1000:.2f} ms, "
            f"p99 {p99 * 1000:.2f} ms"
        )
    print(f"{entries} entries in {chains} chains; verify: {'OK' if not problems else problems[0]}")
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
