"""The commercial-cryptography profile against the standards' own examples (GB/T 39786 profile).

SM3: GB/T 32905-2016 Annex A.1. SM4: GB/T 32907-2016 Annex A.1. SM2: the signature example of
GM/T 0003.5-2012 / GB/T 32918.5-2017 on the recommended curve, with user ID
``1234567812345678`` (the one idv uses, GM/T 0009 §10). ``gmalg`` (pure Python, a different
implementation from the one idv signs with) checks what idv's library produces.
"""

from __future__ import annotations

import gmalg
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from service.crypto import profile, sm2
from service.crypto.keyring import KeyRing, KeyRingError

# GM/T 0003.5-2012 / GB/T 32918.5-2017 signature example (recommended 256-bit curve).
D_A = bytes.fromhex("3945208F7B2144B13F36E38AC6D39F95889393692860B51A42FB81EF4DF7C5B8")
P_A = bytes.fromhex(
    "09F9DF311E5421A150DD7D161E4BC5C672179FAD1833FC076BB08FF356F35020"
    "CCEA490CE26775A52DC6EA718CC1AA600AED05FBF35E084A6632F6072DA9AD13"
)
K = bytes.fromhex("59276E27D506861A16680F3AD9C02DCCEF3CC1FA3CDBE4CE6D54B80DEAC1BC21")
MESSAGE = b"message digest"
R_S = bytes.fromhex(
    "F5A03B0648D2C4630EEAC513E1BB81A15944DA3827D5B74143AC7EACEEE720B3"
    "B1B6AA29DF212FD8763182BC0D421CA1BB9038FD1F7F42D4840B69C485BBC1AA"
)
Z_A = bytes.fromhex("B2E14C5C79C6DF5B85F4FE7ED8DB7A262B9DA7E07CCB0EA9F4747B8CCDA8A4F3")
E = bytes.fromhex("F0B43E94BA45ACCAACE692ED534382EB17E6AB5A19CE7B31F4486FDFC0D28640")


def test_sm3_of_abc_is_the_standard_digest() -> None:
    # GB/T 32905-2016 Annex A.1
    assert profile.sm3(b"abc").hex() == (
        "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
    )
    assert profile.plain_hash(profile.GM, b"abc") == profile.sm3(b"abc").hex()


def test_sm4_block_of_the_standard_example() -> None:
    # GB/T 32907-2016 Annex A.1: key = plaintext = 0123456789abcdeffedcba9876543210
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    assert (enc.update(key) + enc.finalize()).hex() == "681edf34d206965e86b3e94f536e4246"


def test_sm2_standard_signature_verifies_with_idvs_library() -> None:
    assert sm2.verify(P_A, MESSAGE, R_S)
    assert not sm2.verify(P_A, b"message digesT", R_S)
    assert not sm2.verify(P_A, MESSAGE, R_S[:32] + bytes(32))


def test_sm2_standard_example_z_a_and_e_are_sm3_of_the_user_id() -> None:
    # Z_A = SM3(ENTL ‖ ID ‖ a ‖ b ‖ xG ‖ yG ‖ xA ‖ yA); e = SM3(Z_A ‖ M) (GB/T 32918.2 §5.5, §6.1)
    curve = bytes.fromhex(
        "FFFFFFFEFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF00000000FFFFFFFFFFFFFFFC"
        "28E9FA9E9D9F5E344D5A9E4BCF6509A7F39789F515AB8F92DDBCBD414D940E93"
        "32C4AE2C1F1981195F9904466A39C9948FE30BBFF2660BE1715A4589334C74C7"
        "BC3736A2F4F6779C59BDCEE36B692153D0A9877CC62A474002DF32E52139F0A0"
    )
    entl = (len(sm2.DEFAULT_USER_ID) * 8).to_bytes(2, "big")
    assert profile.sm3(entl + sm2.DEFAULT_USER_ID + curve + P_A) == Z_A
    assert profile.sm3(Z_A + MESSAGE) == E


