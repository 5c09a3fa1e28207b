"""Concurrency: single-use guards and failure counting under parallel requests.

Run on SQLite (default: BEGIN IMMEDIATE + busy_timeout serialise writers) and on PostgreSQL
(``IDV_TEST_DATABASE_URL``: row locks and unique constraints). Each worker has its own Flask
test client, as separate instances of a caller's backend would; a barrier releases them
together. What is asserted is what callers see: status codes and bodies.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pyotp
from sqlalchemy import select

from service.storage.tables import verifications

WORKERS = 50


def run_together(app, requests):
    """Send ``requests`` (callables taking a test client) at once; return their responses."""
    barrier = threading.Barrier(len(requests))

    def work(send):
        client = app.test_client()
        barrier.wait(timeout=30)
        return send(client)

    with ThreadPoolExecutor(max_workers=len(requests)) as pool:
        return [f.result(timeout=120) for f in [pool.submit(work, r) for r in requests]]


def outcome(r) -> str:
    """A response summed up for counting: the error code, or status/accepted of a proof."""
    body = r.get_json(silent=True) or {}
    if r.status_code >= 400:
        return f"{r.status_code} {body.get('error')}"
    if "accepted" in body:
        return f"{body['status']} accepted={body['accepted']}"
    return str(r.status_code)


def test_one_totp_code_on_50_verifications_is_accepted_once(app, user, auth):
    # RFC 6238 §5.2, ASVS 6.5.1: a TOTP code is accepted once, ever, whatever the concurrency.
    user.add_totp()
    vids = [user.start("login").json["verification_id"] for _ in range(WORKERS)]
    code = user.totp_code()

    def prove(vid):
        return lambda c: c.post(
            f"/v1/verifications/{vid}/proofs",
            json={"factor": "totp", "code": code},
            headers=auth,
        )

    responses = run_together(app, [prove(v) for v in vids])
    counts = Counter(outcome(r) for r in responses)
    assert counts["satisfied accepted=True"] == 1, counts
    assert all(r.status_code < 500 for r in responses), counts
    # The rest were refused as wrong codes (or throttled once enough failures piled up).
    assert set(counts) <= {
        "satisfied accepted=True",
        "pending accepted=False",
        "429 rate_limited",
    }, counts
    winners = [r for r in responses if r.get_json().get("assertion")]
    assert len(winners) == 1


def test_one_enroll_assertion_used_by_50_enrolments_counts_once(app, user, auth):
    # API.md: an assertion is accepted once where idv consumes it.
    user.add_totp()
    token = user.step_up("enroll_factor", ["totp"])
    bodies = [
        {"type": "device", "public_key": _pem(), "alg": "ES256", "label": f"d{i}"}
        for i in range(WORKERS)
    ]

    def enrol(body):
        return lambda c: c.post(
            "/v1/subjects/alice/factors", json={**body, "assertion": token}, headers=auth
        )

    responses = run_together(app, [enrol(b) for b in bodies])
    counts = Counter(outcome(r) for r in responses)
    assert counts == {"201": 1, "403 step_up_required": WORKERS - 1}, counts
    devices = [f for f in user.factors().json["factors"] if f["type"] == "device"]
    assert len(devices) == 1


def test_one_enroll_assertion_used_by_50_removals_counts_once(app, user, auth, http):
    # ASVS 6.4.4: each factor change needs its own step-up; one assertion removes one factor.
    # An active TOTP, then 50 device keys written straight to storage (through the API each
    # would need a step-up of its own): every removal below needs the step-up, whoever wins.
    from service.factors.device import normalize_pem
    from service.storage import factors as factor_store
    from service.storage import subjects as subject_store
    from tests.http.flow import Device

    user.add_totp()
    ctx = app.extensions["idv"]
    client_id = http.get("/v1/client", headers=auth).json["client_id"]
    pem = normalize_pem(Device.new().public_pem(), "ES256")
    targets = [f"fa_race{i:02d}" for i in range(WORKERS)]
    with ctx.engine.begin() as conn:
        subject = subject_store.get(conn, client_id, "alice")
        for fid in targets:
            factor_store.insert(
                conn,
                factor_id=fid,
                subject_pk=subject.pk,
                type="device",
                status="active",
                secret_ct=ctx.keys.encrypt(pem, f"factor:{fid}"),
                alg="ES256",
                label=None,
                now=ctx.clock(),
            )
    token = user.step_up("enroll_factor", ["totp"])

    def remove(fid):
        return lambda c: c.delete(
            f"/v1/subjects/alice/factors/{fid}", json={"assertion": token}, headers=auth
        )

    responses = run_together(app, [remove(f) for f in targets])
    counts = Counter(outcome(r) for r in responses)
    assert counts == {"204": 1, "403 step_up_required": WORKERS - 1}, counts
    assert len(user.factors().json["factors"]) == WORKERS  # 49 devices + the TOTP


def test_one_change_phone_assertion_used_by_50_puts_counts_once(app, user, auth, http):
    # ASVS 7.5.1, API.md: one change_phone step-up moves the phone once.
    user.add_totp()
    user.add_pin(assertion=user.step_up("enroll_factor", ["totp"]))
    token = user.step_up("change_phone", ["totp", "knowledge"])
    phones = [f"+86139001390{i:02d}" for i in range(WORKERS)]

    def put(phone):
        return lambda c: c.put(
            "/v1/subjects/alice", json={"phone": phone, "assertion": token}, headers=auth
        )

    responses = run_together(app, [put(p) for p in phones])
    counts = Counter(outcome(r) for r in responses)
    assert counts == {"200": 1, "403 step_up_required": WORKERS - 1}, counts
    winner = next(p for p, r in zip(phones, responses, strict=True) if r.status_code == 200)
    vid = user.start("login").json["verification_id"]
    user.challenge(vid, "sms")
    assert user.sms_messages()[-1]["to"] == winner


def test_20_wrong_proofs_lock_at_the_limit_exactly_once(app, ctx, user, auth, http):
    # API.md: the failed proof that reaches the limit (5th) locks; a locked verification
    # answers 409 not_pending. Racing failures each count once (policy failure_limit = 5).
    user.add_totp()
    vid = user.start("login").json["verification_id"]
    totp = pyotp.TOTP(user.totp_secret)
    # RFC 6238 §5.2: one step of drift each way is accepted; pick a code none of them has.
    valid = {totp.at(time.time() + drift) for drift in (-60, -30, 0, 30, 60)}
    wrong = next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)

    def prove(c):
        return c.post(
            f"/v1/verifications/{vid}/proofs",
            json={"factor": "totp", "code": wrong},
            headers=auth,
        )

    responses = run_together(app, [prove] * 20)
    counts = Counter(outcome(r) for r in responses)
    assert counts == {
        "pending accepted=False": 4,
        "locked accepted=False": 1,
        "409 not_pending": 15,
    }, counts
    assert http.get(f"/v1/verifications/{vid}", headers=auth).json["status"] == "locked"
    # No proof after locking is accepted, not even the right code.
    r = user.prove(vid, {"factor": "totp", "code": user.totp_code()})
    assert r.status_code == 409 and r.json["error"] == "not_pending"
    with ctx.engine.connect() as conn:
        failures = conn.execute(
            select(verifications.c.failures).where(verifications.c.id == vid)
        ).scalar_one()
    assert failures == 5


def _pem() -> str:
    from tests.http.flow import Device

    return Device.new().public_pem()


def test_concurrent_creates_of_one_subject_give_one_201_and_no_error(app, auth):
    """Racing PUTs of a new subject: exactly one 201, the others 200, never a 500."""
    from concurrent.futures import ThreadPoolExecutor

    def put(_: int) -> int:
        r = app.test_client().put(
            "/v1/subjects/racer", json={"phone": "+8613800138000"}, headers=auth
        )
        return r.status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        codes = list(pool.map(put, range(20)))
    assert sorted(codes) == [200] * 19 + [201], codes


def test_racing_pin_enrolments_leave_one_knowledge_factor(app, auth):
    """A subject never ends up with two chosen secrets, whatever the interleaving."""
    from concurrent.futures import ThreadPoolExecutor

    client = app.test_client()
    assert (
        client.put("/v1/subjects/pin", json={"phone": "+8613800138000"}, headers=auth).status_code
        == 201
    )

    def enrol(i: int) -> int:
        r = app.test_client().post(
            "/v1/subjects/pin/factors",
            json={"type": "knowledge", "secret": f"73918{i}x"},
            headers=auth,
        )
        return r.status_code

    with ThreadPoolExecutor(max_workers=10) as pool:
        codes = list(pool.map(enrol, range(10)))
    # 429: on a loaded host argon2's gate turns away hashing it cannot start in time (a busy
    # answer that writes nothing); what must never happen is a 500 or a second PIN.
    assert codes.count(201) >= 1 and set(codes) <= {201, 403, 409, 429}, codes
    factors = client.get("/v1/subjects/pin/factors", headers=auth).json["factors"]
    assert [f["type"] for f in factors] == ["knowledge"]


def test_erasing_a_subject_while_it_is_in_use_is_never_a_5xx_nor_a_deadlock(
    app, user, auth, caplog
):
    """DELETE of a subject racing its own proofs, challenges, creations, enrolments and a phone
    change. On PostgreSQL the cascade locked rows in the opposite order to a proof (subject,
    factors, verifications against verification, factor), and the loser of the deadlock was a
    503 "database unavailable" after PostgreSQL's one-second deadlock timeout; now the erasure
    takes the proofs' order (``storage.subjects.remove``). Several rounds: a race is a draw."""
    from tests.http.flow import PHONE, PIN, Device

    for round_ in range(3):
        user.subject_id = sid = f"erased-{round_}"  # a new subject each round
        # ... and a new phone: one erased by this tenant lately gets no onboarding (issue 19)
        phone = f"{PHONE[:-2]}{round_:02d}"
        assert user.put(phone).status_code == 201
        user.add_all_factors()
        vids = [user.start("login").json["verification_id"] for _ in range(8)]
        code = user.totp_code()

        def send(path, body=None, method="post"):
            return lambda c: getattr(c, method)(path, json=body, headers=auth)

        proofs = [
            send(f"/v1/verifications/{v}/proofs", {"factor": "totp", "code": code})
            for v in vids[:4]
        ]
        pins = [
            send(f"/v1/verifications/{v}/proofs", {"factor": "knowledge", "secret": PIN})
            for v in vids[4:6]
        ]
        sms = [send(f"/v1/verifications/{v}/challenges", {"factor": "sms"}) for v in vids[6:]]
        others = [
            send("/v1/verifications", {"subject_id": sid, "action": "login"}),
            send(
                f"/v1/subjects/{sid}/factors", {"type": "knowledge", "secret": "Another-Pin-6170"}
            ),
            send(
                f"/v1/subjects/{sid}/factors",
                {"type": "device", "public_key": Device.new().public_pem(), "alg": "ES256"},
            ),
            send(f"/v1/subjects/{sid}", {"phone": phone}, "put"),
        ]
        # Erasing a subject with a strong factor needs a delete_account step-up (issue 19).
        token = user.step_up("delete_account", ["totp", "knowledge"])
        erase = [send(f"/v1/subjects/{sid}", {"assertion": token}, "delete")] * 2
        responses = run_together(app, proofs + pins + sms + others + erase)
        counts = Counter(outcome(r) for r in responses)
        assert all(r.status_code < 500 for r in responses), counts
        assert counts["204"] >= 1, counts  # the subject was erased, whoever else won
    # A deadlock's victim is a 409 now (``http.errors``), and still one too many.
    assert not [r for r in caplog.records if "DeadlockDetected" in r.getMessage()]


