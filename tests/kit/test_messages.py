"""``idv_client.messages``: the user-facing text for idv's reason codes, holds, failed proofs and
rate limits, in zh-CN and en (issue 21). Pure functions: no server needed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfoNotFoundError

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idv_client import messages
from idv_client.messages import (
    explain,
    factor_name,
    failed_proof,
    format_local_time,
    hold_end,
    normalize_locale,
    rate_limited,
    reason_text,
    reason_texts,
    recovery_ready,
    status_text,
)

# API.md, "Step-up verification": the reason codes a caller must be able to explain.
API_REASONS = [
    "recent_sim_change",
    "sim_lost",
    "number_recycled",
    "cooling_off",
    "signal_unavailable",
    "subject_locked",
    "no_eligible_factors",
]
FACTORS = ["sms", "totp", "knowledge", "device", "passkey", "recovery_code", "attested"]
# A Chinese page may show these Latin words (SIM 卡 is what the card is called in Chinese).
ZH_ALLOWED = {"SIM"}


def latin_words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z]+", text)) - ZH_ALLOWED


@pytest.mark.parametrize("code", [*API_REASONS, "recovery_pending"])
@pytest.mark.parametrize("status", ["denied", "pending"])
def test_every_reason_of_the_contract_has_its_own_sentence_in_both_languages(code, status):
    generic = {reason_text("zz_unknown", loc) for loc in ("zh-CN", "en")}
    zh, en = reason_text(code, "zh-CN", status=status), reason_text(code, "en", status=status)
    assert zh not in generic and en not in generic
    assert code not in zh and code not in en  # never the raw code
    assert latin_words(zh) == set(), zh  # no English on a Chinese page
    assert re.search(r"[\u4e00-\u9fff]", zh) and not re.search(r"[\u4e00-\u9fff]", en)
    assert "idv" not in (zh + en).lower()  # never the vendor's name


def test_a_sim_change_reads_as_a_hold_when_denied_and_as_no_sms_when_pending():
    assert "stays closed" in reason_text("recent_sim_change", "en")
    assert "SMS codes are not accepted" in reason_text("recent_sim_change", "en", status="pending")
    assert "暂停此操作" in reason_text("recent_sim_change", "zh-CN")
    assert "暂不接受短信验证码" in reason_text("recent_sim_change", "zh-CN", status="pending")


def test_unknown_codes_get_one_generic_sentence_and_never_the_code():
    lines = reason_texts(["zz_future_code", "yy_other"], "en")
    assert lines == ["This action is not available right now."]
    assert "zz_future_code" not in explain(["zz_future_code"], locale="en")
    assert explain([], locale="zh-CN") == "此操作暂时无法进行。"


def test_reasons_keep_idv_order_and_appear_once():
    lines = reason_texts(["cooling_off", "subject_locked", "cooling_off"], "en")
    assert lines == [reason_text("cooling_off", "en"), reason_text("subject_locked", "en")]


def test_the_hold_end_is_in_beijing_time_by_default_rounded_up_to_the_minute():
    # 11:55:30 UTC is 19:55:30 in Beijing: announcing 19:55 would send the person back too early.
    text = explain(["recent_sim_change"], "2026-12-14T11:55:30Z", locale="zh-CN")
    assert text.endswith("此操作将于 2026年12月14日 19:56（北京时间）恢复。"), text
    assert text.startswith(reason_text("recent_sim_change", "zh-CN"))
    en = explain(["cooling_off"], "2026-12-14T11:55:30Z", locale="en")
    assert en.endswith("This action opens again on 14 Dec 2026, 19:56 Beijing time."), en


def test_the_hold_end_crosses_the_date_line_in_local_time():
    # 16:10 UTC on the 31st is already the 1st of January in Beijing.
    assert (
        hold_end("2026-12-31T16:10:00Z", "zh-CN")
        == "此操作将于 2027年1月1日 00:10（北京时间）恢复。"
    )


def test_a_delayed_recovery_says_when_the_pin_completes_it_in_local_time_rounded_up():
    # API.md, Recovery: ``ready_at`` of a waiting recover_delayed. 01:00:20 UTC is 09:00:20 in
    # Beijing: "from 09:00" would send the person back 20 s too early.
    assert (
        recovery_ready("2026-12-10T01:00:20Z", "zh-CN")
        == "您可于 2026年12月10日 09:01（北京时间）起输入安全密码完成账号恢复。"
    )
    assert recovery_ready("2026-12-10T01:00:00Z", "en", "Europe/Berlin") == (
        "You can finish the recovery with your PIN from 10 Dec 2026, 02:00 CET."
    )
    assert recovery_ready(None, "en") is None and recovery_ready("soon", "zh-CN") is None


def test_a_datetime_and_rfc3339_text_give_the_same_hold_end_and_naive_means_utc():
    at = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
    assert hold_end(at, "en") == hold_end("2026-03-01T02:00:00+00:00", "en")
    assert hold_end(at.replace(tzinfo=None), "en") == hold_end(at, "en")
    assert hold_end(at.astimezone(timezone(timedelta(hours=-5))), "en") == hold_end(at, "en")


def test_other_zones_are_named_by_abbreviation_or_offset():
    winter = "2026-01-10T12:00:00Z"
    assert format_local_time(winter, "en", "Europe/Berlin") == "10 Jan 2026, 13:00 CET"
    assert format_local_time("2026-07-10T12:00:00Z", "en", "Europe/Berlin").endswith("14:00 CEST")
    # São Paulo's abbreviation is "-03": shown as an offset.
    assert format_local_time(winter, "en", "America/Sao_Paulo") == "10 Jan 2026, 09:00 UTC-03:00"
    assert format_local_time(winter, "zh-CN", "Europe/Berlin") == "2026年1月10日 13:00（UTC+01:00）"
    assert format_local_time(winter, "en", "UTC") == "10 Jan 2026, 12:00 UTC"


def test_a_tzinfo_object_is_accepted_and_an_unknown_zone_name_is_a_value_error():
    nine = timezone(timedelta(hours=9))
    assert format_local_time("2026-01-10T12:00:00Z", "en", nine).endswith("21:00 UTC+09:00")
    with pytest.raises(ValueError):
        format_local_time("2026-01-10T12:00:00Z", "en", "Mars/Olympus_Mons")
    with pytest.raises(ValueError):
        format_local_time("2026-01-10T12:00:00Z", "en", "../../etc/passwd")


def test_beijing_needs_no_time_zone_database(monkeypatch):
    """Windows without the tzdata package has no IANA database: China has one fixed offset."""

    def missing(name):
        raise ZoneInfoNotFoundError(name)

    monkeypatch.setattr(messages, "ZoneInfo", missing)
    assert (
        hold_end("2026-12-14T11:55:00Z", "zh-CN")
        == "此操作将于 2026年12月14日 19:55（北京时间）恢复。"
    )
    with pytest.raises(ValueError):
        format_local_time("2026-12-14T11:55:00Z", "en", "Europe/Berlin")


def test_no_or_unreadable_held_until_adds_no_hold_sentence():
    assert hold_end(None) is None
    assert hold_end("soon", "en") is None
    assert explain(["sim_lost"], "not a time", locale="en") == reason_text("sim_lost", "en")


def test_a_hold_without_end_at_the_end_of_time_does_not_raise():
    far = datetime.max.replace(tzinfo=UTC)
    assert "9999" in (hold_end(far, "zh-CN") or "")
    assert "9999" in (hold_end(far, "en", "Asia/Tokyo") or "")


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("zh-CN", "zh-CN"),
        ("zh", "zh-CN"),
        ("zh_CN", "zh-CN"),
        ("zh-Hans-CN", "zh-CN"),
        ("ZH-tw", "zh-CN"),
        ("en", "en"),
        ("en-US", "en"),
        ("fr-FR", "en"),
        ("zhx", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_locale_tags_map_to_the_two_catalogues(tag, expected):
    assert normalize_locale(tag) == expected


@pytest.mark.parametrize(
    ("factor", "left", "en", "zh"),
    [
        (
            "knowledge",
            2,
            "That PIN is not right. 2 tries left.",
            "安全密码不正确。还可以再试 2 次。",
        ),
        (
            "sms",
            1,
            "That SMS code is not right. 1 try left.",
            "短信验证码不正确。还可以再试 1 次。",
        ),
        ("knowledge", None, "That PIN is not right. Try again.", "安全密码不正确。请重试。"),
        (
            "totp",
            None,
            "That authenticator app code is not right. Wait for the next code and type it.",
            "验证器动态码不正确，请等待下一个动态码后输入。",
        ),
        (
            "knowledge",
            0,
            "That PIN is not right. Too many wrong attempts: this check is locked. "
            "Start again later.",
            "安全密码不正确。错误次数过多，本次验证已锁定，请稍后重新开始。",
        ),
        ("zz_new_factor", 3, "That did not match. 3 tries left.", "验证未通过。还可以再试 3 次。"),
    ],
)
def test_a_failed_proof_names_the_factor_and_the_tries_left(factor, left, en, zh):
    assert failed_proof(factor, left, "en") == en
    assert failed_proof(factor, left, "zh-CN") == zh


def test_a_locked_status_wins_over_a_missing_count():
    assert "locked" in failed_proof("device", None, "en", status="locked")


@pytest.mark.parametrize("factor", FACTORS)
def test_every_factor_has_a_name_and_a_failure_sentence_without_english_in_chinese(factor):
    for text in (factor_name(factor, "zh-CN"), failed_proof(factor, 3, "zh-CN")):
        assert latin_words(text) == set(), text
    assert factor_name(factor, "en") != factor_name("zz", "en")


@pytest.mark.parametrize(
    ("seconds", "what", "en"),
    [
        (
            540,
            "sms",
            "Too many codes were sent to this number. You can ask for a new one in 9 minutes.",
        ),
        (
            61,
            "sms",
            "Too many codes were sent to this number. You can ask for a new one in 2 minutes.",
        ),
        (30, "proofs", "Too many wrong attempts. Try again in 30 seconds."),
        (1, "other", "Too many requests just now. Try again in 1 second."),
        (7200, "proofs", "Too many wrong attempts. Try again in 2 hours."),
        (3 * 86400, "other", "Too many requests just now. Try again in 3 days."),
        (None, "sms", "Too many codes were sent to this number. You can ask for a new one later."),
        (timedelta(minutes=15), "proofs", "Too many wrong attempts. Try again in 15 minutes."),
    ],
)
def test_rate_limits_say_what_was_limited_and_when_to_come_back(seconds, what, en):
    assert rate_limited(seconds, what, "en") == en


def test_the_sms_limit_in_chinese_is_about_codes_to_this_number_not_a_busy_service():
    text = rate_limited(540, "sms", "zh-CN")
    assert text == "发送到该号码的验证码次数过多，请 9 分钟后再获取。"
    assert "繁忙" not in text and latin_words(text) == set()


def test_statuses_in_both_languages():
    assert status_text("expired", "en") == "This check expired. Start again."
    assert "锁定" in status_text("locked", "zh-CN")
    assert status_text("zz_new", "en") == status_text("denied", "en")


codes = st.lists(
    st.one_of(
        st.sampled_from([*API_REASONS, "recovery_pending"]),
        st.from_regex(r"zz_[a-z_]{1,20}", fullmatch=True),
    ),
    max_size=8,
)
moments = st.one_of(
    st.none(),
    st.datetimes(timezones=st.just(UTC)),
    st.datetimes(),
    st.text(max_size=30),
)


@given(codes, moments, st.sampled_from(["zh-CN", "en"]), st.sampled_from(["denied", "pending"]))
def test_explain_never_raises_and_never_shows_a_code(reasons, held_until, locale, status):
    text = explain(reasons, held_until, locale=locale, status=status)
    assert isinstance(text, str)
    for code in reasons:
        assert code not in text
    if locale == "zh-CN":
        assert latin_words(text) == set(), text
