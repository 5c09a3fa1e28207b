"""Headless Chromium for the kit's browser tests: Debian's ``chromium`` package, never a download
(``playwright install`` cannot reach the network in CI)."""

from __future__ import annotations

from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PORTAL_JS = (
    Path(__file__).resolve().parents[2] / "examples" / "loan_portal" / "static" / "portal.js"
)


def launch(playwright):  # type: ignore[no-untyped-def]
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)


needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium missing (apt-get install -y chromium)"
)
