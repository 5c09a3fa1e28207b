"""idv benchmark: real gunicorn processes on 127.0.0.1 driven by an asyncio load generator.

    python bench/run.py                      # SQLite and PostgreSQL, 10 s per scenario
    python bench/run.py --quick              # ~2 s per scenario, small pools (CI: asserts nothing)
    python bench/run.py --db sqlite --duration 20

Prints one table: scenario, database, requests/s, p50 and p99 latency, the ratio to the ceiling
(a bare Flask ``/healthz`` under the same gunicorn settings, measured in the same run) and the
peak RSS of each gunicorn worker, then the ratios issue 24 sets targets for (idv against the
floor, and with ``--peer`` against privacyIDEA). See bench/README.md for what each scenario does.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PIN = "739184"
WRONG_PIN = "000000"
TOTP_STEP = 30
PER_CLIENT_REQUESTS = 500  # the server's "client" limit is 600/minute: stay under it
PER_CLIENT_CREATIONS = 50  # "verifications" is 60/minute per client
FLOOD_PER_VERIFICATION = 4  # failure_limit is 5: the 5th locks the verification
FLOOD_PER_SUBJECT = 8  # failed_proofs is 10 per 15 minutes per subject and factor

Job = tuple[str, str, bytes, dict[str, str]]  # method, path, body, headers
SCENARIOS = ("totp", "login", "device", "knowledge", "carrier", "flood", "floor")
# ../shared/peers/... from the project's root (from a worktree under wt/, one level more up)
PEER = next(
    (
        up / "shared" / "peers" / "privacyidea" / "run_all.sh"
        for up in (ROOT.parent, ROOT.parent.parent)
        if (up / "shared" / "peers" / "privacyidea" / "run_all.sh").exists()
    ),
    ROOT.parent / "shared" / "peers" / "privacyidea" / "run_all.sh",
)
PEER_SCENARIO = "correct OTP, otppin=none"  # privacyIDEA's cheapest correct check (no PIN hash)


@dataclass(frozen=True)
class Login:
    """A whole login as one client operation, what a caller pays: ``create`` (the verification),
    then a TOTP proof with ``code`` on the verification that answer names."""

    create: Job
    code: str

    def proof(self, vid: str) -> Job:
        body = _body({"factor": "totp", "code": self.code})
        return ("POST", f"/v1/verifications/{vid}/proofs", body, self.create[3])


# -- the load generator ------------------------------------------------------------------------
@dataclass
class Result:
    """What one timed scenario measured."""

    requests: int = 0
    errors: dict[int, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    exhausted: bool = False
    server_cpu: float = 0.0  # CPU seconds the server's processes spent during the timed phase
    quantiles: dict[float, float] = field(default_factory=dict)  # ms, when measured elsewhere

    @property
    def cpu_ms_per_request(self) -> float:
        return self.server_cpu / self.requests * 1000 if self.requests else float("nan")

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return self.quantiles.get(q, float("nan"))
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def _request(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, job: Job
) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive request; returns (status, body)."""
    method, path, body, headers = job
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    if body:
        head.append("Content-Type: application/json")
    head += [f"{k}: {v}" for k, v in headers.items()]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":", 1)[1])
    return status, await reader.readexactly(length) if length else b""


async def _login(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, login: Login
) -> tuple[int, bytes]:
    """Create the verification, then prove TOTP on it: (status, body) of the proof, or of the
    creation when it was refused."""
    status, body = await _request(reader, writer, host, login.create)
    if status != 201:
        return status, body
    vid = json.loads(body)["verification_id"]
    return await _request(reader, writer, host, login.proof(vid))


async def _drive(
    port: int,
    jobs: Callable[[], Job | Login | None],
    connections: int,
    duration: float,
    ok: set[int],
) -> Result:
    """Run ``connections`` keep-alive connections until ``duration`` or ``jobs`` runs dry."""
    result = Result()
    deadline = time.perf_counter() + duration

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                job = jobs()
                if job is None:
                    result.exhausted = True
                    return
                t0 = time.perf_counter()
                host = f"127.0.0.1:{port}"
                try:
                    if isinstance(job, Login):
                        status, body = await _login(reader, writer, host, job)
                    else:
                        status, body = await _request(reader, writer, host, job)
                except (asyncio.IncompleteReadError, ConnectionError):
                    writer.close()
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    status, body = 599, b""
                if status == 200 and b'"accepted":false' in body.replace(b" ", b""):
                    status = 1200  # a proof the server refused: reported as "1200" in the notes
                result.latencies.append(time.perf_counter() - t0)
                result.requests += 1
                if status == 429 and isinstance(jobs, Retrying) and not isinstance(job, Login):
                    jobs.again(job)
                if status not in ok:
                    result.errors[status] = result.errors.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    result.elapsed = time.perf_counter() - start
    return result


