"""The WSGI fast path of a whole login (verification create and the proof route) answers exactly
what the Flask routes answer (issue 24: "a leaner hot route is approved wherever a test shows
the behaviour is unchanged").

Two apps over one service and database: ``fast`` (the default, ``service.http.fast``) and
``flask`` (``IDV_FAST_PROOFS=0``). Each case runs once on each app on its own fresh
verification and compares the status, the JSON body (an assertion's presence, not its
signature) and the headers a caller may rely on. The fast app counts what it handed to Flask,
so a fast path that took nothing (and so compared Flask with itself) fails too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re

import pytest

from service.app import create_app
from service.http.fast import FastRoutes
from service.usecases.clients import create_client


@pytest.fixture
def apps(ctx):  # type: ignore[no-untyped-def]
    """(fast, flask) test clients over ``ctx``, and the list of requests fast handed on (to
    Flask's routing, or to Flask's error handlers)."""
    fast = create_app(context=ctx)
    assert isinstance(fast.wsgi_app, FastRoutes)
    handed: list[str] = []
    flask_wsgi = fast.wsgi_app.flask_wsgi

    def counting(environ, start_response):  # type: ignore[no-untyped-def]
        if environ["PATH_INFO"].startswith("/v1/verifications"):
            handed.append(environ["PATH_INFO"])
        return flask_wsgi(environ, start_response)

    fast.wsgi_app.flask_wsgi = counting
    flask_error = fast.wsgi_app._flask_error

    def error_by_flask(environ, *rest):  # type: ignore[no-untyped-def]
        handed.append(f"error: {environ['PATH_INFO']}")
        return flask_error(environ, *rest)

    fast.wsgi_app._flask_error = error_by_flask
    on = ctx.settings
    ctx.settings = dataclasses.replace(on, fast_proofs=False)
    try:
        slow = create_app(context=ctx)
    finally:
        ctx.settings = on
    assert not isinstance(slow.wsgi_app, FastRoutes)
    for app in (fast, slow):
        app.config["TESTING"] = True
    return fast.test_client(), slow.test_client(), handed


def _answer(response, vid: str) -> tuple:  # type: ignore[no-untyped-def]
    """The status line, the body's bytes (the id and the assertion's signature masked) and the
    headers in their order, all but the body's length (the masked parts vary in length)."""
    text = response.get_data(as_text=True).replace(vid, "<vid>")
    text = re.sub(r'"assertion":"[^"]+"', '"assertion":"<signed>"', text)
    headers = [(k, v) for k, v in response.headers.items() if k != "Content-Length"]
    assert response.headers["Content-Length"] == str(len(response.data))
    return response.status, text, headers


def _both(user, apps, send):  # type: ignore[no-untyped-def]
    """Run ``send(client, vid)`` on each app with a fresh login verification; both answers."""
    answers = []
    for client in apps[:2]:
        user.advance(30)  # a fresh TOTP step for each: a code is used once
        vid = user.start("login").json["verification_id"]
        answers.append(_answer(send(client, vid), vid))
    return answers


def _post(client, vid, auth, *, data=None, json_body=None, content_type="application/json"):  # type: ignore[no-untyped-def]
    if json_body is not None:
        data = json.dumps(json_body)
    return client.post(
        f"/v1/verifications/{vid}/proofs", data=data, headers=auth, content_type=content_type
    )


