"""``Idempotency-Key`` on any POST (API.md "Conveniences for callers", issue 21): a caller may
retry a timed-out POST safely."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import func, select

from service.storage.tables import idempotency_keys
from service.usecases import factors as factor_usecases

TOTP = {"type": "totp"}


def keyed(auth: dict, key: str) -> dict:
    return {**auth, "Idempotency-Key": key}


def rows(ctx) -> list:
    with ctx.engine.connect() as conn:
        return list(conn.execute(select(idempotency_keys)))


def enroll(http, headers, body=TOTP, subject="alice"):
    return http.post(f"/v1/subjects/{subject}/factors", json=body, headers=headers)


def test_a_repeat_gets_the_first_answer_and_does_nothing_else(user, http, auth, ctx):
    first = enroll(http, keyed(auth, "enrol-1"))
    again = enroll(http, keyed(auth, "enrol-1"))
    assert first.status_code == again.status_code == 201
    assert again.get_data() == first.get_data()  # the same secret, factor id and QR code
    assert again.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first.headers
    # One TOTP set-up, not two: the repeat enrolled nothing (a new set-up would void the first).
    listed = [f for f in user.factors().json["factors"] if f["type"] == "totp"]
    assert [f["factor_id"] for f in listed] == [first.json["factor_id"]]


def test_a_repeated_challenge_sends_one_sms(user, auth):
    vid = user.start("login").json["verification_id"]
    url = f"/v1/verifications/{vid}/challenges"
    answers = [user.http.post(url, json={"factor": "sms"}, headers=keyed(auth, "ch")) for _ in "12"]
    assert [a.status_code for a in answers] == [200, 200] and answers[0].json == answers[1].json
    assert len(user.sms_messages()) == 1


def test_a_repeated_failed_proof_counts_once(user, auth):
    vid = user.start("login").json["verification_id"]
    user.challenge(vid, "sms")
    url = f"/v1/verifications/{vid}/proofs"
    wrong = {"factor": "sms", "code": "000000"}
    for _ in range(3):
        r = user.http.post(url, json=wrong, headers=keyed(auth, "p-1"))
        assert r.json["accepted"] is False and r.json["attempts_left"] == 4
    assert user.prove(vid, wrong).json["attempts_left"] == 3


def test_same_key_with_another_body_or_route_is_422(user, http, auth):
    assert enroll(http, keyed(auth, "k")).status_code == 201
    other_body = enroll(http, keyed(auth, "k"), {"type": "totp", "label": "phone"})
    assert other_body.status_code == 422 and other_body.json["error"] == "idempotency_conflict"
    vid = user.start("login").json["verification_id"]
    other_route = http.post(
        f"/v1/verifications/{vid}/challenges", json={"factor": "sms"}, headers=keyed(auth, "k")
    )
    assert other_route.status_code == 422
    assert other_route.json["error"] == "idempotency_conflict"
    assert "k" not in other_route.json["message"].split()  # the key is never echoed


@pytest.mark.parametrize("key", ["", " ", "a b", "x" * 256, "中文", "tab\there", "é"])
def test_a_malformed_key_is_400_and_runs_nothing(user, http, auth, ctx, key):
    r = enroll(http, keyed(auth, key))
    assert r.status_code == 400 and r.json["error"] == "invalid_request"
    assert not [f for f in user.factors().json["factors"] if f["type"] == "totp"]
    assert rows(ctx) == []


def test_longest_key_and_every_visible_character_work(user, http, auth):
    for key in ("x" * 255, "".join(chr(c) for c in range(0x21, 0x7F))):
        assert enroll(http, keyed(auth, key)).status_code == 201


def test_keys_belong_to_their_client(user, http, auth, other_auth):
    assert http.put("/v1/subjects/alice", json={"phone": "+8613800138000"}, headers=other_auth)
    mine = enroll(http, keyed(auth, "shared"))
    theirs = enroll(http, keyed(other_auth, "shared"))
    assert mine.status_code == theirs.status_code == 201
    assert mine.json["factor_id"] != theirs.json["factor_id"]


def test_a_bad_api_key_is_401_before_any_claim(user, http, ctx):
    r = enroll(http, {"Authorization": "Bearer idv_nope", "Idempotency-Key": "k"})
    assert r.status_code == 401 and rows(ctx) == []


def test_4xx_answers_are_kept_but_409_429_and_5xx_are_not(user, http, auth, monkeypatch):
    weak = {"type": "knowledge", "secret": "123456"}
    first = enroll(http, keyed(auth, "weak"), weak)
    assert first.status_code == 422 and first.json["error"] == "weak_secret"
    assert enroll(http, keyed(auth, "weak"), weak).get_data() == first.get_data()

    from service.domain.errors import Conflict, RateLimited

    real = factor_usecases.enroll
    for failure in (Conflict("lost a race"), RateLimited("slow down"), RuntimeError("bug")):
        calls = []

        def flaky(*args, failure=failure, calls=calls):  # type: ignore[no-untyped-def]
            calls.append(1)
            if len(calls) == 1:
                raise failure
            return real(*args)

        monkeypatch.setattr(factor_usecases, "enroll", flaky)
        key = f"retry-{type(failure).__name__}"
        assert enroll(http, keyed(auth, key)).status_code in (409, 429, 500)
        retried = enroll(http, keyed(auth, key))
        assert retried.status_code == 201 and len(calls) == 2, failure
        assert "Idempotent-Replayed" not in retried.headers


def test_stored_answers_are_encrypted_and_keys_hashed(user, http, auth, ctx):
    first = enroll(http, keyed(auth, "enrol-secret-key"))
    (row,) = rows(ctx)
    stored = " ".join(str(v) for v in row)
    assert first.json["secret"] not in stored and "enrol-secret-key" not in stored
    assert row.status == "done" and row.subject_pk is not None


def test_erased_with_its_subject(user, http, auth, ctx):
    assert enroll(http, keyed(auth, "before-erasure")).status_code == 201
    vid = user.start("login").json["verification_id"]
    challenge = http.post(
        f"/v1/verifications/{vid}/challenges", json={"factor": "sms"}, headers=keyed(auth, "c")
    )
    assert challenge.status_code == 200
    started = http.post(
        "/v1/verifications",
        json={"subject_id": "alice", "action": "login"},
        headers=keyed(auth, "v"),
    )
    assert started.status_code == 201
    assert len(rows(ctx)) == 3 and all(r.subject_pk is not None for r in rows(ctx))
    assert http.delete("/v1/subjects/alice", headers=auth).status_code == 204
    assert rows(ctx) == []  # PIPL art. 47: nothing about the subject stays
    # Re-created, the same key is a new request, not the erased subject's answer.
    assert user.put().status_code == 201
    assert enroll(http, keyed(auth, "before-erasure")).status_code == 201
    assert "Idempotent-Replayed" not in enroll(http, keyed(auth, "fresh")).headers


def test_a_key_expires_after_24_hours(user, http, auth):
    first = enroll(http, keyed(auth, "daily"))
    user.advance(24 * 3600 - 60)
    assert enroll(http, keyed(auth, "daily")).get_data() == first.get_data()
    user.advance(61)
    later = enroll(http, keyed(auth, "daily"))
    assert later.status_code == 201 and later.json["factor_id"] != first.json["factor_id"]


def test_a_post_without_the_header_costs_no_statement(user, http, auth, ctx):
    from sqlalchemy import event

    seen: list[str] = []

    def record(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", record)
    try:
        vid = user.start("login").json["verification_id"]
        user.challenge(vid, "sms")
        assert user.prove(vid, {"factor": "sms", "code": user.last_sms_code()}).status_code == 200
    finally:
        event.remove(ctx.engine, "before_cursor_execute", record)
    assert seen and not [s for s in seen if "idempotency_keys" in s]
    assert rows(ctx) == []


class Gate:
    """Holds the first enrolment inside the use case until released."""

    def __init__(self, monkeypatch, first_only: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.entered, self.release, self.calls = threading.Event(), threading.Event(), 0
        real = factor_usecases.enroll

        def held(*args):  # type: ignore[no-untyped-def]
            self.calls += 1
            self.entered.set()
            if not first_only or self.calls == 1:
                assert self.release.wait(30)
            return real(*args)

        monkeypatch.setattr(factor_usecases, "enroll", held)


def test_racing_requests_with_one_key_one_runs_the_others_get_409(app, user, auth, monkeypatch):
    gate = Gate(monkeypatch)
    start = threading.Barrier(8)

    def post():  # type: ignore[no-untyped-def]
        start.wait(10)
        return enroll(app.test_client(), keyed(auth, "race"))

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(post) for _ in range(8)]
        assert gate.entered.wait(30)
        # Everyone but the claim's holder answers while it is still running.
        for _ in range(300):
            if sum(f.done() for f in futures) >= 7:
                break
            time.sleep(0.1)
        conflicts = [f.result() for f in futures if f.done()]
        gate.release.set()
        answers = [f.result(timeout=30) for f in futures]
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * 7, statuses
    assert len(conflicts) == 7 and all(c.json["error"] == "conflict" for c in conflicts)
    assert gate.calls == 1
    # Once it has answered, a repeat gets that answer.
    winner = next(a for a in answers if a.status_code == 201)
    assert enroll(app.test_client(), keyed(auth, "race")).get_data() == winner.get_data()


def test_a_claim_whose_request_died_is_taken_over(app, user, auth, ctx, monkeypatch):
    gate = Gate(monkeypatch, first_only=True)
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(enroll, app.test_client(), keyed(auth, "stuck"))
        assert gate.entered.wait(30)
        assert enroll(app.test_client(), keyed(auth, "stuck")).status_code == 409
        user.advance(61)  # no request runs this long: the first one is presumed dead
        taken = enroll(app.test_client(), keyed(auth, "stuck"))  # runs while the first hangs
        gate.release.set()
        late = stuck.result(timeout=30)
    assert taken.status_code == late.status_code == 201 and gate.calls == 2
    # The answer kept is the one of the request that held the claim last.
    assert enroll(app.test_client(), keyed(auth, "stuck")).get_data() == taken.get_data()
    with ctx.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(idempotency_keys)).scalar() == 1


def test_kept_answers_are_re_encrypted_by_key_rotation(user, http, auth, ctx):
    from service.usecases.keys import reencrypt

    first = enroll(http, keyed(auth, "rotated"))
    kid = ctx.keys.add_data_key()  # `idv keys rotate`: a new active data key, old ones kept
    assert reencrypt(ctx, ctx.keys) >= 1
    (row,) = rows(ctx)
    assert row.response_ct.startswith(f"v1:{kid}:")
    assert enroll(http, keyed(auth, "rotated")).get_data() == first.get_data()
