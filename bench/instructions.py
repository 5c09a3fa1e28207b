"""Instructions per request, idv against the floor: a cost figure this host's noise cannot move.

    python bench/instructions.py               # 200 requests of each kind after 50 to warm up
    python bench/instructions.py -n 500 --warmup 200
    python bench/instructions.py --keep        # then callgrind_annotate <dump> for a profile

Rates on this 2-CPU host drift 10-20 % from one round to the next (bench/RESULTS.md), more than
most single changes to the hot path are worth, so a change judged by ``run.py`` alone can look
like a gain or a loss by chance. This counts the CPU instructions each request executes, in
process (the WSGI app called directly, as ``inprocess.py`` does), under valgrind's callgrind,
which counts instructions rather than time: the same code and inputs give the same count
whatever else the machine is doing.

What is counted: the requests only. The child process runs every request of a kind inside one
ctypes callback (the comparator of a two-element ``qsort_r``), and callgrind collects only while
ctypes' callback trampoline ``closure_fcn`` runs (``--toggle-collect``) and writes a dump at
each of its ends (``--dump-after``): one dump per kind, set-up, warm-up and start-up left out.
Nothing else in idv or the floor calls a ctypes callback (the parent checks that it got exactly
one dump per kind).
Both apps run with the clock held (time-machine) so no TOTP code ages out while valgrind runs
at a fiftieth of the usual speed.

What it compares: idv's TOTP and device proofs (``inprocess.prepare``) against the floor's TOTP
proof (``floor_app``), the bare Flask ``/healthz`` of the ceiling, all in process, SQLite. The
ratio ``floor / idv`` is what target 1 of issue 24 would be if every request cost only its own
Python and SQLite work; the server adds about the same per request to each (``run.py``'s
``server CPU ms/req``), so the rate ratio sits above this one.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent


def _counted(fn: Callable[[], None]) -> None:
    """Run ``fn`` in a ctypes callback (from libc's ``qsort_r``): the region callgrind counts.
    An exception in ``fn`` is raised here (ctypes would only print it)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    compare = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p)
    outcome: list[BaseException | None] = []

    def once(_a: int, _b: int, _arg: int) -> int:
        if not outcome:  # two elements: one comparison, but never run the requests twice
            try:
                fn()
                outcome.append(None)
            except BaseException as exc:  # noqa: BLE001 - raised again below
                outcome.append(exc)
        return 0

    pair = (ctypes.c_int * 2)(1, 2)
    callback = compare(once)
    libc.qsort_r(pair, 2, ctypes.sizeof(ctypes.c_int), callback, None)
    if not outcome:
        raise RuntimeError("qsort_r never called the comparator")
    if outcome[0] is not None:
        raise outcome[0]


def _floor_envs(path: str, n: int) -> tuple[object, list[dict]]:
    """The floor app on a fresh SQLite file with ``n`` pending verifications, and a TOTP proof
    request for each."""
    import floor_app
    import pyotp
    from inprocess import environ

    floor_app.prepare(path, n)
    app = floor_app.create_app(path).wsgi_app
    code = pyotp.TOTP(floor_app.SECRET).now()
    headers = {"Authorization": f"Bearer {floor_app.API_KEY}"}
    body = json.dumps({"factor": "totp", "code": code}).encode()
    return app, [environ("POST", f"/v1/verifications/v{i}/proofs", body, headers) for i in range(n)]


