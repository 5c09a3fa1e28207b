"""How ``idv serve`` runs the app under gunicorn: its settings and its worker class.

The worker is gunicorn's ``gthread`` worker with two changes, both for input that never reaches
Flask:

- **JSON protocol errors.** gunicorn answers a request it cannot parse (a bad request line, a
  request line over 8190 bytes, headers too large, two ``Content-Length`` headers, a bad chunk)
  itself, with an HTML page. The contract (API.md: "Every error is ``{"error": CODE, "message":
  TEXT}``") holds for those too: ``Worker.handle_error`` keeps gunicorn's choice of status and
  its log line and sends the contract's body instead. The message is fixed per status and never
  echoes the bytes that were sent (they may hold a key).
- **A client that goes silent mid-request is dropped.** gunicorn reads a request's headers and
  body on a request thread, with blocking reads that have no time limit: a caller that crashed
  or lost its network after sending part of a request held a thread until TCP gave up (hours),
  and 8 such connections (one worker's threads) stopped the service for everyone. Every
  connection now gets ``SO_RCVTIMEO`` and ``SO_SNDTIMEO`` of ``IDV_CLIENT_TIMEOUT`` seconds
  (set on the listening sockets; Linux gives accepted sockets the listener's options, and
  ``setblocking`` leaves them alone). A read or write that waits longer fails: silent headers
  close the connection, a silent body gets ``408 request_timeout`` (``http.body``), a client that
  stops reading its response is closed. This is an inactivity bound per read, like nginx's
  ``client_body_timeout``: a client that trickles a byte within every period still holds its
  thread, which is why an untrusted network belongs behind a buffering proxy (README,
  Deployment). OWASP ASVS 5.0 (STANDARDS.md) asks for resource limits on every input path.
- **A connection that sends nothing takes no thread.** ``Worker.handle`` hands a new connection
  with no bytes yet straight back to gunicorn's poller instead of letting a thread wait for them.
"""

from __future__ import annotations

import json
import logging
import socket
import struct
from typing import Any

from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from service import affinity
from service.http.errors import error_code
from service.settings import Settings

# gthread's "back to the poller" answer from ``handle`` (gunicorn 23+; None before, when a new
# connection waited in the poller anyway).
_DEFER = getattr(gthread, "_DEFER", None)

# What a protocol error says: gunicorn's reason is kept as the status line, never its message.
_MESSAGES = {
    400: "the request is not valid HTTP/1.1",
    403: "request forbidden",
    414: "the request line exceeds 8190 bytes",
    417: "the expectation cannot be met",
    431: "the request headers are too large",
    500: "internal server error",
}


class _Captured:
    """Stands in for the client socket while gunicorn writes its own error page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float | None:
        return None

    def setblocking(self, _flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data

    def send(self, data: bytes) -> int:
        self.data += data
        return len(data)


def error_page(status_line: bytes) -> bytes | None:
    """The contract's error response for gunicorn's ``HTTP/1.1 NNN Reason`` status line."""
    parts = status_line.split(b" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        return None
    status = int(parts[1])
    reason = parts[2].decode("latin-1") if len(parts) > 2 else ""
    if status == 501:
        # An unknown Transfer-Encoding. RFC 9112 section 6.1 says a server SHOULD answer 501;
        # API.md's contract is 4xx for bad input and 5xx only for real server faults (a caller
        # may retry a 5xx), and what was sent here is bad input.
        status, reason, message = 400, "Bad Request", "the transfer coding is not supported"
    else:
        message = _MESSAGES.get(status, "the request cannot be served")
    body = json.dumps({"error": error_code(status), "message": message}, separators=(",", ":"))
    payload = body.encode() + b"\n"
    head = (
        f"HTTP/1.1 {status} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n"
        "Cache-Control: no-store\r\n"
        "X-Content-Type-Options: nosniff\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + payload


class _SilentClient(logging.Filter):
    """gunicorn logs a read or write that timed out as a socket error with a traceback; that is
    a client too slow for ``IDV_CLIENT_TIMEOUT``, worth one line, not a stack."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, (BlockingIOError, TimeoutError)):
            record.msg = "closed a connection: the client sent or read nothing for %ss"
            record.args = (f"{self.timeout:g}",)
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.exc_info = record.exc_text = None
        return True


def set_client_timeout(sock: Any, seconds: float) -> None:
    """Give ``sock`` (and, for a listener, every socket it accepts) read and write timeouts."""
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


class Worker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker, with the contract's errors and bounded client silence."""

    client_timeout: float = 10.0  # set by ``configure`` in the arbiter, inherited by each fork

    def init_process(self) -> None:
        for listener in self.sockets:
            set_client_timeout(getattr(listener, "sock", listener), self.client_timeout)
        self.log.error_log.addFilter(_SilentClient(self.client_timeout))
        super().init_process()

    def handle(self, conn: Any) -> Any:
        # gunicorn (23 and later) lets a new connection's thread wait up to 5 s for its first
        # bytes before handing it back to the poller: 8 connections that send nothing stopped
        # every request for 5 s. A new connection with nothing to read yet goes straight back to
        # the poller (as kept-alive connections do), which closes it after the keep-alive time.
        if (
            _DEFER is not None
            and not conn.initialized
            and not conn.data_ready
            and not conn.wait_for_data(0)
        ):
            return _DEFER
        return super().handle(conn)

    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        captured = _Captured()
        super().handle_error(req, captured, addr, exc)  # gunicorn's status, log and access log
        page = error_page(captured.data.split(b"\r\n", 1)[0])
        if page is None:
            return
        try:
            client.sendall(page)
        except OSError:
            self.log.debug("could not send the error response")


def configure(cfg: Any, settings: Settings, *, bind: str, workers: int, threads: int) -> None:
    """gunicorn settings of ``idv serve`` (and of the bench's ceiling and floor apps, which must
    run under the same server): ``IDV_PIN_THREADS`` and ``IDV_CLIENT_TIMEOUT`` from
    ``settings``."""
    Worker.client_timeout = settings.client_timeout
    cfg.set("bind", bind)
    cfg.set("workers", workers)
    cfg.set("threads", threads)
    cfg.set("worker_class", f"{__name__}.Worker")
    cfg.set("timeout", 30)
    cfg.set("graceful_timeout", 10)
    cfg.set("accesslog", None)
    cfg.set("limit_request_line", 8190)
    if settings.pin_threads:  # each worker's request threads on a CPU of their own
        for name, hook in affinity.gunicorn_hooks().items():
            cfg.set(name, hook)
