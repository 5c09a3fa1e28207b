"""Instructions one write transaction costs, SQLAlchemy ``Connection`` against the alternatives.

    python bench/transaction_cost.py            # 2,000 transactions of each kind

Each kind runs ``BEGIN IMMEDIATE``, one ``SELECT 1`` and ``COMMIT`` on idv's SQLite engine
(``storage.db.make_engine``), in a child process under valgrind's callgrind, twice: with 0 and
with 2,000 transactions after the same 50 warm-up ones. The difference of the two
whole-process counts, divided by 2,000, is what one transaction costs (start-up and set-up
cancel out):

- ``connection``: ``with engine.begin() as conn`` (a SQLAlchemy ``Connection``);
- ``lean``: ``with storage.lean.transaction(engine)`` (what the hot path uses);
- ``pool``: the pool's checkout and check-in around the statements on the DBAPI connection;
- ``raw``: the statements on a bare ``sqlite3`` connection (no pool at all).

Needs valgrind. About a minute per kind.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KINDS = ("connection", "lean", "pool", "raw")
N = 2000

CHILD = """
import sqlite3, sys, tempfile
sys.path.insert(0, {root!r})
from service.storage import db, lean
path = tempfile.mkdtemp() + "/t.db"
engine = db.make_engine("sqlite:///" + path)
raw = sqlite3.connect(path, isolation_level=None, check_same_thread=False)

def connection():
    with engine.begin() as conn:
        conn.connection.dbapi_connection.execute("SELECT 1").close()

def lean_tx():
    with lean.transaction(engine) as conn:
        conn.connection.dbapi_connection.execute("SELECT 1").close()

def pool():
    fairy = engine.raw_connection()
    try:
        dbapi = fairy.dbapi_connection
        dbapi.execute("BEGIN IMMEDIATE")
        dbapi.execute("SELECT 1").close()
        dbapi.execute("COMMIT")
    finally:
        fairy.close()

def bare():
    raw.execute("BEGIN IMMEDIATE")
    raw.execute("SELECT 1").close()
    raw.execute("COMMIT")

run = {{"connection": connection, "lean": lean_tx, "pool": pool, "raw": bare}}[sys.argv[1]]
for _ in range(50 + int(sys.argv[2])):
    run()
"""


def collected(kind: str, n: int, script: Path, out: Path) -> int:
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable]
        + [str(script), kind, str(n)],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(r"Collected : (\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no callgrind total for {kind}: {done.stderr[-500:]}")
    return int(found.group(1))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="idv-txcost-") as tmp:
        script = Path(tmp) / "child.py"
        script.write_text(CHILD.format(root=str(ROOT)))
        print(f"instructions per write transaction, SQLite, {N} transactions (callgrind)")
        print(f"{'kind':<12}{'instructions':>14}")
        for kind in KINDS:
            base = collected(kind, 0, script, Path(tmp) / f"{kind}.0")
            more = collected(kind, N, script, Path(tmp) / f"{kind}.{N}")
            print(f"{kind:<12}{(more - base) / N:>14,.0f}")


if __name__ == "__main__":
    main()
