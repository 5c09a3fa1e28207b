"""``client/examples/quickstart.py`` runs as a newcomer would run it (issue 21): a real
``idv serve``, a client key made with the CLI (``idv clients create``), ``IDV_URL`` and
``IDV_API_KEY`` in the environment, and the script exits 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.kit.browser import once

QUICKSTART = Path(__file__).resolve().parents[2] / "client" / "examples" / "quickstart.py"

pytestmark = [pytest.mark.slow, once]


def test_quickstart_runs_against_a_live_idv(idv_server):
    out = idv_server.idv("clients", "create", "quickstart", "--scope", "verify")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    env = {**os.environ, "IDV_URL": idv_server.url, "IDV_API_KEY": key}
    run = subprocess.run(
        [sys.executable, str(QUICKSTART)], env=env, capture_output=True, text=True, timeout=150
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert "assertion verified: acr=aal2" in run.stdout
    assert key not in run.stdout + run.stderr  # the key never printed


def test_quickstart_names_the_missing_variable():
    env = {k: v for k, v in os.environ.items() if k not in ("IDV_URL", "IDV_API_KEY")}
    run = subprocess.run(
        [sys.executable, str(QUICKSTART)], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode != 0 and "IDV_URL and IDV_API_KEY" in run.stderr