def drive(
    server: Server,
    jobs: Callable[[], Job | Login | None],
    args: argparse.Namespace,
    ok: set[int],
    connections: int | None = None,
):
    """Synchronous wrapper of :func:`_drive`; also records the server's CPU time."""
    before = server.cpu_seconds()
    conns = connections or args.connections
    result = asyncio.run(_drive(server.port, jobs, conns, args.duration, ok))
    result.server_cpu = server.cpu_seconds() - before
    return result


def from_list(items: list[Job] | list[Login]) -> Callable[[], Job | Login | None]:
    """A job source that hands out each prepared request once."""
    it = iter(items)
    return lambda: next(it, None)


class Retrying:
    """A job source that hands a request refused with 429 out again later, as an attacker
    would (a refused guess consumed nothing, so it can be sent again)."""

    def __init__(self, items: list[Job]) -> None:
        self._items = collections.deque(items)

    def __call__(self) -> Job | None:
        return self._items.popleft() if self._items else None

    def again(self, job: Job) -> None:
        self._items.append(job)


# -- processes ---------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(port: int, proc: subprocess.Popen, log: Path) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"server exited:\n{log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    sys.exit(f"server did not start:\n{log.read_text()}")


def children(master_pid: int) -> list[int]:
    """Pids whose parent is ``master_pid`` (the gunicorn workers)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if stat.rsplit(")", 1)[1].split()[1] == str(master_pid):
                pids.append(int(entry.name))
    return pids


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def worker_peak_rss_mib(master_pid: int) -> list[float]:
    """VmHWM (peak resident set) of each child of the gunicorn master, in MiB."""
    peaks = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("PPid", "").strip() == str(master_pid) and "VmHWM" in fields:
            peaks.append(int(fields["VmHWM"].split()[0]) / 1024)
    return sorted(peaks)


@dataclass
class Server:
    port: int
    proc: subprocess.Popen
    log: Path

    def cpu_seconds(self) -> float:
        """User + system CPU of the master and its workers (/proc/<pid>/stat)."""
        return sum(cpu_seconds(pid) for pid in [self.proc.pid, *children(self.proc.pid)])

    def stop(self) -> list[float]:
        rss = worker_peak_rss_mib(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        return rss


def start(cmd: list[str], env: dict[str, str], port: int, log: Path) -> Server:
    handle = open(log, "w")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT)
    wait_up(port, proc, log)
    return Server(port, proc, log)


# -- fixtures built in-process, straight into the server's database ---------------------------
class Setup:
    """The same database and key file as the server, used to prepare material quickly.

    Setup runs in this process with its own (unlimited) rate limits, so preparing thousands of
    subjects and verifications does not spend the server's per-client budgets; the timed requests
    then go over HTTP and are counted by the server like any caller's.
    """

    def __init__(self, env: dict[str, str]) -> None:
        from service.context import ServiceContext
        from service.ratelimit import DEFAULTS, RateLimits
        from service.settings import Settings
        from service.usecases import factors

        self.ctx = ServiceContext.build(Settings.from_env(env))
        # No limit binds; the per-phone SMS ceilings must still exceed one tenant's budget.
        loose = {k: "1000000/minute" for k in DEFAULTS} | {"sms_phone": "2000000/minute"}
        self.ctx.limits = RateLimits(None, overrides=loose | {"sms_phone_daily": "2000000/minute"})
        # Bench set-up only: enrol the three factors without the enroll_factor step-up.
        factors.require_step_up = lambda *a, **k: False
        self._pin_hash: str | None = None
        self._seq = 0

    def client(self, scopes: list[str] | None = None):  # type: ignore[no-untyped-def]
        from service.usecases.clients import create_client

        record, key = create_client(self.ctx, "bench", scopes or ["verify"])
        return record, {"Authorization": f"Bearer {key}"}

    def phone(self) -> str:
        self._seq += 1
        return f"+86138{self._seq:08d}"

    def subject(self, client, totp: bool = False, device: bool = False, pin: bool = False):  # type: ignore[no-untyped-def]
        """A subject with a phone and the requested factors; returns what proofs need."""
        import pyotp
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        from service.usecases import factors
        from service.usecases.subjects import put_subject

        self._seq += 1
        sid = f"s{self._seq}"
        put_subject(self.ctx, client, sid, self.phone(), None)
        out: dict = {"id": sid}
        if totp:
            from service.domain.errors import InvalidCode

            enrolled = factors.enroll(self.ctx, client, sid, {"type": "totp"})
            for attempt in range(2):
                # Activate on the past step: later ones stay free. A 30-s boundary between
                # this clock read and the server's makes that step two behind: read again.
                step = int(time.time()) // TOTP_STEP - 1
                code = pyotp.TOTP(enrolled.shown["secret"]).at(step * TOTP_STEP)
                try:
                    factors.activate(self.ctx, client, sid, enrolled.factor_id, {"code": code})
                    break
                except InvalidCode:
                    if attempt:
                        raise
            out["totp"] = pyotp.TOTP(enrolled.shown["secret"])
        if device:
            key = ec.generate_private_key(ec.SECP256R1())
            pem = (
                key.public_key()
                .public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
                .decode()
            )
            enrolled = factors.enroll(
                self.ctx, client, sid, {"type": "device", "public_key": pem, "alg": "ES256"}
            )
            out["device"] = (key, enrolled.factor_id)
        if pin:
            if self._pin_hash is None:
                self._pin_hash = self.ctx.hasher.hash(PIN)
            real_hash, self.ctx.hasher.hash = self.ctx.hasher.hash, lambda _s: self._pin_hash
            try:  # one argon2 hash (server parameters) shared by every bench subject
                factors.enroll(self.ctx, client, sid, {"type": "knowledge", "secret": PIN})
            finally:
                self.ctx.hasher.hash = real_hash
        return out

    def verification(self, client, sid: str, action: str = "login") -> str:  # type: ignore[no-untyped-def]
        from service.usecases import verifications

        view = verifications.start(self.ctx, client, sid, action)
        assert view.status == "pending", view
        return view.verification_id

    def device_challenge(self, client, vid: str) -> str:  # type: ignore[no-untyped-def]
        from service.usecases import challenges

        return challenges.challenge(self.ctx, client, vid, "device")["challenge"]


def _body(value: dict) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _chunks(n: int, size: int) -> Iterator[int]:
    while n > 0:
        yield min(size, n)
        n -= size


def totp_jobs(setup: Setup, n: int) -> Callable[[], list[Job]]:
    """``n`` TOTP proofs: two per subject, each on its own login verification. Returns a
    function that computes the codes (steps c and c+1 of RFC 6238's ±1-step window, c the
    step current when it is called): call it right before the timed phase, and every code
    stays valid for at least 30 s."""
    prepared = []
    for size in _chunks((n + 1) // 2, PER_CLIENT_REQUESTS // 2):
        client, headers = setup.client()
        for _ in range(size):
            subject = setup.subject(client, totp=True)
            vids = [setup.verification(client, subject["id"]) for _ in range(2)]
            prepared.append((subject["totp"], vids, headers))

    def jobs() -> list[Job]:
        step = int(time.time()) // TOTP_STEP
        out: list[Job] = []
        for totp, vids, headers in prepared:
            for s, vid in zip((step, step + 1), vids, strict=True):
                body = _body({"factor": "totp", "code": totp.at(s * TOTP_STEP)})
                out.append(("POST", f"/v1/verifications/{vid}/proofs", body, headers))
        random.shuffle(out)
        return out

    return jobs


def login_jobs(setup: Setup, n: int) -> Callable[[], list[Login]]:
    """``n`` whole logins (verification create + TOTP proof): two per subject, for steps c and
    c+1 as in :func:`totp_jobs`, at most ``PER_CLIENT_CREATIONS`` per client. Returns a function
    that computes the codes: call it right before the timed phase."""
    prepared = []
    for size in _chunks((n + 1) // 2, PER_CLIENT_CREATIONS // 2):
        client, headers = setup.client()
        for _ in range(size):
            subject = setup.subject(client, totp=True)
            create = _body({"subject_id": subject["id"], "action": "login"})
            prepared.append((subject["totp"], ("POST", "/v1/verifications", create, headers)))

    def jobs() -> list[Login]:
        step = int(time.time()) // TOTP_STEP
        out = [
            Login(create, totp.at(s * TOTP_STEP))
            for totp, create in prepared
            for s in (step, step + 1)
        ]
        random.shuffle(out)
        return out

    return jobs


def device_jobs(setup: Setup, n: int) -> list[Job]:
    """``n`` device proofs, each on its own verification with a challenge issued beforehand."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from service.factors.device import _b64url

    jobs: list[Job] = []
    for size in _chunks(n, PER_CLIENT_REQUESTS):
        client, headers = setup.client()
        subjects = [setup.subject(client, device=True) for _ in range(8)]
        for i in range(size):
            subject = subjects[i % len(subjects)]
            key, factor_id = subject["device"]
            vid = setup.verification(client, subject["id"])
            challenge = setup.device_challenge(client, vid)
            signature = _b64url(key.sign(challenge.encode(), ec.ECDSA(hashes.SHA256())))
            body = _body({"factor": "device", "factor_id": factor_id, "signature": signature})
            jobs.append(("POST", f"/v1/verifications/{vid}/proofs", body, headers))
    return jobs


