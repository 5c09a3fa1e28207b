"""Two real ``idv serve`` instances on one PostgreSQL and one Redis, behind no proxy, with the
caller alternating between them: the step-up flow works across both, and limits and replay
protection hold across both (a code, an assertion or a budget spent on one is spent on the other).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.e2e.conftest import IDV, free_port

PG = os.environ.get("IDV_TEST_DATABASE_URL")
REDIS = os.environ.get("IDV_TEST_REDIS_URL")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not (PG and REDIS),
        reason="needs IDV_TEST_DATABASE_URL and IDV_TEST_REDIS_URL (the PostgreSQL + Redis pass "
        "of .ci/run): two instances only share state through them",
    ),
]

PHONE = "+8613800138000"
PIN = "739184"


def _start(env: dict[str, str], log: Path) -> tuple[str, subprocess.Popen]:
    port = free_port()
    handle = open(log, "w")  # noqa: SIM115 - the child keeps it
    proc = subprocess.Popen(
        [*IDV, "serve", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=handle,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return url, proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"idv serve did not start:\n{log.read_text()}")


class Pair:
    """Two instances; ``next()`` alternates between them like a caller with no affinity."""

    def __init__(self, urls: list[str], env: dict[str, str], sms: Path) -> None:
        self.clients = [httpx.Client(base_url=u, timeout=10) for u in urls]
        self.env, self.sms, self.turn = env, sms, 0
        out = subprocess.run(
            [*IDV, "clients", "create", "two", "--scope", "verify"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        self.auth = {"Authorization": f"Bearer {out.stdout.strip().splitlines()[-1]}"}

    def a(self) -> httpx.Client:
        return self.clients[0]

    def b(self) -> httpx.Client:
        return self.clients[1]

    def next(self) -> httpx.Client:
        self.turn += 1
        return self.clients[self.turn % 2]

    def post(self, http: httpx.Client, path: str, body: dict) -> httpx.Response:
        return http.post(path, json=body, headers=self.auth)

    def start(self, http: httpx.Client, subject: str, action: str) -> str:
        r = self.post(http, "/v1/verifications", {"subject_id": subject, "action": action})
        assert r.status_code == 201 and r.json()["status"] == "pending", r.text
        return r.json()["verification_id"]

    def last_sms_code(self) -> str:
        return json.loads(self.sms.read_text().splitlines()[-1])["code"]


@pytest.fixture
def pair(tmp_path: Path, database_url: str, redis_url: str) -> Iterator[Pair]:
    """Two ``idv serve`` processes sharing the database, Redis and the key ring."""
    sms = tmp_path / "sms.jsonl"
    env = {
        **os.environ,
        "IDV_DATA_DIR": str(tmp_path / "data"),
        "IDV_DATABASE_URL": database_url,
        "IDV_REDIS_URL": redis_url,
        "IDV_SMS_SENDER": f"file:{sms}",
    }
    first = _start(env, tmp_path / "a.log")  # creates the shared key file
    second = _start(env, tmp_path / "b.log")
    pair = Pair([first[0], second[0]], env, sms)
    try:
        yield pair
    finally:
        for http in pair.clients:
            http.close()
        for _, proc in (first, second):
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def _code(totp: pyotp.TOTP, step: int) -> str:
    return totp.at(step * 30)


def test_step_up_flow_and_replay_across_instances(pair: Pair) -> None:
    """SMS login, TOTP, PIN and a change_phone step-up, every request on the other instance;
    a TOTP code or an assertion used on one instance is refused on the other."""
    assert (
        pair.a().put("/v1/subjects/alice", json={"phone": PHONE}, headers=pair.auth).status_code
        == 201
    )

    # Login by SMS: verification on A, challenge on B, proof on A.
    vid = pair.start(pair.a(), "alice", "login")
    assert (
        pair.post(pair.b(), f"/v1/verifications/{vid}/challenges", {"factor": "sms"}).status_code
        == 200
    )
    r = pair.post(
        pair.a(), f"/v1/verifications/{vid}/proofs", {"factor": "sms", "code": pair.last_sms_code()}
    )
    assert r.json()["status"] == "satisfied", r.text
    assert (
        pair.b().get(f"/v1/verifications/{vid}", headers=pair.auth).json()["status"] == "satisfied"
    )

    # TOTP enrolled on B, activated on A with the previous step's code (RFC 6238 drift window).
    r = pair.post(pair.b(), "/v1/subjects/alice/factors", {"type": "totp"})
    assert r.status_code == 201, r.text
    totp, factor_id = pyotp.TOTP(r.json()["secret"]), r.json()["factor_id"]
    step = int(time.time()) // 30
    if time.time() % 30 > 25:  # keep steps step-1 .. step+1 valid for the whole test
        time.sleep(30 - time.time() % 30 + 0.5)
        step += 1
    r = pair.post(
        pair.a(),
        f"/v1/subjects/alice/factors/{factor_id}/activate",
        {"code": _code(totp, step - 1)},
    )
    assert r.status_code == 200, r.text

    # enroll_factor step-up by TOTP on B; the same code on A for another verification: refused.
    vid = pair.start(pair.a(), "alice", "enroll_factor")
    r = pair.post(
        pair.b(), f"/v1/verifications/{vid}/proofs", {"factor": "totp", "code": _code(totp, step)}
    )
    assert r.json()["status"] == "satisfied", r.text
    enroll_assertion = r.json()["assertion"]
    replay_vid = pair.start(pair.b(), "alice", "login")
    r = pair.post(
        pair.a(),
        f"/v1/verifications/{replay_vid}/proofs",
        {"factor": "totp", "code": _code(totp, step)},
    )
    assert r.status_code == 200 and r.json()["accepted"] is False, r.text

    # The PIN is added on A with B's assertion; the assertion used once is refused on B.
    r = pair.post(
        pair.a(),
        "/v1/subjects/alice/factors",
        {"type": "knowledge", "secret": PIN, "assertion": enroll_assertion},
    )
    assert r.status_code == 201, r.text
    r = pair.post(
        pair.b(),
        "/v1/subjects/alice/factors",
        {"type": "knowledge", "secret": PIN, "assertion": enroll_assertion},
    )
    assert r.status_code == 403 and r.json()["error"] == "step_up_required", r.text

    # change_phone needs TOTP + PIN: one proof on each instance.
    vid = pair.start(pair.b(), "alice", "change_phone")
    assert pair.post(
        pair.a(),
        f"/v1/verifications/{vid}/proofs",
        {"factor": "totp", "code": _code(totp, step + 1)},
    ).json()["accepted"]
    r = pair.post(
        pair.b(), f"/v1/verifications/{vid}/proofs", {"factor": "knowledge", "secret": PIN}
    )
    assert r.json()["status"] == "satisfied", r.text
    assertion = r.json()["assertion"]
    r = pair.a().put(
        "/v1/subjects/alice",
        json={"phone": "+8613800138001", "assertion": assertion},
        headers=pair.auth,
    )
    assert r.status_code == 200, r.text
    r = pair.b().put(
        "/v1/subjects/alice",
        json={"phone": "+8613800138002", "assertion": assertion},
        headers=pair.auth,
    )
    assert r.status_code == 403 and r.json()["error"] == "step_up_required", r.text


def test_sms_send_limit_counts_across_instances(pair: Pair) -> None:
    """sms_sends is 5 per 10 minutes per phone: sends alternate between A and B; the 6th is 429
    wherever it lands."""
    assert (
        pair.a().put("/v1/subjects/bob", json={"phone": PHONE}, headers=pair.auth).status_code
        == 201
    )
    statuses = []
    for _ in range(6):
        http = pair.next()
        vid = pair.start(http, "bob", "login")
        statuses.append(
            pair.post(
                pair.next(), f"/v1/verifications/{vid}/challenges", {"factor": "sms"}
            ).status_code
        )
    assert statuses == [200] * 5 + [429], statuses


def test_failed_proof_limit_counts_across_instances(pair: Pair) -> None:
    """failed_proofs is 10 per 15 minutes per subject and factor: wrong TOTP codes alternate
    between A and B over fresh verifications; the 11th is refused with 429 on either."""
    assert (
        pair.a().put("/v1/subjects/carol", json={"phone": PHONE}, headers=pair.auth).status_code
        == 201
    )
    r = pair.post(pair.a(), "/v1/subjects/carol/factors", {"type": "totp"})
    totp, factor_id = pyotp.TOTP(r.json()["secret"]), r.json()["factor_id"]
    r = pair.post(
        pair.b(), f"/v1/subjects/carol/factors/{factor_id}/activate", {"code": totp.now()}
    )
    assert r.status_code == 200, r.text
    right = {totp.at(time.time() + d) for d in (-30, 0, 30)}
    wrong = next(f"{n:06d}" for n in range(1000000) if f"{n:06d}" not in right)
    outcomes = []
    vid = pair.start(pair.a(), "carol", "login")
    for _ in range(11):
        r = pair.post(
            pair.next(), f"/v1/verifications/{vid}/proofs", {"factor": "totp", "code": wrong}
        )
        if r.status_code == 200 and r.json()["status"] == "locked":
            outcomes.append("locked")
            vid = pair.start(pair.next(), "carol", "login")
        else:
            outcomes.append(r.status_code)
    assert outcomes[:10].count("locked") == 2, outcomes
    assert outcomes[10] == 429, outcomes