def _wrong_totp(secret: str) -> str:
    totp = pyotp.TOTP(secret)
    valid = {totp.at(time.time() + drift) for drift in (-60, -30, 0, 30, 60)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


def _guess_race(app, auth, vids, body):
    def prove(vid):
        return lambda c: c.post(f"/v1/verifications/{vid}/proofs", json=body, headers=auth)

    return Counter(outcome(r) for r in run_together(app, [prove(v) for v in vids]))


def test_50_wrong_totp_codes_at_once_get_exactly_the_limit_through(app, user, auth):
    """RFC 4226 §7.3: 10 failed proofs per subject and factor per 15 minutes, however many
    arrive at once. Checking before and counting after the commit let 15-18 through; the
    attempt is now counted first, atomically (memory lock, Redis script)."""
    user.add_totp()
    vids = [user.start("login").json["verification_id"] for _ in range(WORKERS)]
    counts = _guess_race(app, auth, vids, {"factor": "totp", "code": _wrong_totp(user.totp_secret)})
    assert counts == {"pending accepted=False": 10, "429 rate_limited": WORKERS - 10}, counts


def test_50_wrong_pins_at_once_get_exactly_the_limit_through(settings, clock):
    """The same for PINs, with an argon2 gate wide enough to let all 50 reach the limiter
    (13 slots × 4 places: the gate's own 429s would hide an overshoot)."""
    from dataclasses import replace

    from service.app import create_app
    from service.context import ServiceContext
    from service.storage.db import dispose
    from service.usecases.clients import create_client
    from tests.http.flow import User

    ctx = ServiceContext.build(replace(settings, argon2_concurrency=13))
    try:
        wide = create_app(context=ctx)
        auth = {"Authorization": f"Bearer {create_client(ctx, 't', ['verify'])[1]}"}
        user = User(wide.test_client(), auth, clock=clock)
        assert user.put().status_code == 201
        user.add_pin()
        vids = [user.start("view_personal_data").json["verification_id"] for _ in range(WORKERS)]
        counts = _guess_race(wide, auth, vids, {"factor": "knowledge", "secret": "Wrong-4821"})
        assert counts == {"pending accepted=False": 10, "429 rate_limited": WORKERS - 10}, counts
        # The right PIN is refused too now: the failures used up the window.
        r = user.prove(vids[0], {"factor": "knowledge", "secret": "739184"})
        assert r.status_code == 429
    finally:
        dispose(ctx.engine)