def test_sm2_standard_signature_is_reproduced_by_the_independent_implementation() -> None:
    signer = gmalg.SM2(sk=D_A, uid=sm2.DEFAULT_USER_ID, rnd_fn=lambda _: int.from_bytes(K, "big"))
    r, s = signer.sign(MESSAGE)
    assert r + s == R_S
    assert gmalg.SM2(pk=b"\x04" + P_A, uid=sm2.DEFAULT_USER_ID).verify(MESSAGE, r, s)


def test_idv_signatures_verify_with_the_independent_implementation() -> None:
    secret, public = sm2.generate()
    signer = sm2.Signer(sm2.private_pem(secret, public))
    for message in (b"", b"idv", "签名 ✓".encode() * 100):
        signature = signer.sign(message)
        assert len(signature) == 64
        check = gmalg.SM2(pk=b"\x04" + public, uid=sm2.DEFAULT_USER_ID)
        assert check.verify(message, signature[:32], signature[32:])
        assert not check.verify(message + b"x", signature[:32], signature[32:])


def test_sm2_key_containers_round_trip_and_refuse_other_curves() -> None:
    pem = sm2.public_pem(P_A)
    assert "BEGIN PUBLIC KEY" in pem and sm2.public_from_pem(pem) == P_A
    assert sm2.private_from_pem(sm2.private_pem(D_A, P_A)) == (D_A, P_A)
    p256 = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(sm2.SM2KeyError):
        sm2.public_from_pem(p256)  # P-256 has the same layout but another curve OID
    assert not sm2.is_valid_public(bytes(64))


def test_sm4_gcm_data_keys_bind_context_and_old_aes_values_stay_readable() -> None:
    intl = KeyRing.generate()
    old = intl.encrypt("+8613800138000", "phone:a:b")
    gm = KeyRing.from_json(intl.to_json(), profile.GM)
    kid = gm.add_data_key()
    assert gm.data_key_alg(kid) == profile.SM4_GCM and len(gm.data_keys[kid]) == 16
    new = gm.encrypt("+8613800138000", "phone:a:b")
    assert KeyRing.key_id_of(new) == kid
    again = KeyRing.from_json(gm.to_json(), profile.GM)  # the key's algorithm is stored
    assert again.decrypt(new, "phone:a:b") == again.decrypt(old, "phone:a:b") == "+8613800138000"
    with pytest.raises(KeyRingError):
        again.decrypt(new, "phone:a:c")


def test_keyed_lookups_are_hmac_sm3_under_gm_and_cover_every_written_profile() -> None:
    ring = KeyRing.generate(profile.GM)
    gm_hash = ring.lookup_hash("phone", "+8613800138000")
    key = profile.hmac_sm3(ring.lookup_key, b"idv-gm-lookup-key")
    assert gm_hash == profile.hmac_sm3(key, b"phone\x00+8613800138000").hex()
    assert ring.lookup_hashes("phone", "+8613800138000") == [gm_hash]
    ring.lookup_profiles = ["gm", "intl"]
    intl_hash = ring.lookup_hash("phone", "+8613800138000", profile.INTL)
    assert intl_hash != gm_hash
    assert ring.lookup_hashes("phone", "+8613800138000") == [gm_hash, intl_hash]


def test_sms_code_digests_are_hmac_sm3_under_gm() -> None:
    from service.factors import sms

    key = bytes(range(32))
    digest = sms.code_digest(key, "vf_1", "123456", profile.GM)
    assert digest == profile.hmac_sm3(key, b"idv-sms-code-v1\x00vf_1\x00123456").hex()
    assert digest != sms.code_digest(key, "vf_1", "123456")
    assert sms.code_matches(key, "vf_1", "123456", digest, profile.GM)
    assert not sms.code_matches(key, "vf_1", "123456", digest)
