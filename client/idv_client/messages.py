# ruff: noqa: E501 - message catalogue: one sentence per line reads better than split strings
"""User-facing text for idv's machine-readable answers, in Simplified Chinese (``zh-CN``) and
English (``en``): the ``reasons`` and ``held_until`` of a verification, a failed proof with the
tries left (``attempts_left``), and a rate limit (``rate_limited`` with ``Retry-After``).

Pure: no I/O beyond the time-zone database, no network, no state. Every function takes the locale
and answers a complete sentence; an unknown reason code gets a generic sentence, never the code
itself (a person cannot act on ``cooling_off``). Times are shown in the person's local time
(``tz``, Beijing by default), rounded up to the minute, with the zone named::

    from idv_client.messages import explain
    explain(v.reasons, v.held_until, locale="zh-CN")
    # '您的 SIM 卡近期发生了更换。……此操作将于 2026年12月14日 19:56（北京时间）恢复。'

The wording follows NIST SP 800-63B-4 (tell the person the risk of SMS and why it was ruled out)
and OWASP ASVS 5.0 6.3.8 (a failed proof names the factor the person typed, nothing about
factors they do not have).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = [
    "LOCALES",
    "Locale",
    "explain",
    "factor_name",
    "failed_proof",
    "format_local_time",
    "hold_end",
    "normalize_locale",
    "rate_limited",
    "reason_text",
    "reason_texts",
    "recovery_ready",
    "status_text",
]

Locale = Literal["zh-CN", "en"]
LOCALES: tuple[Locale, ...] = ("zh-CN", "en")
DEFAULT_TZ = "Asia/Shanghai"

# Reasons of a verification (API.md, "Step-up verification"). "denied": the action is held or
# refused; "pending": the verification goes on, and the reason says what was ruled out (for the
# carrier signals, always SMS: NIST SP 800-63B-4 restricted authenticator).
_REASONS: dict[str, dict[str, dict[Locale, str]]] = {
    "recent_sim_change": {
        "denied": {
            "en": "Your SIM card was changed recently. Thieves who take a phone try exactly this right after a SIM change, so this action stays closed for a while.",
            "zh-CN": "您的 SIM 卡近期发生了更换。手机被盗后，不法分子常在换卡后立即尝试此类操作，因此换卡后一段时间内暂停此操作。",
        },
        "pending": {
            "en": "Your SIM card was changed recently, so SMS codes are not accepted for a while. Use another way to confirm it's you.",
            "zh-CN": "您的 SIM 卡近期更换过，暂不接受短信验证码，请用其他方式验证。",
        },
    },
    "sim_lost": {
        "denied": {
            "en": "Your SIM card was reported lost. This action stays closed until the SIM card is unblocked.",
            "zh-CN": "您的 SIM 卡已挂失，解除挂失前暂停此操作。",
        },
        "pending": {
            "en": "Your SIM card was reported lost, so SMS codes to it are not accepted.",
            "zh-CN": "您的 SIM 卡已挂失，暂不接受发往该号码的短信验证码。",
        },
    },
    "number_recycled": {
        "any": {
            "en": "Your carrier has given your phone number to someone else, so SMS codes to it are not accepted. Confirm it's you another way, then update your number.",
            "zh-CN": "运营商已将您的手机号分配给他人，发往该号码的短信验证码不再有效。请用其他方式验证后更换手机号。",
        },
    },
    "cooling_off": {
        "any": {
            "en": "Your security settings or phone number changed recently. This action waits a while after such a change, in case it was not you.",
            "zh-CN": "您近期修改过安全设置或手机号。为防止并非您本人操作，修改后此操作需暂缓一段时间。",
        },
    },
    "signal_unavailable": {
        "denied": {
            "en": "We could not check your SIM card with your carrier just now. Please try again in a few minutes.",
            "zh-CN": "暂时无法向运营商核实您的 SIM 卡状态，请几分钟后再试。",
        },
        "pending": {
            "en": "We could not check your SIM card with your carrier just now, so SMS codes are not accepted for this.",
            "zh-CN": "暂时无法向运营商核实您的 SIM 卡状态，本次不接受短信验证码。",
        },
    },
    "subject_locked": {
        "any": {
            "en": "There were too many wrong attempts, so checks on your account are paused for a while.",
            "zh-CN": "错误次数过多，您的账号已暂时锁定验证。",
        },
    },
    "no_eligible_factors": {
        "any": {
            "en": "None of your verification methods can confirm this right now. Add another one, such as an authenticator app, in your security settings.",
            "zh-CN": "您现有的验证方式都无法用于此操作。请在安全设置中添加其他验证方式，例如验证器应用。",
        },
    },
    # Account recovery (API.md, "Recovery"): a delayed recovery under way holds other actions.
    "recovery_pending": {
        "any": {
            "en": "An account recovery is under way. This action waits until it completes or is cancelled.",
            "zh-CN": "您的账号正在恢复中，恢复完成或取消前暂停此操作。",
        },
    },
}
_UNKNOWN_REASON: dict[Locale, str] = {
    "en": "This action is not available right now.",
    "zh-CN": "此操作暂时无法进行。",
}

_FACTORS: dict[str, dict[Locale, str]] = {
    "sms": {"en": "SMS code", "zh-CN": "短信验证码"},
    "totp": {"en": "authenticator app code", "zh-CN": "验证器动态码"},
    "knowledge": {"en": "PIN", "zh-CN": "安全密码"},
    "device": {"en": "this device", "zh-CN": "本设备"},
    "passkey": {"en": "passkey", "zh-CN": "通行密钥"},
    "recovery_code": {"en": "recovery code", "zh-CN": "恢复码"},
    "attested": {"en": "identity check", "zh-CN": "身份核验"},
}
_UNKNOWN_FACTOR: dict[Locale, str] = {"en": "verification", "zh-CN": "验证"}

# What "not accepted" means per factor: a typed secret was wrong; a key or check did not verify.
_FAILED: dict[str, dict[Locale, str]] = {
    "sms": {"en": "That SMS code is not right.", "zh-CN": "短信验证码不正确。"},
    "totp": {
        "en": "That authenticator app code is not right. Wait for the next code and type it.",
        "zh-CN": "验证器动态码不正确，请等待下一个动态码后输入。",
    },
    "knowledge": {"en": "That PIN is not right.", "zh-CN": "安全密码不正确。"},
    "device": {
        "en": "This device could not confirm it's you.",
        "zh-CN": "本设备未能完成验证。",
    },
    "passkey": {"en": "The passkey was not accepted.", "zh-CN": "通行密钥验证未通过。"},
    "recovery_code": {
        "en": "That recovery code is not right, or was used before.",
        "zh-CN": "恢复码不正确或已使用过。",
    },
    "attested": {"en": "The identity check was not accepted.", "zh-CN": "身份核验未通过。"},
}
_FAILED_OTHER: dict[Locale, str] = {"en": "That did not match.", "zh-CN": "验证未通过。"}

_STATUSES: dict[str, dict[Locale, str]] = {
    "locked": {
        "en": "Too many wrong attempts: this check is locked. Start again later.",
        "zh-CN": "错误次数过多，本次验证已锁定，请稍后重新开始。",
    },
    "expired": {
        "en": "This check expired. Start again.",
        "zh-CN": "本次验证已过期，请重新开始。",
    },
    "denied": {"en": "This action is not available right now.", "zh-CN": "此操作暂时无法进行。"},
    "waiting": {
        "en": "Your account recovery is waiting out its safety delay.",
        "zh-CN": "账号恢复正在等待安全期结束。",
    },
    "cancelled": {"en": "This check was cancelled.", "zh-CN": "本次验证已取消。"},
    "satisfied": {"en": "Confirmed.", "zh-CN": "验证通过。"},
}

# Rate limits (429 rate_limited, RFC 9110 Retry-After). "sms": the per-phone budget of codes
# (ASVS 6.6.3); "proofs": failed guesses (RFC 4226 §7.3); anything else: the service is busy.
_LIMITS: dict[str, dict[Locale, tuple[str, str]]] = {
    "sms": {
        "en": (
            "Too many codes were sent to this number. You can ask for a new one in {wait}.",
            "Too many codes were sent to this number. You can ask for a new one later.",
        ),
        "zh-CN": (
            "发送到该号码的验证码次数过多，请 {wait}后再获取。",
            "发送到该号码的验证码次数过多，请稍后再获取。",
        ),
    },
    "proofs": {
        "en": (
            "Too many wrong attempts. Try again in {wait}.",
            "Too many wrong attempts. Try again later.",
        ),
        "zh-CN": ("错误次数过多，请 {wait}后再试。", "错误次数过多，请稍后再试。"),
    },
    "other": {
        "en": (
            "Too many requests just now. Try again in {wait}.",
            "Too many requests just now. Try again later.",
        ),
        "zh-CN": ("操作过于频繁，请 {wait}后再试。", "操作过于频繁，请稍后再试。"),
    },
}

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Zones whose people name their time, not an offset. China has one zone and no DST since 1991.
_BEIJING_ZONES = ("Asia/Shanghai", "Asia/Chongqing", "Asia/Harbin", "PRC")
_ZONE_NAMES: dict[str, dict[Locale, str]] = {
    **{name: {"en": "Beijing time", "zh-CN": "北京时间"} for name in _BEIJING_ZONES},
    "Asia/Hong_Kong": {"en": "Hong Kong time", "zh-CN": "香港时间"},
    "Asia/Macau": {"en": "Macau time", "zh-CN": "澳门时间"},
    "Asia/Taipei": {"en": "Taipei time", "zh-CN": "台北时间"},
    "UTC": {"en": "UTC", "zh-CN": "协调世界时"},
    "Etc/UTC": {"en": "UTC", "zh-CN": "协调世界时"},
}
_BEIJING = timezone(timedelta(hours=8), "CST")


def normalize_locale(locale: str | None) -> Locale:
    """``zh-CN`` for any Chinese tag (``zh``, ``zh_CN``, ``zh-Hans-CN``; Traditional readers get
    Simplified rather than English), ``en`` for everything else, ``None`` included."""
    tag = (locale or "").strip().replace("_", "-").lower()
    return "zh-CN" if tag == "zh" or tag.startswith("zh-") else "en"


def reason_text(code: str, locale: str = "zh-CN", *, status: str = "denied") -> str:
    """One sentence for one reason code. ``status`` is the verification's: ``pending`` words the
    carrier signals as "SMS codes are not accepted", anything else as a hold."""
    loc = normalize_locale(locale)
    variants = _REASONS.get(code)
    if variants is None:
        return _UNKNOWN_REASON[loc]
    chosen = variants.get("pending" if status == "pending" else "denied") or variants["any"]
    return chosen[loc]


def reason_texts(
    reasons: Iterable[str], locale: str = "zh-CN", *, status: str = "denied"
) -> list[str]:
    """A sentence per distinct reason, in idv's order; unknown codes share one generic sentence."""
    lines: list[str] = []
    for code in reasons:
        line = reason_text(code, locale, status=status)
        if line not in lines:
            lines.append(line)
    return lines


