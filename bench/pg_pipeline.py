"""Would psycopg's pipeline mode make a TOTP proof's PostgreSQL part cheaper?

    python bench/pg_pipeline.py [--url postgresql://postgres@127.0.0.1:5432/test] [-n 1500]

A proof's transaction on PostgreSQL reads three results it needs at once (the verification,
the subject's snapshot, the single-use INSERT ... RETURNING) and then sends two statements
whose results it does not need (the verification UPDATE, the audit INSERT) and COMMIT. This
runs that shape on temporary tables, plain and with the last three in a pipeline, in
interleaved rounds, and prints the median wall and CPU microseconds per transaction of this
process. A worker is bound by its own CPU (one GIL), so CPU is the figure that decides.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("-n", type=int, default=1500, help="transactions per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    conn = psycopg.connect(args.url)
    conn.execute("CREATE TEMP TABLE v (id int PRIMARY KEY, status text)")
    conn.execute("CREATE TEMP TABLE used (step bigint PRIMARY KEY)")
    conn.execute("CREATE TEMP TABLE audit (seq serial PRIMARY KEY, entry text)")
    conn.execute("INSERT INTO v VALUES (1, 'pending')")
    conn.commit()
    step = iter(range(10**9))

    def reads() -> None:
        conn.execute("SELECT status FROM v WHERE id = %s", (1,)).fetchone()
        conn.execute("SELECT status FROM v WHERE id = %s", (1,)).fetchone()
        conn.execute(
            "INSERT INTO used VALUES (%s) ON CONFLICT DO NOTHING RETURNING step", (next(step),)
        ).fetchone()

    def plain() -> None:
        reads()
        conn.execute("UPDATE v SET status = %s WHERE id = %s", ("pending", 1))
        conn.execute("INSERT INTO audit (entry) VALUES (%s)", ("proof",))
        conn.commit()

    def pipelined() -> None:
        reads()
        with conn.pipeline():
            conn.execute("UPDATE v SET status = %s WHERE id = %s", ("pending", 1))
            conn.execute("INSERT INTO audit (entry) VALUES (%s)", ("proof",))
            conn.commit()

    figures: dict[str, list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for name, run in (("plain", plain), ("pipelined tail", pipelined)):
            for _ in range(50):
                run()
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.n):
                run()
            figures.setdefault(name, []).append(
                (
                    (time.perf_counter() - wall) / args.n * 1e6,
                    (time.process_time() - cpu) / args.n * 1e6,
                )
            )
    print(f"{'transaction':<16}{'wall us':>9}{'CPU us':>8}  CPU per round")
    for name, runs in figures.items():
        print(
            f"{name:<16}{statistics.median(r[0] for r in runs):>9.0f}"
            f"{statistics.median(r[1] for r in runs):>8.0f}  {[round(r[1]) for r in runs]}"
        )


if __name__ == "__main__":
    main()
