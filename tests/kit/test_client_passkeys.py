"""``idv_client``'s passkey calls against a real ``idv serve`` (API.md, Passkeys): the tenant's
relying party set with ``idv clients webauthn``, then registration and a login with the software
authenticator of the HTTP tests (real WebAuthn responses)."""

from __future__ import annotations

import pytest

from idv_client import IdvClient, InvalidCode
from tests.http.authenticator import Authenticator

pytestmark = pytest.mark.slow  # a real idv serve

RP_ID = "shop.example"
ORIGIN = "https://shop.example"


@pytest.fixture
def idv(idv_server):
    with IdvClient(idv_server.url, idv_server.api_key("shop", "verify")) as c:
        args = ["clients", "webauthn", c.whoami().client_id, "--rp-id", RP_ID, "--origin", ORIGIN]
        out = idv_server.idv(*args)
        assert out.returncode == 0, out.stdout
        yield c


def test_enroll_finish_challenge_and_prove_a_passkey(idv, phone):
    idv.put_subject("alice", phone)
    key = Authenticator(ORIGIN, RP_ID)
    pending = idv.enroll_passkey("alice", label="Alice's phone")
    assert pending.status == "pending" and pending.options is not None
    assert pending.options["rp"]["id"] == RP_ID and "options" not in repr(pending)
    with pytest.raises(InvalidCode):  # another site's page cannot register for this tenant
        idv.finish_passkey(
            "alice", pending.factor_id, key.create(pending.options, origin="https://evil.example")
        )
    assert (
        idv.finish_passkey("alice", pending.factor_id, key.create(pending.options)).status
        == "active"
    )

    v = idv.start_verification("alice", "login")
    assert ["passkey"] in v.options
    challenge = idv.passkey_challenge(v.verification_id)
    assert challenge.factor == "passkey" and challenge.options is not None
    assert challenge.options["rpId"] == RP_ID and challenge.expires_at is not None
    wrong = idv.prove_passkey(
        v.verification_id, key.get(challenge.options, origin="https://evil.example")
    )
    assert wrong.accepted is False and wrong.attempts_left == 4
    done = idv.prove_passkey(v.verification_id, key.get(challenge.options))
    assert done.accepted and done.status == "satisfied" and done.assertion
