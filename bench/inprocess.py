"""In-process cost of one request: the idv WSGI app called directly, no server, no sockets.

    python bench/inprocess.py                    # SQLite, TOTP / device proofs, create, healthz
    python bench/inprocess.py --db postgresql+psycopg://postgres@127.0.0.1:5432/idv_bench
    python bench/inprocess.py --profile totp     # cProfile of the TOTP proofs, top functions
    python bench/inprocess.py --crypto intl,gm   # both crypto profiles side by side, same run

Prints the median microseconds of Python per request and the number of SQL statements and
commits each request runs. This is where the server's per-request CPU goes (one gthread worker
is bound by the GIL), so it is the figure to cut; ``run.py`` measures the real thing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from run import Setup, _body, ensure_pg_database  # noqa: E402


def environ(method: str, path: str, body: bytes, headers: dict[str, str]) -> dict:
    from werkzeug.test import EnvironBuilder

    builder = EnvironBuilder(
        method=method,
        path=path,
        data=body,
        headers={**headers, "Content-Type": "application/json"},
    )
    try:
        return builder.get_environ()
    finally:
        builder.close()


def call(app, env: dict) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["wsgi.input"].getvalue())
    status: list[str] = []
    out = app(env, lambda s, h, e=None: status.append(s))
    body = b"".join(out)
    if hasattr(out, "close"):
        out.close()
    return int(status[0].split()[0]), body


class Counter:
    """Statements and commits on every engine (SQLite reads run on a reader engine of their own)."""

    def __init__(self) -> None:
        from sqlalchemy import Engine, event

        self.statements = 0
        self.commits = 0
        event.listen(Engine, "before_cursor_execute", self._stmt)
        event.listen(Engine, "commit", self._commit)

    def _stmt(self, *a) -> None:  # type: ignore[no-untyped-def]
        self.statements += 1

    def _commit(self, *a) -> None:  # type: ignore[no-untyped-def]
        self.commits += 1


def measure(app, counter: Counter, envs: list[dict], expect: int, profile: bool):  # type: ignore[no-untyped-def]
    times = []
    counter.statements = counter.commits = 0
    cpu0 = time.process_time()
    prof = cProfile.Profile() if profile else None
    for env in envs:
        inp = dict(env)
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        code, body = call(app, inp)
        if prof:
            prof.disable()
        times.append(time.perf_counter() - t0)
        assert code == expect, (code, body)
        # a refused proof takes another path: measure the accepted one
        assert b'"accepted":false' not in body.replace(b" ", b""), body
    n = len(envs)
    cpu = (time.process_time() - cpu0) / n * 1e6
    return statistics.median(times) * 1e6, cpu, counter.statements / n, counter.commits / n, prof


def by_package(stats: pstats.Stats) -> str:
    """Own time by package (where the Python time goes, not who called it)."""
    totals: dict[str, float] = {}
    for (filename, _line, _name), (_cc, _nc, tottime, _ct, _callers) in stats.stats.items():  # type: ignore[attr-defined]
        if "site-packages/" in filename:
            package = filename.split("site-packages/")[1].split("/")[0]
        elif "/service/" in filename:
            package = "service/" + filename.split("/service/")[1].split("/")[0]
        elif filename.startswith("~") or filename == "<built-in>":
            package = "builtins (C)"
        else:
            package = "stdlib/" + Path(filename).name
        totals[package] = totals.get(package, 0.0) + tottime
    whole = sum(totals.values())
    lines = [f"{t / whole:6.1%}  {name}" for name, t in sorted(totals.items(), key=lambda x: -x[1])]
    return "own time by package:\n" + "\n".join(lines[:25]) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="sqlite or a PostgreSQL URL")
    parser.add_argument("-n", type=int, default=400, help="requests per scenario")
    parser.add_argument("--profile", choices=["totp", "device", "create", "none"], default="none")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument(
        "--sort", default="cumulative", help="the profile's order: cumulative or tottime"
    )
    parser.add_argument(
        "--only", choices=["healthz", "create", "totp", "device"], help="time one request kind"
    )
    parser.add_argument(
        "--crypto",
        default="intl",
        help="IDV_CRYPTO_PROFILE(s) to run, comma-separated: intl, gm or intl,gm (side by side)",
    )
    args = parser.parse_args()
    crypto = args.crypto.split(",")
    results = {name: run(args, name) for name in crypto}
    if len(crypto) > 1:
        side_by_side(results)


def side_by_side(results: dict[str, dict[str, tuple[float, float]]]) -> None:
    """The profiles next to each other; a login is a verification create plus a TOTP proof."""
    print("\nside by side, median us (CPU us); login = verification create + TOTP proof")
    names = list(results)
    print(f"{'request':<24}" + "".join(f"{n:>16}" for n in names))
    for row in results[names[0]]:
        cells = (results[n].get(row, (0.0, 0.0)) for n in names)
        print(f"{row:<24}" + "".join(f"{f'{us:.0f} ({cpu:.0f})':>16}" for us, cpu in cells))


def sign_cost(ctx, n: int = 2000) -> float:  # type: ignore[no-untyped-def]
    """Median us of signing one assertion with the active key (parsed once, as in a proof)."""
    from datetime import UTC, datetime

    from service.domain import assertions

    now = datetime.now(UTC)
    times = []
    for i in range(n):
        start = time.perf_counter()
        assertions.issue(
            ctx.keys, issuer="idv", audience="cl_x", subject="s", action="login", acr="aal1",
            amr=["otp"], auth_time=now, now=now, ttl=300, jti=f"v{i}",
        )  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def prepare(db: str, n: int, crypto: str):  # type: ignore[no-untyped-def]
    """idv built in this process on ``db`` (``sqlite`` or a PostgreSQL URL) with ``n`` requests
    of each kind ready: returns the context, the WSGI app and ``(name, environs, status)`` rows.
    TOTP codes are those of the current step and the next: use them within 30 s, or with the
    clock held (``bench/instructions.py``)."""
    tmp = tempfile.mkdtemp(prefix="idv-inproc-")
    env = {**os.environ, "IDV_DATA_DIR": tmp, "IDV_LOG_LEVEL": "WARNING"}
    env["IDV_CRYPTO_PROFILE"] = crypto
    env.pop("IDV_REDIS_URL", None)
    env.pop("IDV_SMS_SENDER", None)
    if db != "sqlite":
        ensure_pg_database(db)
        env["IDV_DATABASE_URL"] = db
    from service.app import create_app
    from service.context import ServiceContext
    from service.ratelimit import DEFAULTS, RateLimits
    from service.settings import Settings
    from service.storage.db import upgrade

    settings = Settings.from_env(env)
    ctx = ServiceContext.build(settings)
    upgrade(ctx.engine)
    # No limit binds; the per-phone SMS ceilings must still exceed one tenant's budget.
    loose = {k: "1000000/minute" for k in DEFAULTS} | {"sms_phone": "2000000/minute"}
    ctx.limits = RateLimits(None, overrides=loose | {"sms_phone_daily": "2000000/minute"})
    app = create_app(context=ctx).wsgi_app
    setup = Setup(env)
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from service.factors.device import _b64url

    client, headers = setup.client()
    totp_envs, device_envs, create_envs = [], [], []
    totp_todo = []  # codes are computed right before the timed phase (setup can take > 30 s)
    for _ in range((n + 1) // 2):
        s = setup.subject(client, totp=True, device=True)
        totp_todo.append((s["totp"], [setup.verification(client, s["id"]) for _ in range(2)]))
        for _ in range(2):
            vid = setup.verification(client, s["id"])
            challenge = setup.device_challenge(client, vid)
            key, fid = s["device"]
            sig = key.sign(challenge.encode(), ec.ECDSA(hashes.SHA256()))
            device_envs.append(
                environ(
                    "POST",
                    f"/v1/verifications/{vid}/proofs",
                    _body({"factor": "device", "factor_id": fid, "signature": _b64url(sig)}),
                    headers,
                )
            )
            create_envs.append(
                environ(
                    "POST",
                    "/v1/verifications",
                    _body({"subject_id": s["id"], "action": "login"}),
                    headers,
                )
            )
    step = int(time.time()) // 30
    for totp, vids in totp_todo:
        for c, vid in zip((step, step + 1), vids, strict=True):
            body = _body({"factor": "totp", "code": totp.at(c * 30)})
            totp_envs.append(environ("POST", f"/v1/verifications/{vid}/proofs", body, headers))
    health = [environ("GET", "/healthz", b"", {})] * n
    rows = [
        ("healthz", health, 200),
        ("verification create", create_envs, 201),
        ("TOTP proof", totp_envs, 200),
        ("device proof", device_envs, 200),
    ]
    return ctx, app, rows


def run(args: argparse.Namespace, crypto: str) -> dict[str, tuple[float, float]]:
    """Every scenario under one crypto profile; returns the median (wall, CPU) us of each."""
    n = args.n
    ctx, app, rows = prepare(args.db, n, crypto)
    counter = Counter()
    print(f"in-process, {args.db.split(':')[0]}, {crypto}, {n} requests each (median)")
    print(f"{'request':<22}{'median us':>10}{'CPU us':>8}{'statements':>12}{'commits':>9}")
    want = {"TOTP proof": "totp", "device proof": "device", "verification create": "create"}
    if args.only:
        rows = [row for row in rows if want.get(row[0], row[0]) == args.only]
    medians: dict[str, tuple[float, float]] = {}
    for name, envs, expect in rows:
        prof = args.profile == want.get(name)
        us, cpu, stmts, commits, p = measure(app, counter, envs, expect, prof)
        medians[name] = (us, cpu)
        print(f"{name:<22}{us:>10.0f}{cpu:>8.0f}{stmts:>12.1f}{commits:>9.1f}")
        if p is not None:
            out = io.StringIO()
            stats = pstats.Stats(p, stream=out)
            stats.sort_stats(args.sort).print_stats(args.top)
            profile_text = out.getvalue() + by_package(stats)
    if args.profile != "none":
        print(profile_text)
    if "TOTP proof" in medians and "verification create" in medians:
        create, proof = medians["verification create"], medians["TOTP proof"]
        medians["login (create + TOTP)"] = (create[0] + proof[0], create[1] + proof[1])
    alg = ctx.keys.active_signing_key.alg
    signing = sign_cost(ctx)
    medians["assertion signature"] = (signing, signing)
    print(f"assertion signature ({alg}, key parsed once): {signing:.0f} us")
    return medians


if __name__ == "__main__":
    main()
