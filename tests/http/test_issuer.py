"""A tenant's name in authenticator apps (API.md "Conveniences for callers", issue 21): the otpauth
URI names the tenant and the person, never the vendor's subject id."""

from __future__ import annotations

from urllib.parse import parse_qs, unquote, urlsplit

import pyotp
import pytest
from click.testing import CliRunner

from service.cli import cli
from service.domain.errors import InvalidRequest
from service.usecases.clients import create_client
from tests.http.flow import PHONE
from tests.http.test_cli import env  # noqa: F401  (the CLI's environment fixture)


def enrol_totp(http, key: str, subject: str = "u_8f3a2c", **body):
    headers = {"Authorization": f"Bearer {key}"}
    assert http.put(f"/v1/subjects/{subject}", json={"phone": PHONE}, headers=headers)
    return http.post(
        f"/v1/subjects/{subject}/factors", json={"type": "totp", **body}, headers=headers
    )


def label_and_issuer(uri: str) -> tuple[str, list[str]]:
    parts = urlsplit(uri)
    assert (parts.scheme, parts.netloc) == ("otpauth", "totp")
    return unquote(parts.path.lstrip("/")), parse_qs(parts.query)["issuer"]


def test_issuer_and_label_are_the_tenant_and_the_person(ctx, http):
    key = create_client(ctx, "loan-platform", ["verify"], issuer="速借")[1]
    r = enrol_totp(http, key, label="138****8000")
    assert r.status_code == 201
    uri = r.json["otpauth_uri"]
    # Key Uri Format: the label's issuer prefix and the issuer parameter agree, and everything
    # outside ASCII is percent-encoded (UTF-8), which authenticator apps decode.
    assert uri.isascii() and "%E9%80%9F%E5%80%9F" in uri
    assert label_and_issuer(uri) == ("速借:138****8000", ["速借"])
    assert "u_8f3a2c" not in unquote(uri)
    parsed = pyotp.parse_uri(uri)
    assert (parsed.issuer, parsed.name) == ("速借", "138****8000")
    assert parsed.secret == r.json["secret"] and parsed.interval == 30 and parsed.digits == 6
    listed = http.get("/v1/subjects/u_8f3a2c/factors", headers={"Authorization": f"Bearer {key}"})
    assert listed.json["factors"][0]["label"] == "138****8000"


def test_without_a_label_the_account_is_the_masked_phone(ctx, http):
    key = create_client(ctx, "loan-platform", ["verify"], issuer="速借")[1]
    uri = enrol_totp(http, key).json["otpauth_uri"]
    assert label_and_issuer(uri) == ("速借:+86 138****8000", ["速借"])
    assert "13800138000" not in unquote(uri)  # PIPL: the phone leaves idv masked


def test_without_an_issuer_the_deployment_issuer_is_used(ctx, http):
    key = create_client(ctx, "tenant", ["verify"])[1]
    uri = enrol_totp(http, key, label="Alice").json["otpauth_uri"]
    assert label_and_issuer(uri) == ("idv:Alice", ["idv"])


@pytest.mark.parametrize("label", ["a:b", "line\nbreak", "   "])
def test_a_label_apps_would_misread_is_400(ctx, http, label):
    key = create_client(ctx, "tenant", ["verify"])[1]
    r = enrol_totp(http, key, label=label)
    assert r.status_code == 400 and r.json["error"] == "invalid_request"


@pytest.mark.parametrize("issuer", ["a:b", "", " ", "x" * 65, "ta\tb"])
def test_a_bad_issuer_is_refused(ctx, issuer):
    with pytest.raises(InvalidRequest):
        create_client(ctx, "tenant", ["verify"], issuer=issuer)


def test_cli_sets_the_issuer_at_creation_and_later(env, http):  # noqa: F811
    run = CliRunner().invoke
    created = run(cli, ["clients", "create", "loan", "--issuer", "速借"], env=env)
    assert created.exit_code == 0, created.output
    client_id = created.output.splitlines()[0].split(": ")[1]
    key = created.output.strip().splitlines()[-1]
    assert label_and_issuer(enrol_totp(http, key, label="A").json["otpauth_uri"])[1] == ["速借"]

    renamed = run(cli, ["clients", "issuer", client_id, "速借金融"], env=env)
    assert renamed.exit_code == 0 and "速借金融" in renamed.output
    uri = enrol_totp(http, key, label="A").json["otpauth_uri"]
    assert label_and_issuer(uri) == ("速借金融:A", ["速借金融"])

    missing = run(cli, ["clients", "issuer", "cl_nobody", "X"], env=env)
    assert missing.exit_code == 1 and "no client cl_nobody" in missing.output
