"""``client/examples/relying_party.py``, the sample relying party that ``mypy --strict`` checks,
works against a real ``idv serve``: signed out is 401 ``no_subject`` (never a 500), the reset
needs PIN + TOTP, the proof answer says how many tries remain, an assertion works once."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pyotp
import pytest

from idv_client import IdvClient
from tests.http.flow import PIN
from tests.kit.browser import once
from tests.kit.test_client import device_step_up, with_device

pytestmark = [pytest.mark.slow, once]  # a real idv serve per test; UI, not storage
EXAMPLE = Path(__file__).resolve().parents[2] / "client" / "examples" / "relying_party.py"


def load_example():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("relying_party", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_relying_party_guards_the_payment_password_reset(idv_server, phone):
    idv = IdvClient(idv_server.url, idv_server.api_key("wallet", "verify"))
    dev = with_device(idv, "alice", phone)
    totp = idv.enroll_totp("alice", assertion=device_step_up(idv, dev, "alice", "enroll_factor"))
    idv.activate_factor("alice", totp.factor_id, pyotp.TOTP(totp.secret).now())
    idv.enroll_knowledge("alice", PIN, assertion=device_step_up(idv, dev, "alice", "enroll_factor"))

    http = load_example().create_app(idv).test_client()
    signed_out = http.post("/payment-password", data={"new_password": "n3w-pass"})
    assert signed_out.status_code == 401 and signed_out.json["error"] == "no_subject"

    http.post("/login", data={"user_id": "alice"})
    started = http.post("/payment-password/step-up")
    assert started.status_code == 200 and ["totp", "knowledge"] in started.json["options"]
    wrong = http.post("/payment-password/proof", data={"pin": "wrong-pin-000"}).json
    assert wrong["accepted"] is False and "attempts_left" in wrong
    assert http.post("/payment-password/proof", data={"pin": PIN}).json["accepted"]
    # The activation used this step's code (accepted once, ever): the next step's, within the
    # one step of drift that RFC 6238 §5.2 allows.
    code = pyotp.TOTP(totp.secret).at(time.time() + 30)
    done = http.post("/payment-password/proof", data={"totp": code}).json
    assert done["status"] == "satisfied" and done["assertion"]

    headers = {"X-Idv-Assertion": done["assertion"]}
    ok = http.post("/payment-password", data={"new_password": "n3w-pass"}, headers=headers)
    assert ok.status_code == 200 and "pin" in ok.json["amr"]
    again = http.post("/payment-password", data={"new_password": "other1"}, headers=headers)
    assert again.status_code == 401 and again.json["reason"] == "replayed"
    idv.close()
