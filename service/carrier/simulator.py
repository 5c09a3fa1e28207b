"""A CAMARA carrier simulator over real HTTP, for tests, demos and ``idv carrier-sim``.

Stdlib only (``http.server``). It serves an OAuth2 client-credentials token endpoint and the
three CAMARA operations idv uses, answering from a scripted timeline per number, and can be
switched into the failure modes a real carrier shows (errors, rate limits, hangs, expired
tokens). Not for production: it keeps everything in memory and trusts its one client.
"""

from __future__ import annotations

import base64
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote_plus

from service.domain.clock import parse_rfc3339, rfc3339

TOKEN_PATH = "/oauth/token"
RETRIEVE_DATE_PATH = "/sim-swap/v2/retrieve-date"
CHECK_PATH = "/sim-swap/v2/check"
RECYCLING_PATH = "/number-recycling/v0.2/check"
HANG_SECONDS = 10.0
TRICKLE_SECONDS = 0.25  # between two bytes of a trickled answer: inside any socket timeout

MODES = frozenset(
    {
        "unknown_number",  # 404 IDENTIFIER_NOT_FOUND
        "null_date",  # retrieve-date answers latestSimChange: null, no monitoredPeriod
        "not_applicable",  # 422 SERVICE_NOT_APPLICABLE
        "out_of_range",  # 400 OUT_OF_RANGE
        "rate_limited",  # 429 with Retry-After: 1, every time
        "rate_limited_once",  # 429 with Retry-After: 1, then normal answers
        "error",  # 503 every time
        "hang",  # no answer for HANG_SECONDS (cut short by stop())
        "trickle",  # the normal answers, token included, a byte every TRICKLE_SECONDS
        "expire_token",  # revoke every token and answer 401 once
        "flaky",  # 503 once, then normal answers
        "unauthorized",  # 401 every time, even with a fresh token
        "forbidden",  # 403 PERMISSION_DENIED
        "bad_json",  # 200 with a body that is not JSON
    }
)
_ONE_SHOT = frozenset({"rate_limited_once", "expire_token", "flaky"})


@dataclass
class _Number:
    activated_at: datetime | None
    swaps: list[datetime]
    recycled_at: datetime | None
    monitored_days: int | None

    def changes(self, now: datetime) -> list[datetime]:
        """Every SIM change so far: activation (a new SIM) and swaps."""
        events = [*self.swaps, *([self.activated_at] if self.activated_at else [])]
        return [event for event in events if event <= now]


@dataclass
class _State:
    numbers: dict[str, _Number] = field(default_factory=dict)
    modes: dict[str | None, str] = field(default_factory=dict)
    tokens: dict[str, float] = field(default_factory=dict)  # token → expiry (time.monotonic)


