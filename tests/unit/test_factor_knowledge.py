"""Knowledge factor: guessability rules (NIST SP 800-63B §3.1.1.2) and argon2id hashing."""

from __future__ import annotations

import time
from importlib import resources

import pytest
from argon2 import PasswordHasher
from hypothesis import given
from hypothesis import strategies as st

from service.domain.errors import InvalidRequest, WeakSecret
from service.factors import knowledge
from service.factors.knowledge import KnowledgeHasher

FAST = {"time_cost": 1, "memory_cost_kib": 1024}


@pytest.fixture(scope="module")
def hasher() -> KnowledgeHasher:
    return KnowledgeHasher(**FAST)


def test_normalize_is_nfkc():
    assert knowledge.normalize("１２３４５６") == "123456"
    assert knowledge.normalize("ﬁ") == "fi"
    assert knowledge.normalize("e\u0301") == "\u00e9"


@pytest.mark.parametrize(
    "secret", ["739184", "correct horse", "Tr0ub4dor&3", "密码是长的一句话", "918273", "acegik"]
)
def test_good_secrets_are_accepted(secret):
    assert knowledge.check_strength(secret) is None


@pytest.mark.parametrize("secret", ["", "7", "73918", "ab c"])
def test_short_secrets_are_weak(secret):
    with pytest.raises(WeakSecret, match="at least 6"):
        knowledge.check_strength(secret)


def test_min_length_is_a_policy_setting_counted_in_code_points():
    knowledge.check_strength("7391", min_length=4)
    with pytest.raises(WeakSecret, match="at least 8"):
        knowledge.check_strength("739184", min_length=8)
    knowledge.check_strength("密码是长的一", min_length=6)  # six code points, 18 UTF-8 bytes


def test_length_is_counted_after_normalisation():
    # "ﬃ" (one code point) becomes "ffi" under NFKC
    knowledge.check_strength("ﬃ7391", min_length=6)


def test_over_256_characters_is_an_invalid_request():
    knowledge.check_strength("a7" * 128)
    with pytest.raises(InvalidRequest) as info:
        knowledge.check_strength("a7" * 128 + "x")
    assert not isinstance(info.value, WeakSecret)


@pytest.mark.parametrize(
    "secret", ["000000", "999999", "aaaaaaa", "ZZZZZZ", "........", "１１１１１１"]
)
def test_repeated_character_is_weak(secret):
    with pytest.raises(WeakSecret, match="repeated"):
        knowledge.check_strength(secret)


@pytest.mark.parametrize(
    "secret",
    ["234567", "765432", "890123", "321098", "0123456789", "bcdefg", "GFEDCB", "uvwxyz", "yzabcd"],
)
def test_sequential_runs_are_weak(secret):
    with pytest.raises(WeakSecret, match="consecutive"):
        knowledge.check_strength(secret)


@pytest.mark.parametrize(
    "secret",
    [
        "520520",
        "5201314",
        "147258",
        "159357",
        "123123",
        "112233",
        "696969",
        "199001",
        "PassWord",
        "qwerty",
        "iloveyou",
        "1qaz2wsx",
        "woaini1314",
    ],
)
def test_common_secrets_are_weak(secret):
    with pytest.raises(WeakSecret, match="common"):
        knowledge.check_strength(secret)


def test_messages_never_echo_the_secret():
    for secret in ["73918", "444444", "345678", "woaini1314"]:
        with pytest.raises(WeakSecret) as info:
            knowledge.check_strength(secret)
        assert secret not in info.value.message


def test_common_list_is_shipped_lowercase_and_large():
    text = resources.files("service.factors").joinpath("common_secrets.txt").read_text("utf-8")
    entries = [line for line in text.splitlines() if line]
    assert len(entries) >= 300
    assert all(entry == entry.lower() == entry.strip() for entry in entries)
    for must in ("123456", "111111", "000000", "520520", "5201314", "password", "qwerty"):
        assert must in entries


@given(st.text(max_size=300))
def test_check_strength_raises_only_domain_errors(secret):
    try:
        knowledge.check_strength(secret)
    except (WeakSecret, InvalidRequest) as error:
        assert error.message  # a reason is always given


def test_hash_is_argon2id_and_verifies(hasher):
    stored = hasher.hash("correct horse")
    assert stored.startswith("$argon2id$")
    assert hasher.verify(stored, "correct horse") == (True, None)


def test_wrong_secret_is_refused(hasher):
    stored = hasher.hash("correct horse")
    assert hasher.verify(stored, "correct horsf") == (False, None)


def test_hash_and_verify_normalise(hasher):
    stored = hasher.hash("７３９１８４")
    assert hasher.verify(stored, "739184") == (True, None)


def test_same_secret_hashes_differently(hasher):
    assert hasher.hash("739184") != hasher.hash("739184")


def test_changed_parameters_return_a_new_hash(hasher):
    old = KnowledgeHasher(time_cost=1, memory_cost_kib=512).hash("739184")
    ok, new_hash = hasher.verify(old, "739184")
    assert ok and new_hash is not None
    assert "m=1024" in new_hash and "m=512" in old
    assert hasher.verify(new_hash, "739184") == (True, None)


def test_wrong_secret_against_old_parameters_gives_no_new_hash(hasher):
    old = KnowledgeHasher(time_cost=1, memory_cost_kib=512).hash("739184")
    assert hasher.verify(old, "739185") == (False, None)


def test_subject_without_a_secret_is_refused(hasher):
    assert hasher.verify(None, "739184") == (False, None)
    assert hasher.verify(None, "idv-no-knowledge-factor") == (False, None)


@pytest.mark.parametrize(
    "stored", ["", "not a hash", "$argon2id$v=19$m=1024,t=1,p=1$bad", "$2b$12$x"]
)
def test_unparsable_stored_hash_is_refused(hasher, stored):
    assert hasher.verify(stored, "739184") == (False, None)


def test_missing_factor_costs_a_real_argon2_check():
    # ASVS 6.3.8: a subject without a knowledge factor must not answer measurably faster.
    slow = KnowledgeHasher(time_cost=3, memory_cost_kib=16384)
    stored = slow.hash("correct horse")

    def best_of(stored_value: str | None) -> float:
        timings = []
        for _ in range(3):
            start = time.perf_counter()
            slow.verify(stored_value, "wrong guess")
            timings.append(time.perf_counter() - start)
        return min(timings)

    real, missing = best_of(stored), best_of(None)
    assert missing > real * 0.5


def test_default_parameters_are_owasp_minimums():
    default = KnowledgeHasher()
    stored = default.hash("correct horse")
    assert "$argon2id$" in stored and "m=19456,t=2,p=1" in stored
    assert default.verify(stored, "correct horse") == (True, None)
    assert default.verify(stored, "correct horsE") == (False, None)
    assert PasswordHasher().verify(stored, "correct horse")