def test_every_answer_is_the_flask_routes(user, apps, auth, ctx):  # type: ignore[no-untyped-def]
    user.add_totp()
    fast, slow, handed = apps
    reader = {"Authorization": f"Bearer {create_client(ctx, 'reader', ['carrier'])[1]}"}
    cases = {
        "accepted": lambda c, v: _post(
            c, v, auth, json_body={"factor": "totp", "code": user.totp_code()}
        ),
        "wrong code": lambda c, v: _post(
            c, v, auth, json_body={"factor": "totp", "code": "000000"}
        ),
        "no key": lambda c, v: _post(c, v, {}, json_body={"factor": "totp", "code": "1"}),
        "bad key": lambda c, v: _post(
            c, v, {"Authorization": "Bearer idv_nope"}, json_body={"factor": "totp", "code": "1"}
        ),
        "other scope": lambda c, v: _post(c, v, reader, json_body={"factor": "totp", "code": "1"}),
        "unknown id": lambda c, v: _post(
            c, "v_nope", auth, json_body={"factor": "totp", "code": "1"}
        ),
        "not JSON": lambda c, v: _post(c, v, auth, data=b"{nope"),
        "an array": lambda c, v: _post(c, v, auth, data=b"[]"),
        "repeated name": lambda c, v: _post(
            c, v, auth, data=b'{"factor": "totp", "factor": "knowledge", "code": "1"}'
        ),
        "NaN": lambda c, v: _post(c, v, auth, data=b'{"factor": "totp", "code": NaN}'),
        "a NUL": lambda c, v: _post(c, v, auth, data=b'{"factor": "totp", "code": "\\u0000"}'),
        "empty body": lambda c, v: _post(c, v, auth, data=b""),
        "no code": lambda c, v: _post(c, v, auth, json_body={"factor": "totp"}),
        "unknown factor": lambda c, v: _post(c, v, auth, json_body={"factor": "iris", "code": "1"}),
        "extra member": lambda c, v: _post(
            c, v, auth, json_body={"factor": "totp", "code": "1", "x": 1}
        ),
        "factor not allowed": lambda c, v: _post(
            c, v, auth, json_body={"factor": "knowledge", "secret": "739184"}
        ),
        "charset": lambda c, v: _post(
            c,
            v,
            auth,
            json_body={"factor": "totp", "code": user.totp_code()},
            content_type="application/json; charset=utf-8",
        ),
    }
    handed_on = []
    for name, send in cases.items():
        before = len(handed)
        with_fast, with_flask = _both(user, apps, send)
        assert with_fast == with_flask, name
        if len(handed) > before:
            handed_on.append(name)
    # The test client sends no Content-Length for b""; an unknown verification id is the
    # route's own 404 (an IdvError): the fast path answers it, like every refusal above.
    assert handed_on == ["empty body"]
    accepted = _both(user, apps, cases["accepted"])[0]
    assert accepted[0] == "200 OK" and json.loads(accepted[1])["status"] == "satisfied"
    assert ("Cache-Control", "no-store") in accepted[2]
    assert ("X-Content-Type-Options", "nosniff") in accepted[2]


def test_a_pin_floods_refusals_are_the_flask_routes(user, apps, auth, ctx):  # type: ignore[no-untyped-def]
    """What a flood of wrong PINs mostly gets, answered by the fast path itself: 429 from a
    full argon2 gate (with Retry-After) and 409 from a verification its failures locked."""
    user.add_totp()
    fast, slow, handed = apps
    wrong = {"factor": "totp", "code": "000000"}

    def gate_full(client, vid):  # type: ignore[no-untyped-def]
        gate = ctx.argon2_slots
        with contextlib.ExitStack() as held:
            for _ in range(gate.ADMITTED_PER_SLOT * ctx.settings.argon2_concurrency):
                held.enter_context(gate.admission())
            return _post(client, vid, auth, json_body={"factor": "knowledge", "secret": "1"})

    def locked(client, vid):  # type: ignore[no-untyped-def]
        for _ in range(ctx.policy.action("login").failure_limit):
            assert _post(client, vid, auth, json_body=wrong).status_code == 200
        return _post(client, vid, auth, json_body=wrong)

    answers = {
        name: _both(user, apps, send) for name, send in [("gate", gate_full), ("locked", locked)]
    }
    for name, (with_fast, with_flask) in answers.items():
        assert with_fast == with_flask, name
    assert answers["gate"][0][0] == "429 TOO MANY REQUESTS"
    assert ("Retry-After", "1") in answers["gate"][0][2]
    assert answers["locked"][0][0].startswith("409")
    assert handed == []  # the fast path answered them, not Flask
    metrics = fast.get("/metrics").get_data(as_text=True)
    assert 'route="/v1/verifications/<verification_id>/proofs",status="429"} 1.0' in metrics


def test_what_it_leaves_to_flask_gets_flasks_answer(user, apps, auth):  # type: ignore[no-untyped-def]
    user.add_totp()
    fast, slow, handed = apps
    cases = {
        "text/plain": lambda c, v: _post(c, v, auth, data=b"{}", content_type="text/plain"),
        "a path id with a dot": lambda c, v: _post(
            c, "v.1", auth, json_body={"factor": "totp", "code": "1"}
        ),
        "over 1 MiB": lambda c, v: _post(c, v, auth, data=b" " * (1024 * 1024 + 1)),
        "GET": lambda c, v: c.get(f"/v1/verifications/{v}/proofs", headers=auth),
    }
    for name, send in cases.items():
        with_fast, with_flask = _both(user, apps, send)
        assert with_fast == with_flask, name
    assert len(handed) == len(cases)


def test_a_fast_proof_is_counted_and_limited_like_any(user, apps, auth, ctx):  # type: ignore[no-untyped-def]
    user.add_totp()
    fast, _, handed = apps
    vid = user.start("login").json["verification_id"]
    r = _post(fast, vid, auth, json_body={"factor": "totp", "code": user.totp_code()})
    assert r.status_code == 200 and handed == []
    metrics = fast.get("/metrics").get_data(as_text=True)
    line = (
        'idv_http_requests_total{method="POST",route="/v1/verifications/<verification_id>/proofs"'
        ',status="200"} 1.0'
    )
    assert line in metrics
    # The client limit counts fast proofs: 429 once it is spent, as on the Flask route.
    ctx.limits.hit = _spent(ctx.limits.hit)
    again = _post(fast, vid, auth, json_body={"factor": "totp", "code": "000000"})
    assert again.status_code == 429 and again.json["error"] == "rate_limited"
    assert again.headers.get("Retry-After")


