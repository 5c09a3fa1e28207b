"""Operations routes: health, readiness, metrics, OpenAPI."""

from __future__ import annotations


def test_healthz_and_readyz(http):
    assert http.get("/healthz").json == {"status": "ok"}
    assert http.get("/readyz").json == {"status": "ready"}


def test_readyz_fails_when_database_is_gone(app, ctx):
    from service.storage.db import make_engine

    ctx.engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none")
    r = app.test_client().get("/readyz")
    assert r.status_code == 503
    assert r.json["error"] == "service_unavailable"


def test_metrics_count_requests_by_route(http):
    http.get("/healthz")
    text = http.get("/metrics").get_data(as_text=True)
    assert 'idv_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "idv_http_request_duration_seconds_bucket" in text


def test_invented_methods_never_grow_the_metrics(http):
    """The method is the client's to choose; as a label, 200 invented methods made 200 new
    series per metric (found by raw hostile input, issue 6). They all count as "other"."""
    for i in range(200):
        assert http.open("/healthz", method=f"M{i}").status_code == 405
    assert http.open("/v1/verifications", method="BREW").json["error"] == "method_not_allowed"
    text = http.get("/metrics").get_data(as_text=True)
    assert 'idv_http_requests_total{method="other",route="<unmatched>",status="405"} 201.0' in text
    assert 'method="M' not in text and 'method="BREW"' not in text


def test_openapi_covers_every_route(app, http):
    doc = http.get("/openapi.json").json
    assert doc["openapi"].startswith("3.")
    documented = {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops}
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in documented, (path, method)


def test_jwks_may_be_cached_only_as_long_as_an_assertion_lives(http):
    # Relying parties cache the key set for max-age (idv_client honours it): a key idv drops must
    # stop verifying within one assertion lifetime (API.md: exp at most 5 minutes after iat).
    r = http.get("/.well-known/jwks.json")
    directives = [d.strip() for d in r.headers["Cache-Control"].split(",")]
    assert "public" in directives and "no-store" not in directives
    max_age = int(next(d for d in directives if d.startswith("max-age=")).split("=")[1])
    assert 0 < max_age <= 300


def test_jwks_publishes_signing_key(http, ctx):
    keys = http.get("/.well-known/jwks.json").json["keys"]
    assert [k["kid"] for k in keys] == [k.kid for k in ctx.keys.signing_keys]
    assert all("d" not in k for k in keys)