def _zone(tz: str | tzinfo | None) -> tzinfo:
    """A ``tzinfo`` for a zone name (IANA, via ``zoneinfo``); ``ValueError`` for an unknown one.
    Beijing works without a time-zone database (fixed UTC+8: no DST in China since 1991)."""
    if isinstance(tz, tzinfo):
        return tz
    name = tz or DEFAULT_TZ
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        if name in _BEIJING_ZONES:
            return _BEIJING
        raise ValueError(f"unknown time zone {name!r}") from None


def _as_datetime(moment: datetime | str | None) -> datetime | None:
    """An aware UTC ``datetime`` from idv's RFC 3339 text or a ``datetime`` (naive means UTC);
    ``None`` for ``None`` or text that is not a time (a page must not fail on it)."""
    if moment is None or moment == "":
        return None
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment.strip())
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def _offset_label(local: datetime) -> str:
    offset = local.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    hours, rest = divmod(abs(minutes), 60)
    return f"UTC{sign}{hours:02d}:{rest:02d}"


def format_local_time(
    moment: datetime | str, locale: str = "zh-CN", tz: str | tzinfo | None = DEFAULT_TZ
) -> str:
    """``moment`` as a person reads it in ``tz``, zone named: ``2026年12月14日 19:56（北京时间）``,
    ``14 Dec 2026, 19:56 Beijing time``. Rounded *up* to the minute: a hold that ends at 19:55:30
    must not be announced as over at 19:55. ``ValueError`` if ``moment`` is not a time."""
    loc = normalize_locale(locale)
    at = _as_datetime(moment)
    if at is None:
        raise ValueError(f"not an RFC 3339 time: {moment!r}")
    zone = _zone(tz)
    try:
        if at.second or at.microsecond:
            at = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
        local = at.astimezone(zone)
    except OverflowError:  # a hold "forever" (datetime.max): shown as it is, in UTC
        zone, local = UTC, at.astimezone(UTC)
    key = getattr(zone, "key", None) or ("Asia/Shanghai" if zone is _BEIJING else "")
    named = _ZONE_NAMES.get(key) or (_ZONE_NAMES["UTC"] if zone is UTC else None)
    if named:
        label = named[loc]
    else:
        abbreviation = local.tzname() or ""
        # Abbreviations such as "CET" read well in English; "+0530"-style ones do not.
        letters = re.fullmatch(r"[A-Z]{2,5}", abbreviation) and loc == "en"
        label = abbreviation if letters else _offset_label(local)
    if loc == "zh-CN":
        return f"{local.year}年{local.month}月{local.day}日 {local:%H:%M}（{label}）"
    return f"{local.day} {_MONTHS[local.month - 1]} {local.year}, {local:%H:%M} {label}"


