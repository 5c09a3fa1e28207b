"""Server-side checks of what the portal's forms send. The browser's ``pattern``/``maxlength``
help the honest user; these decide (a form can be posted by anything). Each check returns the
clean value or raises ``FormError`` with the i18n key of the message to show."""

from __future__ import annotations

import re
from typing import Any
from zoneinfo import ZoneInfo

LOAN_MIN, LOAN_MAX = 1_000, 50_000  # yuan, whole
CODE_DIGITS = 6  # RFC 6238 and idv's SMS codes (NIST SP 800-63B-4: at least 6 digits)
PIN_MIN, PIN_MAX = 6, 12  # policies/default.toml knowledge_min_length = 6
PAY_PW_DIGITS = 6
DEFAULT_TZ = "Asia/Shanghai"
# An IANA zone name as browsers report it (Intl.DateTimeFormat().resolvedOptions().timeZone).
_ZONE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_+\-]{0,30}(/[A-Za-z0-9_+\-]{1,30}){0,2}")
_CODE_GAPS = re.compile(r"[\s\-]+")  # "123 456", "123-456"
_AMOUNT_GAPS = re.compile(r"[\s,，]+")  # "20,000", "20 000" (never "-": a sign, not a gap)


class FormError(ValueError):
    """A form value the portal refuses; ``key`` names the message (``i18n.MESSAGES``)."""

    def __init__(self, key: str, **values: Any) -> None:
        super().__init__(key)
        self.key = key
        self.values = values


def _digits(raw: object, gaps: re.Pattern[str]) -> str:
    """The text with full-width digits folded (０-９ from a Chinese IME) and ``gaps`` removed."""
    text = str(raw or "").strip().translate({0xFF10 + d: str(d) for d in range(10)})
    return gaps.sub("", text)


def loan_amount(raw: object) -> int:
    """A loan amount in whole yuan between ``LOAN_MIN`` and ``LOAN_MAX`` (``20,000`` is fine)."""
    text = _digits(raw, _AMOUNT_GAPS).removeprefix("¥").removeprefix("￥")
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise FormError("amount_invalid", low=f"{LOAN_MIN:,}", high=f"{LOAN_MAX:,}")
    amount = int(text)
    if not LOAN_MIN <= amount <= LOAN_MAX:
        raise FormError("amount_invalid", low=f"{LOAN_MIN:,}", high=f"{LOAN_MAX:,}")
    return amount


def one_time_code(raw: object) -> str:
    """A 6-digit SMS or authenticator code, spaces removed."""
    code = _digits(raw, _CODE_GAPS)
    if len(code) != CODE_DIGITS or not code.isascii() or not code.isdigit():
        raise FormError("code_format")
    return code


def new_secret(raw: object, confirm: object, *, digits: tuple[int, int], key: str) -> str:
    """A new PIN or payment password: only digits, the right length, typed the same twice.
    ``key`` prefixes the messages (``pin_format``/``pin_mismatch``, ``pay_pw_...``)."""
    value, again = str(raw or ""), str(confirm or "")
    low, high = digits
    if not (value.isascii() and value.isdigit() and low <= len(value) <= high):
        raise FormError(key + "_format")
    if value != again:
        raise FormError(key + "_mismatch")
    return value


def time_zone(raw: str | None) -> str:
    """The browser's zone name (a cookie set by portal.js) if it names a real IANA zone, else
    Beijing: the portal's people are in China unless their browser says otherwise."""
    if not raw or not _ZONE_NAME.fullmatch(raw) or ".." in raw:
        return DEFAULT_TZ
    try:
        ZoneInfo(raw)
    except (ValueError, OSError, KeyError):  # ZoneInfoNotFoundError is a KeyError
        return DEFAULT_TZ
    return raw
