"""``idv serve`` under ``IDV_CRYPTO_PROFILE=gm``: a real process finishes a step-up and its
SM2 assertion verifies against the JWKS with an independent SM2 implementation (``gmalg``).
A profile whose library is missing stops the start with one line (exit 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pyotp
import pytest

from tests.e2e.conftest import running
from tests.http.test_gm_profile import verify_with_gmalg

pytestmark = pytest.mark.slow
PHONE = "+8613800138000"


def test_serve_under_gm_step_up_verifies_with_an_independent_sm2(
    tmp_path: Path, database_url: str
) -> None:
    with running(tmp_path, database_url, {"IDV_CRYPTO_PROFILE": "gm"}) as srv:
        auth = {"Authorization": f"Bearer {srv.api_key()}"}
        api = httpx.Client(base_url=srv.url, headers=auth, timeout=10)
        assert api.put("/v1/subjects/alice", json={"phone": PHONE}).status_code == 201
        totp = api.post("/v1/subjects/alice/factors", json={"type": "totp"}).json()
        code = pyotp.TOTP(totp["secret"])
        now = time.time()  # RFC 6238 §5.2: one step of drift each way, each step once
        r = api.post(
            f"/v1/subjects/alice/factors/{totp['factor_id']}/activate",
            json={"code": code.at(now - 30)},
        )
        assert r.status_code == 200, r.text

        def step_up(action: str, proofs: list[dict]) -> str:
            vid = api.post("/v1/verifications", json={"subject_id": "alice", "action": action})
            vid = vid.json()["verification_id"]
            for proof in proofs:
                answer = api.post(f"/v1/verifications/{vid}/proofs", json=proof).json()
                assert answer["accepted"], answer
            assert answer["status"] == "satisfied", answer
            return str(answer["assertion"])

        enrol = step_up("enroll_factor", [{"factor": "totp", "code": code.at(now)}])
        pin = {"type": "knowledge", "secret": "739184", "assertion": enrol}
        assert api.post("/v1/subjects/alice/factors", json=pin).status_code == 201
        token = step_up(
            "payment_password_reset",
            [
                {"factor": "totp", "code": code.at(now + 30)},
                {"factor": "knowledge", "secret": "739184"},
            ],
        )
        jwks = httpx.get(srv.url + "/.well-known/jwks.json").json()
        claims = verify_with_gmalg(token, jwks)
        assert claims["sub"] == "alice" and claims["action"] == "payment_password_reset"
        assert claims["aud"] == api.get("/v1/client").json()["client_id"]
        assert srv.idv("audit", "verify").returncode == 0  # an SM3 / HMAC-SM3 chain
        keys = (srv.data_dir / "keys.json").read_text()
        assert '"SM4-GCM"' in keys and '"alg": "SM2"' in keys


def test_gm_profile_without_its_library_is_one_line_exit_2(tmp_path: Path) -> None:
    hide = "import sys; sys.modules['gmalglib'] = None; from service.cli import main; main()"
    env = {**os.environ, "IDV_DATA_DIR": str(tmp_path), "IDV_CRYPTO_PROFILE": "gm"}
    out = subprocess.run(
        [sys.executable, "-c", hide, "serve"], env=env, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "idv: IDV_CRYPTO_PROFILE: the gm profile needs the SM2 library: "
        "pip install 'idv[gm]' (gmalglib)"
    ]
    env["IDV_CRYPTO_PROFILE"] = "sm"
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and "IDV_CRYPTO_PROFILE: must be intl or gm" in out.stderr


def test_restart_of_an_intl_deployment_under_gm(tmp_path: Path, database_url: str) -> None:
    """The first start under gm adds SM4 and SM2 keys to the key file, says so in one line,
    keeps the ES256 key published and the old API key working."""
    with running(tmp_path, database_url) as srv:
        auth = {"Authorization": f"Bearer {srv.api_key()}"}
        r = httpx.put(srv.url + "/v1/subjects/alice", json={"phone": PHONE}, headers=auth)
        assert r.status_code == 201
        [old] = httpx.get(srv.url + "/.well-known/jwks.json").json()["keys"]
    with running(tmp_path, database_url, {"IDV_CRYPTO_PROFILE": "gm"}) as srv:
        log = (tmp_path / "serve.log").read_text()
        assert "key ring ready for the gm profile: added data key dk-" in log
        api = httpx.Client(base_url=srv.url, headers=auth, timeout=10)
        assert api.put("/v1/subjects/alice", json={"phone": PHONE}).status_code == 200
        vid = api.post("/v1/verifications", json={"subject_id": "alice", "action": "login"})
        vid = vid.json()["verification_id"]
        assert api.post(f"/v1/verifications/{vid}/challenges", json={"factor": "sms"}).is_success
        sms = (tmp_path / "sms.jsonl").read_text().strip().splitlines()
        code = json.loads(sms[-1])["code"]
        answer = api.post(f"/v1/verifications/{vid}/proofs", json={"factor": "sms", "code": code})
        assert answer.json()["status"] == "satisfied", answer.json()
        jwks = httpx.get(srv.url + "/.well-known/jwks.json").json()
        assert [k["alg"] for k in jwks["keys"]] == ["ES256", "SM2"] and jwks["keys"][0] == old
        assert verify_with_gmalg(answer.json()["assertion"], jwks)["sub"] == "alice"