def _at_time(
    moment: datetime | str | None, locale: str, tz: str | tzinfo | None, zh: str, en: str
) -> str | None:
    """``zh`` or ``en`` with ``{when}`` filled by ``moment`` in local time; None without one."""
    at = _as_datetime(moment)
    if at is None:
        return None
    when = format_local_time(at, locale, tz)
    return (zh if normalize_locale(locale) == "zh-CN" else en).format(when=when)


def hold_end(
    held_until: datetime | str | None, locale: str = "zh-CN", tz: str | tzinfo | None = DEFAULT_TZ
) -> str | None:
    """ "This action opens again on …" for idv's ``held_until``, or ``None`` when there is none."""
    return _at_time(
        held_until, locale, tz, "此操作将于 {when}恢复。", "This action opens again on {when}."
    )


def recovery_ready(
    ready_at: datetime | str | None, locale: str = "zh-CN", tz: str | tzinfo | None = DEFAULT_TZ
) -> str | None:
    """When a ``waiting`` delayed recovery (``ready_at``) can be completed with the PIN, in local
    time; ``None`` when idv sent no time. Rounded up like every time here: never too early."""
    zh, en = (
        "您可于 {when}起输入安全密码完成账号恢复。",
        "You can finish the recovery with your PIN from {when}.",
    )
    return _at_time(ready_at, locale, tz, zh, en)


