"""Conveniences for callers (API.md, issue 21) through a real ``idv serve``: the CLI's issuer,
a national phone number, an Idempotency-Key retried over gunicorn (a chunked retry too)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import httpx

from tests.e2e.conftest import running


def test_a_tenant_retries_a_timed_out_post_against_a_real_server(tmp_path: Path, database_url):
    with running(tmp_path, database_url, {"IDV_DEFAULT_REGION": "CN"}) as server:
        created = server.idv("clients", "create", "loan", "--issuer", "速借")
        assert created.returncode == 0, created.stderr
        auth = {"Authorization": f"Bearer {created.stdout.strip().splitlines()[-1]}"}
        with httpx.Client(base_url=server.url, headers=auth, timeout=10) as http:
            put = http.put("/v1/subjects/u_1", json={"phone": "13900139001"})
            assert put.status_code == 201 and put.json()["phone"] == "+86 139****9001"

            body = b'{"type": "totp", "label": "139****9001"}'
            headers = {"Content-Type": "application/json", "Idempotency-Key": "enrol-u_1"}
            first = http.post("/v1/subjects/u_1/factors", content=body, headers=headers)
            assert first.status_code == 201
            assert unquote(first.json()["otpauth_uri"]).startswith(
                "otpauth://totp/速借:139****9001?"
            )

            def chunks():  # the same bytes, sent chunked: the same request
                yield body[:10]
                yield body[10:]

            again = http.post("/v1/subjects/u_1/factors", content=chunks(), headers=headers)
            assert again.request.headers.get("Transfer-Encoding") == "chunked"
            assert again.status_code == 201 and again.content == first.content
            assert again.headers["Idempotent-Replayed"] == "true"

            other = http.post(
                "/v1/subjects/u_1/factors", content=body.replace(b"139", b"138"), headers=headers
            )
            assert other.status_code == 422 and other.json()["error"] == "idempotency_conflict"
            listed = http.get("/v1/subjects/u_1/factors").json()["factors"]
            assert [f["type"] for f in listed] == ["totp"]