def child(n: int, warmup: int, order_file: str) -> None:
    """Build every app, warm each kind up, then run ``n`` requests of each in a counted region."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(HERE))
    import time

    import time_machine
    from bare_app import create_app as bare_app
    from inprocess import call, environ, prepare

    total = n + warmup
    with time_machine.travel(time.time(), tick=False):
        _ctx, idv, rows = prepare("sqlite", total, "intl")
        wanted = {
            "verification create": "idv: create",
            "TOTP proof": "idv: TOTP proof",
            "device proof": "idv: device proof",
        }
        plans = [
            (wanted[name], idv, envs[:total], code) for name, envs, code in rows if name in wanted
        ]
        tmp = tempfile.mkdtemp(prefix="idv-instr-")
        floor, floor_envs = _floor_envs(os.path.join(tmp, "floor.sqlite3"), total)
        plans.insert(0, ("floor: TOTP proof", floor, floor_envs, 200))
        health = [environ("GET", "/healthz", b"", {})] * total
        plans.insert(0, ("healthz (bare Flask)", bare_app().wsgi_app, health, 200))
        order = []
        for name, app, envs, expect in plans:

            def requests(batch: list[dict], app=app, expect=expect) -> None:  # type: ignore[no-untyped-def]
                for env in batch:
                    status, body = call(app, env)
                    if status != expect or b'"accepted":false' in body:
                        raise SystemExit(f"{status} {body[:200]!r}")

            requests(envs[:warmup])  # compiled statements, caches, first-use imports
            _counted(lambda r=requests, b=envs[warmup:]: r(b))
            order.append(name)
        Path(order_file).write_text(json.dumps(order))


def totals(dump: Path) -> int:
    """The instruction count of one callgrind dump (its ``totals:`` or ``summary:`` line)."""
    text = dump.read_text()
    match = re.search(r"^(?:totals|summary): (\d+)", text, re.MULTILINE)
    if match is None:
        raise SystemExit(f"{dump}: no totals line")
    return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="requests of each kind counted")
    parser.add_argument("--warmup", type=int, default=50, help="requests of each kind first")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep callgrind's dumps (one per kind, in the order printed) for callgrind_annotate",
    )
    parser.add_argument("--child", metavar="ORDER_FILE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.n, args.warmup, args.child)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")
    out = Path(tempfile.mkdtemp(prefix="idv-callgrind-"))
    order_file = out / "order.json"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--toggle-collect=closure_fcn",
        "--dump-after=closure_fcn",
        f"--callgrind-out-file={out}/cg.out",
        sys.executable,
        __file__,
        "-n",
        str(args.n),
        "--warmup",
        str(args.warmup),
        "--child",
        str(order_file),
    ]
    env = {**os.environ, "PYTHONHASHSEED": "0", "IDV_LOG_LEVEL": "WARNING"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(done.returncode)
    order = json.loads(order_file.read_text())
    dumps = sorted(
        (p for p in out.glob("cg.out.*") if p.suffix[1:].isdigit()), key=lambda p: int(p.suffix[1:])
    )
    if len(dumps) != len(order):  # another ctypes callback ran: a count would be split or mixed
        raise SystemExit(f"{len(dumps)} callgrind dumps for {len(order)} kinds in {out}")
    counts = dict(zip(order, (totals(d) / args.n for d in dumps), strict=True))
    print(f"instructions per request, in process, SQLite, {args.n} requests each (callgrind)")
    print(f"{'request':<24}{'instructions':>14}{'x floor':>9}")
    floor = counts.get("floor: TOTP proof")
    for name in order:
        ratio = f"{counts[name] / floor:.2f}" if floor else "-"
        print(f"{name:<24}{counts[name]:>14,.0f}{ratio:>9}")
    if "idv: create" in counts and "idv: TOTP proof" in counts:  # issue 24, target 5
        login = counts["idv: create"] + counts["idv: TOTP proof"]
        ratio = f"{login / floor:.2f}" if floor else "-"
        print(f"{'idv: whole login':<24}{login:>14,.0f}{ratio:>9}")
    if floor:
        for name in ("idv: TOTP proof", "idv: device proof"):
            if name in counts:
                print(f"- floor / {name.removeprefix('idv: ')}: {floor / counts[name]:.2f}")
    if args.keep:
        names = ", ".join(f"{d.name}: {name}" for d, name in zip(dumps, order, strict=True))
        print(f"callgrind dumps in {out} ({names})")
    else:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
