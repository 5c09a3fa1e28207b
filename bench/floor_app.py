"""The floor: the least a TOTP proof can cost in this stack, for judging idv's TOTP figure.

A bare Flask app under the same gunicorn settings as the ceiling (``bare_app.py``) with one
route, ``POST /v1/verifications/<id>/proofs``, that does only what no TOTP proof can skip, in
the fewest layers the stack allows: no SQLAlchemy (the ``sqlite3`` driver, one writer
connection behind a lock and one autocommit reader per thread), no pydantic, no policy, no rate
limits, no metrics, no audit MAC. What it keeps, each once:

- the bearer API key: SHA-256, one ``SELECT`` (never cached: a revoked key fails at once);
- the JSON body, parsed and checked (``factor``, ``code``);
- ``BEGIN IMMEDIATE``; the pending verification and its TOTP factor in one ``SELECT``;
- the secret decrypted with AES-GCM, the code checked by pyotp over RFC 6238's +-1 step;
- the (factor, step) single use (``INSERT ... ON CONFLICT DO NOTHING RETURNING``), the
  verification's new state (``UPDATE``), one hash-chained audit row (``INSERT``); ``COMMIT``;
- an ES256 assertion signed with PyJWT, and the JSON answer.

So it is an upper bound for idv's TOTP proof on this stack, never a design to copy: idv also
evaluates the policy and the carrier signals, rate-limits, keeps an audit head with a MAC,
counts metrics and explains every refusal. ``bench/run.py --only floor`` (and every full run)
drives it like idv's TOTP scenario and prints it as a ratio to the ceiling.

    python bench/floor_app.py --port 8082 --rows 5000 --db /tmp/floor.sqlite3
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import jwt
import pyotp
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from flask import Flask, abort, jsonify, request

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bare_app import Server  # noqa: E402  (the ceiling's gunicorn settings)

API_KEY = "idv_floor_bench_key"
SECRET = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"  # every factor's TOTP secret: the driver knows it
DATA_KEY = bytes(range(32))

SCHEMA = """
CREATE TABLE clients (id TEXT PRIMARY KEY, key_hash TEXT UNIQUE NOT NULL, revoked_at TEXT);
CREATE TABLE factors (id TEXT PRIMARY KEY, secret_ct BLOB NOT NULL);
CREATE TABLE verifications (id TEXT PRIMARY KEY, client_id TEXT NOT NULL, factor_id TEXT NOT NULL,
    status TEXT NOT NULL, satisfied TEXT NOT NULL, expires_at REAL NOT NULL, completed_at REAL);
CREATE TABLE used_steps (factor_id TEXT NOT NULL, step INTEGER NOT NULL, used_at REAL NOT NULL,
    PRIMARY KEY (factor_id, step));
