"""Phone numbers: E.164 validation with ``phonenumbers`` and masking for every output.

PIPL / T4 "desensitise": a phone number leaves idv only masked, e.g. ``+86 138****8000``.
"""

from __future__ import annotations

import phonenumbers

from service.domain.errors import InvalidRequest


def is_region(code: str) -> bool:
    """True for an ISO 3166 region code that ``phonenumbers`` has a numbering plan for."""
    return code in phonenumbers.SUPPORTED_REGIONS


def normalize_e164(raw: object, default_region: str | None = None) -> str:
    """Return the E.164 form of ``raw`` or raise ``InvalidRequest``.

    API.md: phone numbers are E.164 (``+8613800138000``); anything else is a 400. We accept
    only a leading ``+`` and digits, and the number must be valid for its region. With
    ``default_region`` (``IDV_DEFAULT_REGION``), digits without ``+`` are read as a national
    number of that region, its trunk prefix included (``13900139001`` in ``CN``).
    """
    if default_region is not None and isinstance(raw, str) and not raw.startswith("+"):
        return _national(raw, default_region)
    if not isinstance(raw, str) or not raw.startswith("+") or not raw[1:].isdigit():
        raise InvalidRequest("phone must be an E.164 number such as +8613800138000")
    if not 8 <= len(raw) <= 16:
        raise InvalidRequest("phone must be an E.164 number such as +8613800138000")
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        raise InvalidRequest("phone must be an E.164 number such as +8613800138000") from None
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidRequest("phone is not a valid number for its country")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164 != raw:
        raise InvalidRequest("phone must be in canonical E.164 form")
    return e164


def _national(raw: str, region: str) -> str:
    """A national number of ``region`` (digits only) in E.164, or ``InvalidRequest``.

    Only the region's own numbers: an international dialling prefix (``00`` in CN, ``011`` in
    US) would let a "national" field name another country, so it is refused, not followed.
    """
    problem = f"phone must be E.164 (+8613800138000) or a national number of {region}"
    if not raw.isascii() or not raw.isdigit() or not 3 <= len(raw) <= 17:
        raise InvalidRequest(problem)
    try:
        parsed = phonenumbers.parse(raw, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        raise InvalidRequest(problem) from None
    if parsed.country_code_source != phonenumbers.CountryCodeSource.FROM_DEFAULT_COUNTRY:
        raise InvalidRequest(problem)
    if not phonenumbers.is_valid_number_for_region(parsed, region):
        raise InvalidRequest(f"phone is not a valid number of {region}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def mask_phone(e164: str) -> str:
    """Mask an E.164 number: country code, the first 3 and last 4 national digits.

    ``+8613800138000`` → ``+86 138****8000``. Shorter national numbers keep fewer digits so
    that at most half of them ever show.
    """
    try:
        parsed = phonenumbers.parse(e164, None)
        cc = str(parsed.country_code)
        national = phonenumbers.national_significant_number(parsed)
    except phonenumbers.NumberParseException:
        return "****"
    n = len(national)
    head, tail = (3, 4) if n >= 10 else (2, 2) if n >= 7 else (0, 2)
    hidden = n - head - tail
    return f"+{cc} {national[:head]}{'*' * hidden}{national[n - tail :]}"
