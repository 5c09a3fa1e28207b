"""Issue 22's measure, end to end: a factor defined outside idv (``toy_factor.py``) is enrolled,
challenged and proven over HTTP with no file of idv changed: its module, the registry's
``IDV_EXTRA_FACTORS`` and a policy that names it are all it takes.

The registry is read once per process, at start, like the policy, so the toy factor runs in a
fresh interpreter (nothing of this test process's registry is touched).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from service.settings import packaged_policy_file

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = r"""
import json, sys
from service.app import create_app
from service.context import ServiceContext
from service.factors import registry
from service.settings import Settings
from service.storage.db import upgrade
from service.usecases.clients import create_client
from tests.http.toy_factor import answer

assert "toy" in registry.NAMES, registry.NAMES
ctx = ServiceContext.build(Settings.from_env())
upgrade(ctx.engine)
http = create_app(context=ctx).test_client()
auth = {"Authorization": "Bearer " + create_client(ctx, "tenant-a", ["verify"])[1]}
seen = {}


def call(method, path, body=None):
    r = http.open(path, method=method, json=body, headers=auth)
    return r.status_code, r.get_json()


seen["subject"] = call("PUT", "/v1/subjects/alice", {"phone": "+8613800138000"})[0]
seen["weak"] = call("POST", "/v1/subjects/alice/factors", {"type": "toy", "word": "short"})
seen["enrol"] = call("POST", "/v1/subjects/alice/factors", {"type": "toy", "word": "correct horse"})
status, started = call("POST", "/v1/verifications", {"subject_id": "alice", "action": "login"})
seen["options"] = started["options"]
vid = started["verification_id"]
status, challenge = call("POST", f"/v1/verifications/{vid}/challenges", {"factor": "toy"})
seen["challenge"] = status
wrong = answer("wrong horse!", challenge["challenge"])
seen["wrong"] = call("POST", f"/v1/verifications/{vid}/proofs", {"factor": "toy", "answer": wrong})
right = answer("correct horse", challenge["challenge"])
status, proof = call("POST", f"/v1/verifications/{vid}/proofs", {"factor": "toy", "answer": right})
seen["proof"] = status, proof["accepted"], proof["status"], bool(proof.get("assertion"))
status, again = call("POST", "/v1/verifications", {"subject_id": "alice", "action": "login"})
vid = again["verification_id"]
seen["replay"] = call("POST", f"/v1/verifications/{vid}/proofs", {"factor": "toy", "answer": right})
seen["openapi"] = "toy" in json.dumps(call("GET", "/openapi.json")[1])
print(json.dumps(seen))
"""


def test_a_factor_from_outside_idv_enrols_challenges_and_proves(tmp_path: Path) -> None:
    policy = packaged_policy_file().read_text(encoding="utf-8")
    login = 'options = [["sms"], ["totp"], ["device"], ["passkey"]]'
    assert login in policy
    (tmp_path / "policy.toml").write_text(
        policy.replace(login, 'options = [["sms"], ["totp"], ["device"], ["passkey"], ["toy"]]'),
        encoding="utf-8",
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("IDV_")  # SQLite in a fresh data dir, in-process limits
    } | {
        "IDV_EXTRA_FACTORS": "tests.http.toy_factor",
        "IDV_DATA_DIR": str(tmp_path),
        "IDV_POLICY_FILE": str(tmp_path / "policy.toml"),
        "IDV_ARGON2_CONCURRENCY": "1",
        "PYTHONPATH": str(ROOT),
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["subject"] in (200, 201)
    assert seen["weak"][0] == 400  # the toy's own prepare hook refused it
    assert seen["enrol"][0] == 201 and seen["enrol"][1]["type"] == "toy"
    assert ["toy"] in seen["options"]
    assert seen["challenge"] == 200
    assert seen["wrong"][0] == 200 and seen["wrong"][1]["accepted"] is False
    assert seen["proof"] == [200, True, "satisfied", True]
    # A challenge is bound to its verification: the answer replayed on another one is refused.
    assert seen["replay"][0] == 200 and seen["replay"][1]["accepted"] is False
    assert seen["openapi"]  # the API models and OpenAPI document read the registry