CREATE TABLE audit (seq INTEGER PRIMARY KEY, at REAL NOT NULL, event TEXT NOT NULL,
    detail TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
"""


def prepare(path: str, rows: int) -> None:
    """A fresh database with ``rows`` pending verifications ``v0`` .. ``v{rows-1}``, each with
    a TOTP factor of its own."""
    Path(path).unlink(missing_ok=True)
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    key_hash = hashlib.sha256(API_KEY.encode()).hexdigest()
    db.execute("INSERT INTO clients VALUES ('c1', ?, NULL)", (key_hash,))
    aes = AESGCM(DATA_KEY)
    for i in range(rows):
        nonce = os.urandom(12)
        ct = nonce + aes.encrypt(nonce, SECRET.encode(), f"factor:f{i}".encode())
        db.execute("INSERT INTO factors VALUES (?, ?)", (f"f{i}", ct))
        db.execute(
            "INSERT INTO verifications VALUES (?, 'c1', ?, 'pending', '[]', ?, NULL)",
            (f"v{i}", f"f{i}", time.time() + 3600),
        )
    db.commit()
    db.close()


def create_app(path: str) -> Flask:
    app = Flask("floor")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
        writer.execute(f"PRAGMA {pragma}")
    write_lock = threading.Lock()
    local = threading.local()
    aes = AESGCM(DATA_KEY)
    signing_key = ec.generate_private_key(ec.SECP256R1())
    head = {"hash": "0" * 64}

    def reader() -> sqlite3.Connection:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = sqlite3.connect(path, isolation_level=None)
            conn.execute("PRAGMA query_only=ON")
        return conn

    @app.get("/healthz")
    def healthz():  # type: ignore[no-untyped-def]
        return jsonify({"status": "ok"})

    @app.post("/v1/verifications/<vid>/proofs")
    def prove(vid: str):  # type: ignore[no-untyped-def]
        auth = request.headers.get("Authorization", "")
        key_hash = hashlib.sha256(auth.removeprefix("Bearer ").encode()).hexdigest()
        client = (
            reader()
            .execute("SELECT id, revoked_at FROM clients WHERE key_hash = ?", (key_hash,))
            .fetchone()
        )
        if client is None or client[1] is not None:
            abort(401)
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or body.get("factor") != "totp":
            abort(400)
        code = body.get("code")
        if not isinstance(code, str) or len(code) != 6 or not code.isdigit():
            abort(400)
        now = time.time()
        with write_lock:
            writer.execute("BEGIN IMMEDIATE")
            try:
                row = writer.execute(
                    "SELECT v.status, v.expires_at, f.id, f.secret_ct FROM verifications v"
                    " JOIN factors f ON f.id = v.factor_id WHERE v.id = ? AND v.client_id = ?",
                    (vid, client[0]),
                ).fetchone()
                if row is None or row[0] != "pending" or row[1] <= now:
                    abort(409)
                ct = row[3]
                secret = aes.decrypt(ct[:12], ct[12:], f"factor:{row[2]}".encode()).decode()
                totp = pyotp.TOTP(secret)
                step = int(now) // 30
                matched = next(
                    (s for s in (step - 1, step, step + 1) if totp.at(s * 30) == code), None
                )
                if (
                    matched is None
                    or not writer.execute(
                        "INSERT INTO used_steps VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
                        " RETURNING factor_id",
                        (row[2], matched, now),
                    ).fetchone()
                ):
                    abort(422)
                writer.execute(
                    "UPDATE verifications SET status = 'satisfied', satisfied = '[\"totp\"]',"
                    " completed_at = ? WHERE id = ? AND status = 'pending'",
                    (now, vid),
                )
                detail = json.dumps({"verification_id": vid, "factor": "totp"})
                digest = hashlib.sha256(f"{head['hash']}|{now}|{detail}".encode()).hexdigest()
                writer.execute(
                    "INSERT INTO audit (at, event, detail, prev_hash, hash) VALUES (?, ?, ?, ?, ?)",
                    (now, "proof.accepted", detail, head["hash"], digest),
                )
                writer.execute("COMMIT")
                head["hash"] = digest
            except BaseException:
                writer.execute("ROLLBACK")
                raise
        claims = {
            "iss": "https://idv.example",
            "aud": client[0],
            "sub": vid,
            "iat": int(now),
            "exp": int(now) + 300,
            "auth_time": int(now),
            "acr": "aal1",
            "amr": ["otp"],
            "action": "login",
            "jti": base64.urlsafe_b64encode(os.urandom(12)).decode(),
        }
        token = jwt.encode(
            claims, signing_key, algorithm="ES256", headers={"kid": "k1", "typ": "idv+jwt"}
        )
        return jsonify({"id": vid, "status": "satisfied", "accepted": True, "assertion": token})

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rows", type=int, default=5000, help="pending verifications")
    parser.add_argument("--db", required=True, help="SQLite file (re-created)")
    args = parser.parse_args()
    prepare(args.db, args.rows)
    Server(
        f"{args.host}:{args.port}", args.workers, args.threads, lambda: create_app(args.db)
    ).run()


if __name__ == "__main__":
    main()