class CarrierSimulator:
    """A CAMARA SIM Swap v2 / Number Recycling v0.2 server on 127.0.0.1 (by default).

    ``requests`` lists the path of every request received (token requests included) and
    ``token_grants`` counts the tokens issued, so tests can see caching and refreshes.
    """

    def __init__(
        self,
        client_id: str = "idv-sim",
        client_secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token_ttl: int = 3600,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        """Remember the client credentials it accepts and where to listen; call ``start()``.

        Without ``client_secret`` a random one is made (read it from ``client_secret``).
        """
        self.client_id = client_id
        self.client_secret = client_secret or secrets.token_urlsafe(16)
        self.host, self.port = host, port
        self.token_ttl = token_ttl
        self.now = now
        self.requests: list[str] = []
        self.token_grants = 0
        self._state = _State()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- scripting ---------------------------------------------------------------------------

    def add_number(
        self,
        phone: str,
        activated_at: datetime | None = None,
        swaps: list[datetime] | None = None,
        recycled_at: datetime | None = None,
        monitored_days: int | None = None,
    ) -> None:
        """Script the life of ``phone``: activation, SIM swaps, reassignment (aware datetimes).

        With ``monitored_days``, changes older than that many days are not disclosed:
        retrieve-date answers ``latestSimChange: null`` with ``monitoredPeriod``.
        """
        with self._lock:
            self._state.numbers[phone] = _Number(
                activated_at, sorted(swaps or []), recycled_at, monitored_days
            )

    def mode(self, phone: str | None, mode: str | None) -> None:
        """Switch ``phone`` (None: every number) into a failure ``mode``; None switches it off.

        A number's own mode wins over the global one. See ``MODES`` for the list.
        """
        if mode is not None and mode not in MODES:
            raise ValueError(f"unknown simulator mode {mode!r}")
        with self._lock:
            if mode is None:
                self._state.modes.pop(phone, None)
            else:
                self._state.modes[phone] = mode

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Bind, serve in a daemon thread and return the base URL (``http://host:port``)."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        self._stopping.clear()
        server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self.base_url

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running simulator."""
        return f"http://{self.host}:{self.port}"

    @property
    def token_url(self) -> str:
        """The OAuth2 token endpoint."""
        return self.base_url + TOKEN_PATH

    def stop(self) -> None:
        """Stop serving; requests that are hanging are released at once."""
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def __enter__(self) -> CarrierSimulator:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- request handling (called from the server threads) ----------------------------------

    def _grant(self, authorization: str | None, form: str) -> tuple[int, dict[str, Any]]:
        if not self._client_authenticated(authorization):
            return 401, {"error": "invalid_client"}
        if form.strip() != "grant_type=client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._state.tokens[token] = time.monotonic() + self.token_ttl
            self.token_grants += 1
        return 200, {"access_token": token, "token_type": "Bearer", "expires_in": self.token_ttl}

    def _client_authenticated(self, authorization: str | None) -> bool:
        """HTTP Basic with the form-urlencoded id and secret (RFC 6749 §2.3.1)."""
        scheme, _, encoded = (authorization or "").partition(" ")
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except ValueError:
            return False
        user, _, password = decoded.partition(":")
        given = f"{unquote_plus(user)}\x00{unquote_plus(password)}".encode()
        expected = f"{self.client_id}\x00{self.client_secret}".encode()
        return scheme.lower() == "basic" and hmac.compare_digest(given, expected)

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        with self._lock:
            expires = self._state.tokens.get(token) if scheme.lower() == "bearer" else None
        return expires is not None and time.monotonic() < expires

    def _take_mode(self, phone: str | None) -> str | None:
        """The mode in force for ``phone``; one-shot modes are used up here."""
        with self._lock:
            key = phone if phone in self._state.modes else None
            mode = self._state.modes.get(key)
            if mode in _ONE_SHOT:
                del self._state.modes[key]
            if mode == "expire_token":
                self._state.tokens.clear()
            return mode

    def _answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        phone = body.get("phoneNumber")
        if not isinstance(phone, str) or not phone.startswith("+"):
            return _error(400, "INVALID_ARGUMENT", "phoneNumber must be E.164")
        with self._lock:
            number = self._state.numbers.get(phone)
        if number is None:
            return _error(404, "IDENTIFIER_NOT_FOUND", "Device identifier not found.")
        now = self.now()
        if path == RETRIEVE_DATE_PATH:
            return 200, _retrieve_date(number, now)
        if path == CHECK_PATH:
            max_age = body.get("maxAge", 240)
            if isinstance(max_age, bool) or not isinstance(max_age, int):
                return _error(400, "INVALID_ARGUMENT", "maxAge must be an integer")
            limit = 2400 if number.monitored_days is None else number.monitored_days * 24
            if not 1 <= max_age <= min(2400, limit):
                return _error(400, "OUT_OF_RANGE", "maxAge is out of the supported range")
            since = now - timedelta(hours=max_age)
            return 200, {"swapped": any(change > since for change in number.changes(now))}
        try:
            specified = date.fromisoformat(str(body.get("specifiedDate")))
        except (TypeError, ValueError):
            return _error(400, "INVALID_ARGUMENT", "specifiedDate must be YYYY-MM-DD")
        start = datetime(specified.year, specified.month, specified.day, tzinfo=UTC)
        recycled = number.recycled_at is not None and start < number.recycled_at <= now
        return 200, {"phoneNumberRecycled": recycled}


def _retrieve_date(number: _Number, now: datetime) -> dict[str, Any]:
    changes = number.changes(now)
    latest = max(changes) if changes else None
    period = number.monitored_days
    if period is not None and (latest is None or now - latest > timedelta(days=period)):
        return {"latestSimChange": None, "monitoredPeriod": period}
    return {"latestSimChange": rfc3339(latest) if latest else None}


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
    """A CAMARA Commonalities error body."""
    return status, {"status": status, "code": code, "message": message}


_MODE_ANSWERS: dict[str, tuple[int, dict[str, Any]]] = {
    "unknown_number": _error(404, "IDENTIFIER_NOT_FOUND", "Device identifier not found."),
    "not_applicable": _error(422, "SERVICE_NOT_APPLICABLE", "Service not applicable."),
    "out_of_range": _error(400, "OUT_OF_RANGE", "Client specified an invalid range."),
    "rate_limited": _error(429, "TOO_MANY_REQUESTS", "Rate limit reached."),
    "rate_limited_once": _error(429, "TOO_MANY_REQUESTS", "Rate limit reached."),
    "error": _error(503, "UNAVAILABLE", "Service unavailable."),
    "flaky": _error(503, "UNAVAILABLE", "Service unavailable."),
    "expire_token": _error(401, "UNAUTHENTICATED", "Access token expired."),
    "unauthorized": _error(401, "UNAUTHENTICATED", "Invalid access token."),
    "forbidden": _error(403, "PERMISSION_DENIED", "Client does not have permission."),
}


def _handler_for(sim: CarrierSimulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Stay quiet: test output should show test failures, not access logs."""

        def do_POST(self) -> None:  # http.server's naming
            """Serve the token endpoint and the three CAMARA operations."""
            with sim._lock:
                sim.requests.append(self.path)
                self._trickle = sim._state.modes.get(None) == "trickle"  # the token too
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(min(length, 64 * 1024)).decode("utf-8", "replace")
            authorization = self.headers.get("Authorization")
            if self.path == TOKEN_PATH:
                self._send(*sim._grant(authorization, raw))
                return
            if self.path not in (RETRIEVE_DATE_PATH, CHECK_PATH, RECYCLING_PATH):
                self._send(*_error(404, "NOT_FOUND", "No such operation."))
                return
            if not sim._authorized(authorization):
                self._send(*_error(401, "UNAUTHENTICATED", "Missing or invalid token."))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                self._send(*_error(400, "INVALID_ARGUMENT", "Body must be a JSON object."))
                return
            phone = body.get("phoneNumber") if isinstance(body.get("phoneNumber"), str) else None
            mode = sim._take_mode(phone)
            self._trickle = self._trickle or mode == "trickle"
            if mode == "hang":
                sim._stopping.wait(HANG_SECONDS)
                self.close_connection = True
                return
            if mode == "bad_json":
                self._send_raw(200, b"<html>not json</html>", "text/html")
            elif mode == "null_date" and self.path == RETRIEVE_DATE_PATH:
                self._send(200, {"latestSimChange": None})
            elif mode in _MODE_ANSWERS:
                retry = {"Retry-After": "1"} if mode.startswith("rate_limited") else {}
                self._send(*_MODE_ANSWERS[mode], extra=retry)
            else:
                self._send(*sim._answer(self.path, body))

        def _send(
            self, status: int, body: dict[str, Any], extra: dict[str, str] | None = None
        ) -> None:
            self._send_raw(status, json.dumps(body).encode(), "application/json", extra)

        def _send_raw(
            self,
            status: int,
            data: bytes,
            content_type: str,
            extra: dict[str, str] | None = None,
        ) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in (extra or {}).items():
                    self.send_header(name, value)
                if not self._trickle:
                    self.end_headers()
                    self.wfile.write(data)
                    return
                self._headers_buffer.append(b"\r\n")
                whole = b"".join(self._headers_buffer) + data
                self._headers_buffer = []
                for i in range(len(whole)):  # never silent for as long as a socket timeout
                    if sim._stopping.wait(TRICKLE_SECONDS):
                        break
                    self.wfile.write(whole[i : i + 1])
                    self.wfile.flush()
                self.close_connection = True
            except OSError:
                self.close_connection = True  # the client gave up (its deadline passed)

    return Handler


def load_script(sim: CarrierSimulator, script: dict[str, Any] | list[Any]) -> None:
    """Add the numbers of a JSON script to ``sim``.

    ``{"numbers": [{"phone": "+8613800138000", "activated_at": "2020-01-01T00:00:00Z",
    "swaps": ["..."], "recycled_at": null, "monitored_days": null, "mode": null}]}``
    (a bare list of numbers works too). Dates are RFC 3339.
    """
    entries = script.get("numbers", []) if isinstance(script, dict) else script
    for entry in entries:
        when = _optional_date
        sim.add_number(
            entry["phone"],
            activated_at=when(entry.get("activated_at")),
            swaps=[parse_rfc3339(swap) for swap in entry.get("swaps", [])],
            recycled_at=when(entry.get("recycled_at")),
            monitored_days=entry.get("monitored_days"),
        )
        if entry.get("mode"):
            sim.mode(entry["phone"], entry["mode"])


def _optional_date(value: str | None) -> datetime | None:
    return None if value is None else parse_rfc3339(value)


def run_simulator(host: str, port: int, script_path: str | None) -> None:
    """Serve a simulator on ``host:port`` until interrupted (``idv carrier-sim``).

    ``script_path`` names a JSON script (see ``load_script``); it may also set
    ``client_id`` and ``client_secret``. Prints the URLs and credentials to use.
    """
    script: dict[str, Any] | list[Any] = {}
    if script_path:
        with open(script_path, encoding="utf-8") as source:
            script = json.load(source)
    options = script if isinstance(script, dict) else {}
    sim = CarrierSimulator(
        options.get("client_id", "idv-sim"),
        options.get("client_secret"),
        host=host,
        port=port,
    )
    load_script(sim, script)
    base_url = sim.start()
    print(f"CAMARA simulator at {base_url}")
    print(f"  token URL {sim.token_url}, client id {sim.client_id!r}")
    print(f"  client secret {sim.client_secret!r}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