def _spent(hit):  # type: ignore[no-untyped-def]
    from service.domain.errors import RateLimited

    def refuse(name, *key, **kwargs):  # type: ignore[no-untyped-def]
        if name == "client":
            raise RateLimited("client limit", retry_after=60)
        return hit(name, *key, **kwargs)

    return refuse


def _create(client, auth, *, data=None, json_body=None, content_type="application/json"):  # type: ignore[no-untyped-def]
    if json_body is not None:
        data = json.dumps(json_body)
    return client.post("/v1/verifications", data=data, headers=auth, content_type=content_type)


def _created(response) -> tuple:  # type: ignore[no-untyped-def]
    """``_answer`` for a create: its new verification's id masked."""
    vid = (response.json or {}).get("verification_id", "<none>")
    return _answer(response, vid)


def test_every_create_answer_is_the_flask_routes(user, apps, auth, other_auth, ctx):  # type: ignore[no-untyped-def]
    user.add_totp()
    fast, slow, handed = apps
    reader = {"Authorization": f"Bearer {create_client(ctx, 'reader', ['carrier'])[1]}"}
    login = {"subject_id": "alice", "action": "login"}
    cases = {
        "created": lambda c: _create(c, auth, json_body=login),
        "with context": lambda c: _create(
            c, auth, json_body={**login, "context": {"ip": "198.51.100.7", "channel": "app"}}
        ),
        "another action": lambda c: _create(
            c, auth, json_body={"subject_id": "alice", "action": "delete_account"}
        ),
        "no key": lambda c: _create(c, {}, json_body=login),
        "bad key": lambda c: _create(c, {"Authorization": "Bearer idv_nope"}, json_body=login),
        "other scope": lambda c: _create(c, reader, json_body=login),
        "another tenant's subject": lambda c: _create(c, other_auth, json_body=login),
        "unknown subject": lambda c: _create(
            c, auth, json_body={"subject_id": "nobody", "action": "login"}
        ),
        "bad subject id": lambda c: _create(
            c, auth, json_body={"subject_id": "a b", "action": "login"}
        ),
        "unknown action": lambda c: _create(
            c, auth, json_body={"subject_id": "alice", "action": "fly"}
        ),
        "not JSON": lambda c: _create(c, auth, data=b"{nope"),
        "an array": lambda c: _create(c, auth, data=b"[]"),
        "repeated name": lambda c: _create(
            c, auth, data=b'{"subject_id": "alice", "subject_id": "bob", "action": "login"}'
        ),
        "a NUL": lambda c: _create(c, auth, data=b'{"subject_id": "\\u0000", "action": "login"}'),
        "extra member": lambda c: _create(c, auth, json_body={**login, "x": 1}),
        "no action": lambda c: _create(c, auth, json_body={"subject_id": "alice"}),
        "empty body": lambda c: _create(c, auth, data=b""),
        "charset": lambda c: _create(
            c, auth, json_body=login, content_type="application/json; charset=utf-8"
        ),
    }
    handed_on = []
    for name, send in cases.items():
        before = len(handed)
        answers = [_created(send(client)) for client in (fast, slow)]
        assert answers[0] == answers[1], name
        if len(handed) > before:
            handed_on.append(name)
    assert handed_on == ["empty body"]  # the test client sends no Content-Length for b""
    created = _created(_create(fast, auth, json_body=login))
    assert created[0] == "201 CREATED" and json.loads(created[1])["status"] == "pending"
    assert ("Cache-Control", "no-store") in created[2]
    statuses = {name: _created(send(fast))[0][:3] for name, send in cases.items()}
    assert statuses["another action"] == "201" and statuses["unknown subject"] == "404"
    assert statuses["no key"] == "401" and statuses["other scope"] == "403"
    assert statuses["unknown action"] == "400" and statuses["not JSON"] == "400"
    metrics = fast.get("/metrics").get_data(as_text=True)
    assert 'route="/v1/verifications",status="201"}' in metrics


def test_a_create_with_an_idempotency_key_is_left_to_flask(user, apps, auth):  # type: ignore[no-untyped-def]
    fast, _, handed = apps
    headers = {**auth, "Idempotency-Key": "login-1"}
    login = {"subject_id": "alice", "action": "login"}
    first = _create(fast, headers, json_body=login)
    again = _create(fast, headers, json_body=login)
    assert first.status_code == 201 and again.json == first.json  # the replay hook answered
    assert handed == ["/v1/verifications", "/v1/verifications"]
