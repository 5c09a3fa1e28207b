"""Headless Chromium for the kit's browser tests: Debian's ``chromium`` package, never a download
(``playwright install`` cannot reach the network in CI)."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from tests.e2e.conftest import free_port

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


# The browser walks and the quickstart test what a person and a relying party see, not storage:
# they run once, in the SQLite pass of .ci/run, and the PostgreSQL pass keeps its minutes for the
# tests where the database matters.
once = pytest.mark.skipif(
    bool(os.environ.get("IDV_TEST_DATABASE_URL")),
    reason="runs once, in the SQLite pass (browser and client flows, not storage)",
)
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="/usr/bin/chromium missing (apt-get install -y chromium)"
)

PHONE = {"width": 390, "height": 844}  # issue 21: a common phone, CSS pixels
DESKTOP = {"width": 1280, "height": 800}

_LAYOUT = """() => {
  const box = (el) => { const r = el.getBoundingClientRect();
    return {left: r.left, right: r.right, top: r.top, bottom: r.bottom, width: r.width}; };
  return {
    scrollWidth: document.documentElement.scrollWidth,
    innerWidth: window.innerWidth,
    main: box(document.querySelector("main")),
    aside: box(document.querySelector("#dev-panel")),
  };
}"""

# Text a person reads on the page, without what is marked as not to be translated (a TOTP secret,
# a device's product name) or as another language (the "English" switch), hidden or script.
_VISIBLE_TEXT = """() => {
  const copy = document.body.cloneNode(true);
  copy.querySelectorAll("[translate=no], [lang]:not([lang^=zh]), [hidden], script, style")
    .forEach((el) => el.remove());
  return copy.textContent;
}"""

# Characters and rendered lines of an element's text.
_TEXT_LINES = """(el) => {
  const range = document.createRange();
  range.selectNodeContents(el);
  const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
  return [el.textContent.replace(/\\s/g, "").length, lines.size];
}"""


def assert_fits(page, width: int) -> None:  # type: ignore[no-untyped-def]
    """No sideways scroll; on a phone the developer inbox sits below a full-width page, on a
    desktop beside a wide one (issue 21: at 390 px it squeezed the page into a 126-276 px strip)."""
    m = page.evaluate(_LAYOUT)
    assert m["innerWidth"] == width, m
    assert m["scrollWidth"] <= m["innerWidth"], m
    if width < 700:
        assert m["main"]["width"] >= width - 40, m
        assert m["aside"]["top"] >= m["main"]["bottom"], m
    else:
        assert m["aside"]["left"] >= m["main"]["right"], m
        assert m["main"]["width"] >= 600, m


def latin_words(page) -> set[str]:  # type: ignore[no-untyped-def]
    """Latin-script words a person reads on the page (see ``_VISIBLE_TEXT``)."""
    return set(re.findall(r"[A-Za-z]+", page.evaluate(_VISIBLE_TEXT)))


def assert_lines_hold_text(page, selector: str, per_line: int = 15) -> None:  # type: ignore[no-untyped-def]
    """The element's text takes no more lines than ``per_line`` characters each would need: a
    narrow strip wraps Chinese one character per line (issue 21); a 390-px phone holds ~20."""
    chars, lines = page.locator(selector).first.evaluate(_TEXT_LINES)
    assert lines <= max(1, -(-chars // per_line)), (selector, chars, lines)


_FORM_FIELDS = """() => [...document.querySelectorAll("input:not([type=hidden])")].map((el) => ({
  id: el.id,
  name: el.name,
  labelled: !!(el.id && document.querySelector(`label[for="${el.id}"]`)),
  inputmode: el.getAttribute("inputmode"),
  autocomplete: el.getAttribute("autocomplete"),
  maxlength: el.getAttribute("maxlength"),
  pattern: el.getAttribute("pattern"),
}))"""


def assert_fields_labelled(page) -> None:  # type: ignore[no-untyped-def]
    """Every input has a ``<label for>``; one-time-code fields say so to the phone's keyboard
    and autofill (``inputmode=numeric``, ``autocomplete=one-time-code``) and bound their input."""
    for field in page.evaluate(_FORM_FIELDS):
        assert field["labelled"], field
        if field["name"] == "code":
            assert field["inputmode"] == "numeric", field
            assert field["autocomplete"] == "one-time-code", field
            assert field["maxlength"] == "6" and field["pattern"] == "[0-9]{6}", field


@contextmanager
def serving(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A WSGI ``app`` (the portal) on a free port of 127.0.0.1 in a thread; yields its URL."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(timeout=5)
