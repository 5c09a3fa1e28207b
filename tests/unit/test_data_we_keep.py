"""README's "Data we keep" table states the code's retention defaults (issue 23): this test
reads both and fails when they disagree, and checks how ``IDV_RETENTION`` is parsed."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from service.domain.errors import ConfigError
from service.domain.retention import (
    AUDIT_MINIMUM,
    DEFAULTS,
    KINDS,
    format_duration,
    parse_duration,
    parse_retention,
)
from service.settings import Settings
from service.storage.erasures import KEPT as ERASED_PHONES_KEPT

README = Path(__file__).resolve().parents[2] / "README.md"
PAIR = re.compile(r"`([a-z_]+)=([0-9]+[smhdy])`")


def _table() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    start = text.index("\n## Data we keep\n")
    section = text[start : text.index("\n## ", start + 1)]
    rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
    assert rows[0].startswith("| record | purpose | retention | legal basis |")
    found: dict[str, str] = {}
    for row in rows[1:]:
        cells = [c.strip() for c in row.strip("|").split(" | ")]
        assert len(cells) == 4 and all(cells), row
        for kind, value in PAIR.findall(cells[2]):
            assert kind not in found, f"{kind} twice in README's table"
            found[kind] = value
    return found


def test_readme_table_matches_the_defaults():
    table = {kind: parse_duration(value) for kind, value in _table().items()}
    expected = {k: DEFAULTS[k] for k in KINDS}
    expected["erased_phones"] = ERASED_PHONES_KEPT
    assert table == expected
    # ... and those are what idv runs with when IDV_RETENTION is unset.
    assert Settings.__dataclass_fields__["retention"].default_factory().periods == DEFAULTS
    assert parse_retention(None).periods == DEFAULTS


def test_the_audit_default_and_floor_follow_the_cybersecurity_law():
    assert DEFAULTS["audit"] >= AUDIT_MINIMUM == timedelta(days=180)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("24h", timedelta(days=1)),
        ("30d", timedelta(days=30)),
        ("3y", timedelta(days=3 * 365)),
    ],
)
def test_durations(text, value):
    assert parse_duration(text) == value
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("text", ["", "30", "d", "-1d", "0s", "1w", "1.5d", "30 d", "٣d", "101y"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_retention_overrides_only_what_it_names():
    retention = parse_retention(" verifications=7d , webhooks=1h,audit=180d")
    assert retention["verifications"] == timedelta(days=7)
    assert retention["webhooks"] == timedelta(hours=1)
    assert retention["audit"] == AUDIT_MINIMUM
    assert retention["replay"] == DEFAULTS["replay"]
    assert parse_retention(None) == parse_retention("")


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("audit=179d", "180 days"),
        ("audit=1y,audit=2y", "twice"),
        ("verification=30d", "unknown kind"),
        ("verifications", "KIND=DURATION"),
        ("webhooks=soon", "not a duration"),
    ],
)
def test_bad_settings_name_the_variable(raw, words):
    with pytest.raises(ConfigError) as caught:
        parse_retention(raw)
    assert caught.value.variable == "IDV_RETENTION" and words in str(caught.value)


def test_settings_read_idv_retention(tmp_path):
    settings = Settings.from_env({"IDV_DATA_DIR": str(tmp_path), "IDV_RETENTION": "replay=2h"})
    assert settings.retention["replay"] == timedelta(hours=2)
    with pytest.raises(ConfigError):
        Settings.from_env({"IDV_DATA_DIR": str(tmp_path), "IDV_RETENTION": "audit=30d"})