def explain(
    reasons: Iterable[str],
    held_until: datetime | str | None = None,
    locale: str = "zh-CN",
    tz: str | tzinfo | None = DEFAULT_TZ,
    *,
    status: str = "denied",
) -> str:
    """Why idv held, denied or narrowed a verification, and when it opens again, as one text.

    ``reasons`` and ``held_until`` are the verification's (``held_until`` as RFC 3339 text or a
    ``datetime``); ``status`` its status (``pending`` words SMS signals as "SMS not accepted").
    ``tz``: the person's zone name (IANA) or a ``tzinfo``; Beijing by default.
    """
    loc = normalize_locale(locale)
    parts = reason_texts(reasons, loc, status=status)
    if not parts and status != "pending":
        parts = [_UNKNOWN_REASON[loc]]
    until = hold_end(held_until, loc, tz)
    if until:
        parts.append(until)
    return ("" if loc == "zh-CN" else " ").join(parts)


def factor_name(factor: str, locale: str = "zh-CN") -> str:
    """What the person calls a factor: ``knowledge`` is "PIN" / "安全密码"."""
    return _FACTORS.get(factor, _UNKNOWN_FACTOR)[normalize_locale(locale)]


def _tries_left(count: int, loc: Locale) -> str:
    if loc == "zh-CN":
        return f"还可以再试 {count} 次。"
    return "1 try left." if count == 1 else f"{count} tries left."