def knowledge_jobs(setup: Setup, n: int, secret: str = PIN) -> list[Job]:
    """``n`` PIN proofs (right or wrong), each verification used at most
    ``FLOOD_PER_VERIFICATION`` times and each subject at most ``FLOOD_PER_SUBJECT`` times."""
    jobs: list[Job] = []
    per_verification = 1 if secret == PIN else FLOOD_PER_VERIFICATION
    per_subject = 1 if secret == PIN else FLOOD_PER_SUBJECT
    body = _body({"factor": "knowledge", "secret": secret})
    for size in _chunks(n, PER_CLIENT_REQUESTS):
        client, headers = setup.client()
        made = 0
        while made < size:
            subject = setup.subject(client, pin=True)
            for _ in range(per_subject // per_verification):
                vid = setup.verification(client, subject["id"], "view_personal_data")
                for _ in range(per_verification):
                    jobs.append(("POST", f"/v1/verifications/{vid}/proofs", body, headers))
                made += per_verification
    return jobs


def create_jobs(setup: Setup, n: int) -> list[Job]:
    """``n`` verification creations, at most ``PER_CLIENT_CREATIONS`` per client."""
    jobs: list[Job] = []
    for size in _chunks(n, PER_CLIENT_CREATIONS):
        client, headers = setup.client()
        subject = setup.subject(client)
        body = _body({"subject_id": subject["id"], "action": "login"})
        jobs += [("POST", "/v1/verifications", body, headers)] * size
    return jobs


def carrier_jobs(setup: Setup, n: int) -> list[Job]:
    """``n`` distinct carrier events (each one recorded, none a duplicate)."""
    jobs: list[Job] = []
    now = datetime.now(UTC)
    for size in _chunks(n, PER_CLIENT_REQUESTS):
        _, headers = setup.client(["carrier"])
        for i in range(size):
            at = (now - timedelta(seconds=i + 1)).strftime("%Y-%m-%dT%H:%M:%SZ")
            kind = random.choice(["sim_swap", "sim_lost", "sim_unblocked"])
            body = _body({"phone": setup.phone(), "type": kind, "occurred_at": at})
            jobs.append(("POST", "/v1/carrier-events", body, headers))
    return jobs


# -- the run -----------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    db: str
    result: Result
    rss: str = ""
    note: str = ""
    round: int = 0  # which of the interleaved rounds (``--rounds``), 0 when measured once


def pool_size(rate: float, args: argparse.Namespace) -> int:
    """Requests to prepare: the measured creation rate times the duration, with headroom."""
    return max(200, int(rate * args.duration * args.headroom))


def run_idv(
    db: str, url: str | None, args: argparse.Namespace, rows: list[Row], floor: Floor | None = None
) -> None:
    """Start ``idv serve`` on ``db`` and run every idv scenario against it. With ``floor``,
    the floor, TOTP proofs and device proofs take turns for ``--rounds`` rounds: one
    measurement of each is 10-20 % off the next on a busy host, and the ratios of issue 24
    are then judged on the median of the rounds' own ratios."""
    tmp = Path(tempfile.mkdtemp(prefix=f"idv-bench-{db}-"))
    env = {**os.environ, "IDV_DATA_DIR": str(tmp), "IDV_LOG_LEVEL": "WARNING"}
    env.pop("IDV_REDIS_URL", None)
    env.pop("IDV_SMS_SENDER", None)
    if args.redis_url:  # shared limits: what several workers or instances need
        import redis

        redis.Redis.from_url(args.redis_url).flushdb()
        env["IDV_REDIS_URL"] = args.redis_url
    if url:
        env["IDV_DATABASE_URL"] = url
        subprocess.run(
            [sys.executable, "-m", "service.cli", "db", "upgrade"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
    idv = [sys.executable, "-m", "service.cli", "serve", "--host", "127.0.0.1"]
    port = free_port()
    cmd = [
        *idv,
        "--port",
        str(port),
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
    ]
    server = start(cmd, env, port, tmp / "serve.log")
    setup = Setup(env)
    mine: list[Row] = []
    try:
        say(f"[{db}] verification create: preparing")
        create = drive(
            server, from_list(create_jobs(setup, pool_size(args.guess, args))), args, {201}
        )
        mine.append(Row("verification create", db, create))
        n = pool_size(create.rate, args)

        rounds = args.rounds if floor is not None else 1
        for turn in range(1, rounds + 1) if rounds > 1 else [0]:
            label = f" (round {turn} of {rounds})" if turn else ""
            if floor is not None:
                say(f"floor: the least a TOTP proof costs{label}")
                mine.append(floor.measure(turn))
            if "totp" in args.only:
                say(f"[{db}] TOTP proof: preparing {n}{label}")
                totp = drive(server, from_list(totp_jobs(setup, n)()), args, {200})
                mine.append(Row("TOTP proof", db, totp, round=turn))
            if "device" in args.only:
                say(f"[{db}] device proof: preparing {n}{label}")
                device = drive(server, from_list(device_jobs(setup, n)), args, {200})
                mine.append(Row("device proof", db, device, round=turn))

        if "login" in args.only:  # at most about half the creation rate: half the pool
            say(f"[{db}] whole login (create + TOTP proof): preparing {n // 2}")
            login = drive(server, from_list(login_jobs(setup, n // 2)()), args, {200})
            note = "verification create + TOTP proof, one client operation"
            mine.append(Row("whole login", db, login, note=note))

        k = max(100, int(args.duration * 100))
        # One request hashing and one waiting per argon2 slot keeps argon2 busy all the time;
        # more only wait in the gate or collect 429s (service/context.py Argon2Gate).
        slots = max(1, (os.cpu_count() or 2) // 2)  # IDV_ARGON2_CONCURRENCY's default
        if "knowledge" in args.only:
            say(f"[{db}] knowledge proof: preparing {k}")
            knowledge = drive(server, from_list(knowledge_jobs(setup, k)), args, {200}, 2 * slots)
            mine.append(Row("knowledge proof", db, knowledge, note=f"{2 * slots} connections"))

        if "carrier" in args.only:
            say(f"[{db}] carrier event: preparing {n}")
            carrier = drive(server, from_list(carrier_jobs(setup, n)), args, {202})
            mine.append(Row("carrier event", db, carrier))

        if "flood" in args.only:
            for _ in range(args.rounds):
                mine += flood_phase(server, setup, db, n, k, args)
    finally:
        rss = server.stop()
        setup.ctx.engine.dispose()
        shutil.rmtree(tmp, ignore_errors=True)
    mine[0].rss = ", ".join(f"{r:.0f}" for r in rss)
    rows += mine


def flood_phase(
    server: Server, setup: Setup, db: str, n: int, k: int, args: argparse.Namespace
) -> list[Row]:
    """TOTP proofs alone, then again while wrong PINs flood the same server."""
    say(f"[{db}] TOTP proof under a PIN flood: preparing")
    flood_src = Retrying(knowledge_jobs(setup, k, WRONG_PIN))
    alone_codes, flooded_codes = totp_jobs(setup, n), totp_jobs(setup, n)
    # TOTP alone once more right before the flood: the share compares neighbouring phases,
    # not two ends of a run over which this machine's speed drifts.
    say(f"[{db}] TOTP proof alone, then flooded: timing")
    again = drive(server, from_list(alone_codes()), args, {200})
    totp_src = from_list(flooded_codes())
    say(f"[{db}] TOTP proof under a PIN flood: timing")
    flooded, flood = asyncio.run(_together(server.port, totp_src, flood_src, args))
    ratio = flooded.rate / again.rate if again.rate else float("nan")
    return [
        Row("TOTP proof, just before the flood", db, again),
        Row("TOTP proof, PIN flood", db, flooded, note=f"{ratio:.0%} of TOTP just before"),
        Row("  the flood (wrong PINs)", db, flood),
    ]


async def _together(port: int, totp_src, flood_src, args):  # type: ignore[no-untyped-def]
    """TOTP proofs on ``connections`` connections while ``flood_connections`` flood wrong PINs."""
    return await asyncio.gather(
        _drive(port, totp_src, args.connections, args.duration, {200}),
        _drive(port, flood_src, args.flood_connections, args.duration, {1200, 429, 409}),
    )


def run_ceiling(args: argparse.Namespace) -> tuple[Result, str]:
    """One measurement of the bare app; returns it and the worker peak RSS."""
    port = free_port()
    tmp = Path(tempfile.mkdtemp(prefix="idv-bench-bare-"))
    cmd = [sys.executable, str(ROOT / "bench" / "bare_app.py"), "--port", str(port)]
    cmd += ["--workers", str(args.workers), "--threads", str(args.threads)]
    server = start(cmd, dict(os.environ), port, tmp / "bare.log")
    try:
        job: Job = ("GET", "/healthz", b"", {})
        result = drive(server, lambda: job, args, {200})
    finally:
        rss = server.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return result, ", ".join(f"{r:.0f}" for r in rss)


FLOOR_NAME = "floor: the least a TOTP proof costs"
FLOOR_NOTE = "an upper bound for idv's TOTP proof: raw sqlite3, no policy, limits or metrics"


class Floor:
    """The floor (``bench/floor_app.py``): the least a TOTP proof can cost on this stack,
    driven like idv's TOTP scenario. Its server stays up for the whole run, with pending
    verifications for ``rounds`` measurements (``rate``, the ceiling's, sizes each), so that
    each round measures it right next to idv's proofs."""

    def __init__(self, args: argparse.Namespace, rate: float, rounds: int) -> None:
        from floor_app import API_KEY

        self.args = args
        self.port = free_port()
        self.tmp = Path(tempfile.mkdtemp(prefix="idv-bench-floor-"))
        self.per_round = pool_size(rate, args)
        rows = self.per_round * rounds
        cmd = [sys.executable, str(ROOT / "bench" / "floor_app.py"), "--port", str(self.port)]
        cmd += ["--workers", str(args.workers), "--threads", str(args.threads)]
        cmd += ["--rows", str(rows), "--db", str(self.tmp / "floor.sqlite3")]
        self.server = start(cmd, dict(os.environ), self.port, self.tmp / "floor.log")
        self.headers = {"Authorization": f"Bearer {API_KEY}"}
        self.unused = list(range(rows))
        random.shuffle(self.unused)
        self.rss = ""

    def measure(self, turn: int) -> Row:
        """Round ``turn``'s measurement, on verifications no earlier round used."""
        import pyotp
        from floor_app import SECRET

        code = pyotp.TOTP(SECRET).now()  # valid for this step and the next: >= 30 s
        body = _body({"factor": "totp", "code": code})
        mine, self.unused = self.unused[: self.per_round], self.unused[self.per_round :]
        jobs: list[Job] = [
            ("POST", f"/v1/verifications/v{i}/proofs", body, self.headers) for i in mine
        ]
        result = drive(self.server, from_list(jobs), self.args, {200})
        return Row(FLOOR_NAME, "sqlite", result, note=FLOOR_NOTE, round=turn)

    def stop(self) -> None:
        rss = self.server.stop()
        self.rss = ", ".join(f"{r:.0f}" for r in rss)
        shutil.rmtree(self.tmp, ignore_errors=True)


def run_peer(args: argparse.Namespace) -> Row | None:
    """privacyIDEA's correct-OTP ``/validate/check`` with otppin=none (gunicorn -w2, SQLite),
    run by its own script (``../shared/peers/privacyidea/run_all.sh``, about 4 minutes with
    30-s scenarios) on this machine right after idv's runs; ``None`` if it could not run."""
    if not PEER.exists():
        say(f"peer: {PEER} not found, no privacyIDEA row")
        return None
    tmp = Path(tempfile.mkdtemp(prefix="idv-bench-peer-"))
    env = {
        **os.environ,
        "PI_DIR": str(tmp),
        "PI_BENCH_SECONDS": str(args.peer_seconds),
        "PI_PORT": str(free_port()),
    }
    say(f"peer: privacyIDEA, {args.peer_seconds:g} s per scenario (about 4 minutes)")
    done = subprocess.run(["bash", str(PEER)], env=env, capture_output=True, text=True)
    results = tmp / "results.jsonl"
    lines = results.read_text().splitlines() if results.exists() else []
    found = [r for r in map(json.loads, lines) if r["scenario"] == PEER_SCENARIO]
    if done.returncode not in (0, 2) or not found:  # 2: a scenario saw unexpected answers
        say(f"peer failed (rc={done.returncode}), logs kept in {tmp}:\n{done.stderr[-2000:]}")
        return None
    shutil.rmtree(tmp, ignore_errors=True)
    peer = found[-1]
    result = Result(requests=peer["requests"], elapsed=peer["elapsed_s"])
    result.quantiles = {0.5: float(peer["p50_ms"]), 0.99: float(peer["p99_ms"])}
    failed = {599: peer["error"], 1200: peer["reject"]}  # as idv's rows count them
    result.errors = {status: count for status, count in failed.items() if count}
    note = (
        f"privacyIDEA 3.14 {PEER_SCENARIO}, gunicorn -w2 sync, {peer['threads']} client threads;"
        f" other CPU {peer['other_cpu_pct']}%"
    )
    return Row("peer: privacyIDEA /validate/check", "sqlite", result, note=note)


def rates(rows: list[Row], scenario: str, db: str) -> list[float]:
    """The rate of every measurement of ``scenario`` on ``db``, in round order."""
    return [row.result.rate for row in rows if (row.scenario, row.db) == (scenario, db)]


def ratios(rows: list[Row], peer: Row | None) -> str:
    """Issue 24's targets, each as measured in this run (SQLite rows; the floor is SQLite).
    With rounds, each round's idv rows are divided by that round's floor, and the target is
    judged on the median of those ratios (every round's ratio is listed after it)."""
    lines = []

    def say_ratio(label: str, values: list[float], target: str) -> None:
        if len(values) == 1:
            lines.append(f"- {label}: {values[0]:.2f} ({target})")
        else:
            each = ", ".join(f"{v:.2f}" for v in values)
            lines.append(f"- {label}: {statistics.median(values):.2f}, median of {each} ({target})")

    floors = {row.round: row.result for row in rows if row.scenario == FLOOR_NAME}
    for name in ("TOTP proof", "device proof"):
        mine = [r for r in rows if (r.scenario, r.db) == (name, "sqlite") and r.round in floors]
        pairs = [(r.result, floors[r.round]) for r in mine if floors[r.round].rate]
        if pairs:
            say_ratio(
                f"{name} / floor, rate", [r.rate / f.rate for r, f in pairs], "target 1: >= 0.70"
            )
            p99 = [r.percentile(0.99) / f.percentile(0.99) for r, f in pairs]
            say_ratio(f"{name} p99 / floor p99", p99, "target 2: <= 1.5")
    for name in ("TOTP proof", "device proof"):
        lite, pg = rates(rows, name, "sqlite"), rates(rows, name, "postgresql")
        if lite and pg and statistics.median(lite):
            ratio = [statistics.median(pg) / statistics.median(lite)]
            say_ratio(f"{name}, PostgreSQL / SQLite (median rates)", ratio, "target 1: >= 0.75")
    for db in ("sqlite", "postgresql"):  # each flooded phase against the phase just before it
        alone = rates(rows, "TOTP proof, just before the flood", db)
        flooded = rates(rows, "TOTP proof, PIN flood", db)
        shares = [f / a for a, f in zip(alone, flooded, strict=True) if a]
        if shares:
            say_ratio(f"TOTP under a PIN flood, {db}", shares, "target 4: >= 0.80, median of 3")
    for name in ("TOTP proof", "whole login"):
        lite = rates(rows, name, "sqlite")
        if peer and lite and peer.result.rate:
            ratio = [statistics.median(lite) / peer.result.rate]
            say_ratio(f"{name} / privacyIDEA (median rate)", ratio, "target 3: >= 40")
    return "\n".join(
        ["", "Ratios (issue 24's targets; SQLite rows, measured in this run):", *lines]
    )


def median_ceiling(runs: list[tuple[Result, str]]) -> Row:
    """The ceiling row: the run with the median rate of the ceilings measured before, between
    and after the databases (this machine's speed drifts by minutes; one ceiling run can be
    20 % off the others, and every ratio divides by it). The note lists every run."""
    ordered = sorted(runs, key=lambda run: run[0].rate)
    result, rss = ordered[len(ordered) // 2]  # of two, the faster: ratios err on the low side
    rates = ", ".join(f"{run[0].rate:.0f}" for run in runs)
    note = f"median of {len(runs)} runs ({rates}/s)" if len(runs) > 1 else ""
    return Row("ceiling: bare Flask /healthz", "-", result, rss, note)


def ensure_pg_database(url: str) -> None:
    """Drop and create the bench database named in ``url`` (its owner's ``postgres`` db)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    admin.dispose()


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    mem = next(
        line.split()[1]
        for line in Path("/proc/meminfo").read_text().splitlines()
        if "MemTotal" in line
    )
    return (
        f"{os.cpu_count()} CPUs ({cpu}), {int(mem) / 1024 / 1024:.0f} GiB RAM, "
        f"{platform.system()} {platform.release()}, Python {platform.python_version()}"
    )


def table(rows: list[Row], ceiling: Result, args: argparse.Namespace) -> str:
    head = [
        "scenario",
        "db",
        "req/s",
        "p50 ms",
        "p99 ms",
        "x ceiling",
        "server CPU ms/req",
        "worker peak RSS MiB",
        "note",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        r = row.result
        note = row.note
        if r.errors:
            note = (
                (note + "; " if note else "")
                + "non-OK: "
                + ", ".join(f"{k}x{v}" for k, v in sorted(r.errors.items()))
            )
        if r.exhausted:
            note = (note + "; " if note else "") + f"pool ran dry after {r.elapsed:.1f} s"
        ratio = r.rate / ceiling.rate if ceiling.rate else float("nan")
        cpu = f"{r.cpu_ms_per_request:.2f}" if r.server_cpu else "-"
        lines.append(
            f"| {row.scenario} | {row.db} | {r.rate:.0f} | {r.percentile(0.5):.1f} | "
            f"{r.percentile(0.99):.1f} | {ratio:.2f} | {cpu} | {row.rss} | "
            f"{note} |"
        )
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"idv bench, {stamp}; {machine()}\n"
        f"gunicorn gthread, {args.workers} worker(s) x {args.threads} threads; "
        f"{args.connections} connections, {args.duration:g} s per scenario\n\n" + "\n".join(lines)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "IDV_BENCH_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/idv_bench"
        ),
        help="dropped and re-created at start (default: %(default)s)",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--flood-connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--redis-url",
        default=None,
        help="run idv with IDV_REDIS_URL (emptied first); use with --workers 2",
    )
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--guess", type=float, default=1500, help="req/s to size the first pool")
    parser.add_argument("--headroom", type=float, default=1.5)
    parser.add_argument("--quick", action="store_true", help="~2 s per scenario, for CI")
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help="comma-separated scenarios to run after verification create (which sizes the"
        f" pools and always runs): {', '.join(SCENARIOS)}; the ceiling then runs once",
    )
    parser.add_argument(
        "--peer",
        action="store_true",
        help="then run privacyIDEA's /validate/check (../shared/peers/privacyidea/run_all.sh)",
    )
    parser.add_argument("--peer-seconds", type=float, default=30, help="per peer scenario")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds of floor / TOTP / device proofs taking turns, and of flood phases",
    )
    args = parser.parse_args()
    args.only = {name.strip() for name in args.only.split(",") if name.strip()}
    if args.only - set(SCENARIOS):
        parser.error(f"--only: unknown scenario(s) {', '.join(sorted(args.only - set(SCENARIOS)))}")
    every = args.only == set(SCENARIOS)
    if args.quick:
        args.duration, args.guess, args.headroom = 2.0, 150, 1.2
    rows: list[Row] = []
    ceilings = []
    say("ceiling: bare Flask app")
    ceilings.append(run_ceiling(args))
    floor = None
    # Next to idv's SQLite proofs, in turns with them: this host's speed drifts.
    if "floor" in args.only and args.db in ("sqlite", "both"):
        say("floor: the least a TOTP proof costs, starting")
        floor = Floor(args, ceilings[0][0].rate, args.rounds)
    try:
        if args.db in ("sqlite", "both"):
            run_idv("sqlite", None, args, rows, floor)
    finally:
        if floor is not None:
            floor.stop()
    if args.db in ("sqlite", "both") and every:
        say("ceiling: bare Flask app, again")
        ceilings.append(run_ceiling(args))
    if args.db in ("postgresql", "both"):
        ensure_pg_database(args.pg_url)
        run_idv("postgresql", args.pg_url, args, rows)
        if every:
            say("ceiling: bare Flask app, again")
            ceilings.append(run_ceiling(args))
    ceiling = median_ceiling(ceilings)
    floors = {row.round: row for row in rows if row.scenario == FLOOR_NAME}
    for row in rows:  # the same work on the same database: how close idv comes to it
        if floor is not None and row.scenario == FLOOR_NAME:
            row.rss = floor.rss
        named = row.scenario in ("TOTP proof", "device proof")
        base = floors.get(row.round)
        if named and row.db == "sqlite" and base is not None and base.result.rate:
            share = f"{row.result.rate / base.result.rate:.0%} of the floor"
            row.note = f"{row.note}; {share}" if row.note else share
    for row in rows:
        if row.round:
            row.note = f"round {row.round}; {row.note}" if row.note else f"round {row.round}"
    peer = run_peer(args) if args.peer else None
    print(table([ceiling, *rows, *([peer] if peer else [])], ceiling.result, args))
    print(ratios(rows, peer))


if __name__ == "__main__":
    main()
