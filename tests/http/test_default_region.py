"""``IDV_DEFAULT_REGION`` (API.md "Conveniences for callers"): national phone numbers."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace

import pytest

from service.app import create_app
from service.context import ServiceContext
from service.settings import Settings
from service.storage.db import dispose
from service.usecases.clients import create_client
from tests.http.flow import carrier_event, now_rfc3339


@pytest.fixture
def regional(settings):
    """An app whose deployment reads phones without ``+`` as national numbers of CN."""
    context = ServiceContext.build(replace(settings, default_region="CN"))
    app = create_app(context=context)
    verify = {"Authorization": f"Bearer {create_client(context, 'cn-tenant', ['verify'])[1]}"}
    carrier = {"Authorization": f"Bearer {create_client(context, 'cn-feed', ['carrier'])[1]}"}
    yield app.test_client(), verify, carrier
    dispose(context.engine)


def test_national_number_becomes_e164_and_answers_masked(regional):
    http, verify, _ = regional
    r = http.put("/v1/subjects/wang", json={"phone": "13900139001"}, headers=verify)
    assert r.status_code == 201 and r.json["phone"] == "+86 139****9001"
    # The same number in E.164 is the same phone: no change, no step-up asked.
    again = http.put("/v1/subjects/wang", json={"phone": "+8613900139001"}, headers=verify)
    assert again.status_code == 200 and again.json["phone"] == "+86 139****9001"


def test_trunk_zero_of_a_fixed_line_is_handled(regional):
    http, verify, _ = regional
    # Beijing fixed line 010-12345678 dialled nationally: the trunk 0 goes (ITU-T E.164).
    r = http.put("/v1/subjects/office", json={"phone": "01012345678"}, headers=verify)
    assert r.status_code == 201 and r.json["phone"] == "+86 101***5678"


@pytest.mark.parametrize(
    "phone",
    [
        "0086 13900139001",  # spaces: digits only
        "008613900139001",  # an international prefix is not a national number
        "12345",  # not a number of CN
        "1390013900１",  # a full-width digit
        "",
    ],
)
def test_what_is_not_a_national_number_is_a_400(regional, phone):
    http, verify, _ = regional
    r = http.put("/v1/subjects/wang", json={"phone": phone}, headers=verify)
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_carrier_event_with_a_national_number_reaches_the_subject(regional):
    http, verify, carrier = regional
    assert http.put("/v1/subjects/wang", json={"phone": "+8613900139001"}, headers=verify)
    at = now_rfc3339(-60)
    r = carrier_event(http, carrier, "13900139001", "sim_swap", at)
    assert r.status_code == 202 and r.json["recorded"] is True
    # Recorded once: the E.164 form is the same event (API.md, carrier signals).
    again = carrier_event(http, carrier, "+8613900139001", "sim_swap", at)
    assert again.status_code == 202 and again.json["recorded"] is False
    # T1: the SIM change reached the subject, SMS is no longer a login option.
    v = http.post(
        "/v1/verifications", json={"subject_id": "wang", "action": "login"}, headers=verify
    ).json
    assert "recent_sim_change" in v["reasons"] and ["sms"] not in v["options"]


def test_unset_region_accepts_only_e164(user, http, auth, carrier_auth):
    r = http.put("/v1/subjects/bob", json={"phone": "13900139001"}, headers=auth)
    assert r.status_code == 400 and r.json["error"] == "invalid_request"
    r = carrier_event(http, carrier_auth, "13800138000", "sim_swap", now_rfc3339(-60))
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


def test_settings_read_and_check_the_region():
    assert Settings.from_env({"IDV_DEFAULT_REGION": "cn"}).default_region == "CN"
    assert Settings.from_env({}).default_region is None
    from service.domain.errors import ConfigError

    for bad in ("XX", "China", "86"):
        with pytest.raises(ConfigError) as err:
            Settings.from_env({"IDV_DEFAULT_REGION": bad})
        assert err.value.variable == "IDV_DEFAULT_REGION"


def test_invalid_region_stops_serve_with_one_line(tmp_path):
    env = {**os.environ, "IDV_DATA_DIR": str(tmp_path / "data"), "IDV_DEFAULT_REGION": "XX"}
    out = subprocess.run(
        [sys.executable, "-m", "service.cli", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "idv: IDV_DEFAULT_REGION: must be an ISO 3166 region code such as CN, got 'XX'"
    ]
