"""WebCrypto signs ECDSA as raw r||s; idv's ES256 device proofs are DER (API.md). The page's
``rawToDer`` (examples/loan_portal/static/portal.js) runs here in Chromium against
``cryptography``'s DER encoder, with short and high-bit r/s, and on real WebCrypto signatures."""

from __future__ import annotations

import base64
import secrets

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tests.kit.browser import PORTAL_JS, launch, needs_chromium

pytestmark = [pytest.mark.slow, needs_chromium]
sync_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")


@pytest.fixture(scope="module")
def page():
    with sync_api.sync_playwright() as p:
        browser = launch(p)
        pg = browser.new_page()
        # WebCrypto needs a secure context: 127.0.0.1 is one (about:blank is not). No server:
        # the page is served by Playwright's router.
        html = f"<!doctype html><script>{PORTAL_JS.read_text()}</script>"
        pg.route(
            "http://127.0.0.1/der", lambda route: route.fulfill(body=html, content_type="text/html")
        )
        pg.goto("http://127.0.0.1/der")
        yield pg
        browser.close()


def raw(r: int, s: int) -> bytes:
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


VECTORS = [
    (1, 1),  # one-byte integers
    (0, 2**255),  # zero; s needs a 0x00 pad (high bit set)
    (0x7F << 248, 0x80 << 248),  # r high bit clear, s high bit set
    (0xFF << 248, 0x01),
    (0x00FF << 232, 0x7F),  # r one byte short, high bit set: 0x00 pad again
    (2**248 - 1, 2**240 + 5),  # r 31 bytes, s 31 bytes with leading 0x01
    (0x80, 2**256 - 1),
]


@pytest.mark.parametrize(("r", "s"), VECTORS)
def test_raw_to_der_matches_cryptography(page, r, s):
    der = page.evaluate("(raw) => Array.from(rawToDer(new Uint8Array(raw)))", list(raw(r, s)))
    assert bytes(der) == encode_dss_signature(r, s)


def test_raw_to_der_matches_cryptography_on_random_short_integers(page):
    # Drawn inside the test, not in the parameter list: pytest-xdist's workers must collect the
    # same test ids.
    for _ in range(8):
        r, s = secrets.randbits(200), secrets.randbits(120)  # far shorter than 32 bytes
        der = page.evaluate("(raw) => Array.from(rawToDer(new Uint8Array(raw)))", list(raw(r, s)))
        assert bytes(der) == encode_dss_signature(r, s)


def test_rejects_odd_lengths(page):
    with pytest.raises(sync_api.Error, match="equal halves"):
        page.evaluate("() => rawToDer(new Uint8Array(63))")


def test_webcrypto_signatures_verify_after_conversion(page):
    """300 signatures by a non-extractable WebCrypto key: every one verifies as DER ES256, and
    short r or s (about 1 in 128 each) occur among them."""
    out = page.evaluate(
        """async () => {
          const pair = await crypto.subtle.generateKey(
            {name: "ECDSA", namedCurve: "P-256"}, false, ["sign", "verify"]);
          const spki = Array.from(
            new Uint8Array(await crypto.subtle.exportKey("spki", pair.publicKey)));
          let extractable = true;
          try { await crypto.subtle.exportKey("pkcs8", pair.privateKey); }
          catch (e) { extractable = false; }
          const sigs = [];
          for (let i = 0; i < 300; i++) {
            const msg = "challenge-" + i + "-挑战";
            const raw = await crypto.subtle.sign({name: "ECDSA", hash: "SHA-256"}, pair.privateKey,
              new TextEncoder().encode(msg));
            sigs.push([msg, b64url(rawToDer(raw)), Array.from(new Uint8Array(raw))]);
          }
          return {spki, extractable, sigs};
        }"""
    )
    assert out["extractable"] is False
    key = serialization.load_der_public_key(bytes(out["spki"]))
    assert isinstance(key, ec.EllipticCurvePublicKey)
    shortest = 64
    for msg, sig, raw_sig in out["sigs"]:
        der = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        assert "=" not in sig
        key.verify(der, msg.encode(), ec.ECDSA(hashes.SHA256()))
        r, s = int.from_bytes(bytes(raw_sig[:32])), int.from_bytes(bytes(raw_sig[32:]))
        shortest = min(shortest, (r.bit_length() + 7) // 8, (s.bit_length() + 7) // 8)
    with pytest.raises(InvalidSignature):
        key.verify(der, b"another message", ec.ECDSA(hashes.SHA256()))
    # Not asserted (probabilistic), but the fixed vectors above cover short r/s either way.
    print(f"shortest r/s among 300 signatures: {shortest} bytes")