def failed_proof(
    factor: str,
    attempts_left: int | None = None,
    locale: str = "zh-CN",
    *,
    status: str | None = None,
) -> str:
    """A proof answered ``accepted: false``: which factor failed, and how many tries remain.

    ``attempts_left`` is the proof answer's field (failed proofs left before the verification
    locks); ``None`` when idv did not send it, then no count is promised. ``status == "locked"``
    or ``attempts_left == 0``: the check is locked and must start again.
    """
    loc = normalize_locale(locale)
    first = _FAILED.get(factor, _FAILED_OTHER)[loc]
    if status == "locked" or attempts_left == 0:
        tail = _STATUSES["locked"][loc]
    elif attempts_left is not None and attempts_left > 0:
        tail = _tries_left(attempts_left, loc)
    elif factor == "totp":
        tail = ""  # its sentence already says what to do next
    else:
        tail = "请重试。" if loc == "zh-CN" else "Try again."
    return first + ("" if loc == "zh-CN" or not tail else " ") + tail


# (from, size, en, zh): under two hours a wait reads in minutes, under two days in hours.
_UNITS = (
    (2 * 86400, 86400, "day", "天"),
    (2 * 3600, 3600, "hour", "小时"),
    (60, 60, "minute", "分钟"),
)


def _duration(seconds: float, loc: Locale) -> str:
    """A wait a person can plan with, rounded up: 45 s, 9 minutes, 2 hours, 3 days."""
    seconds = max(1, math.ceil(seconds))
    count, en, zh = seconds, "second", "秒"
    for threshold, size, unit_en, unit_zh in _UNITS:
        if seconds >= threshold:
            count, en, zh = math.ceil(seconds / size), unit_en, unit_zh
            break
    if loc == "zh-CN":
        return f"{count} {zh}"
    return f"{count} {en}{'' if count == 1 else 's'}"


def rate_limited(
    retry_after: float | timedelta | None,
    what: str = "other",
    locale: str = "zh-CN",
) -> str:
    """A 429 ``rate_limited`` in words. ``what``: ``sms`` (the per-phone budget of codes),
    ``proofs`` (too many wrong guesses) or anything else (too many requests). ``retry_after``:
    seconds from ``Retry-After`` (or a ``timedelta``); ``None`` says "later"."""
    loc = normalize_locale(locale)
    with_wait, without = _LIMITS.get(what, _LIMITS["other"])[loc]
    if isinstance(retry_after, timedelta):
        retry_after = retry_after.total_seconds()
    if retry_after is None or retry_after <= 0 or math.isnan(retry_after):
        return without
    return with_wait.format(wait=_duration(retry_after, loc))


def status_text(status: str, locale: str = "zh-CN") -> str:
    """A verification that is no longer pending: ``locked``, ``expired``, ``denied``, ..."""
    loc = normalize_locale(locale)
    return _STATUSES.get(status, _STATUSES["denied"])[loc]
