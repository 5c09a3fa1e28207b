"""How ``idv serve`` runs the app under gunicorn: its settings and its worker class.

The worker is gunicorn's ``gthread`` worker with two changes, both for input that never reaches
Flask:

- **JSON protocol errors.** gunicorn answers a request it cannot parse (a bad request line, a
  request line over 8190 bytes, headers too large, two ``Content-Length`` headers, a bad chunk)
  itself, with an HTML page. The contract (API.md: "Every error is ``{"error": CODE, "message":
  TEXT}``") holds for those too: ``Worker.handle_error`` keeps gunicorn's choice of status and
  its log line and sends the contract's body instead. The message is fixed per status and never
  echoes the bytes that were sent (they may hold a key).
- **A request thread only ever sees a whole request.** gunicorn read a request's head and body
  on a request thread with blocking reads; ``IDV_CLIENT_TIMEOUT`` bounded each read, so a
  client that trickled a header line within every period held its thread for good: forty
  connections dripping one line every 2 s held every thread and ``/healthz`` went unanswered
  (issue 20, item 5). A total deadline would still hold a thread for its length. Instead the
  poller (gunicorn's event loop, one thread) collects each request's bytes with non-blocking
  reads, new and kept-alive connections alike: the head must be complete within
  ``IDV_CLIENT_TIMEOUT`` of its first byte (a connection that sends nothing is closed after the
  keep-alive time, as before), and the body (up to 1 MiB, ``Content-Length`` or chunked)
  within that again plus 64 KiB/s of its announced length (chunked: of 1 MiB), or the
  connection is closed (a late body with the contract's ``408 request_timeout``); a head past
  64 KiB is ``431``. Only then does a request thread run it, gunicorn's parser reading the
  collected bytes first (``service.http.request_head`` decides when they are complete; the
  parser still judges them, so anything it cannot follow is handed over at once). What still
  reads on a thread (a body after ``Expect``, the answer a client is slow to read) waits at
  most ``IDV_CLIENT_TIMEOUT`` per read (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on the listening
  sockets, which accepted sockets inherit). OWASP ASVS 5.0 (STANDARDS.md) asks for resource
  limits on every input path.
"""

from __future__ import annotations

import contextlib
import errno
import heapq
import itertools
import json
import logging
import selectors
import socket
import struct
import time
from functools import partial
from typing import Any

from gunicorn.workers import gthread
from gunicorn.workers.gthread import ThreadWorker

from service import affinity
from service.http import request_head
from service.http.errors import error_code
from service.settings import Settings

LATE_HEAD = "closed a connection: its request head did not arrive within %ss"
LATE_BODY = "closed a connection: its request body did not arrive in time (%ss and 64 KiB/s)"

# What a protocol error says: gunicorn's reason is kept as the status line, never its message.
_MESSAGES = {
    400: "the request is not valid HTTP/1.1",
    403: "request forbidden",
    408: "the request did not arrive in time",
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


class _Conn(gthread.TConn):  # type: ignore[misc]
    """A connection, with the bytes the poller has collected for its next request."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.collected = b""
        self.needed: int | None = None  # head and body length, once the head is complete
        self.chunked: request_head.ChunkedBody | None = None
        self.deadline: float | None = None  # while on the poller collecting


class Worker(ThreadWorker):  # type: ignore[misc]
    """gunicorn's gthread worker; the poller collects each request whole before a thread runs
    it, with the contract's errors and bounded client silence."""

    client_timeout: float = 10.0  # set by ``configure`` in the arbiter, inherited by each fork

    def init_process(self) -> None:
        for listener in self.sockets:
            set_client_timeout(getattr(listener, "sock", listener), self.client_timeout)
        self.log.error_log.addFilter(_SilentClient(self.client_timeout))
        self._deadlines: list[tuple[float, int, _Conn]] = []  # a heap; stale entries skipped
        self._order = itertools.count()
        super().init_process()

    # -- the poller collects a request's head (and a Content-Length body) -------------------
    def accept(self, listener: Any) -> None:
        if self.cfg.is_ssl:  # TLS bytes are not a head: gunicorn's own way (idv serve: no TLS)
            return super().accept(listener)
        try:
            sock, addr = listener.accept()
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        self._collect(_Conn(self.cfg, sock, addr, listener.getsockname()), b"")

    def on_client_socket_readable(self, conn: _Conn, client: Any) -> None:
        """A kept-alive connection's next request begins: collect it like a new one's (it stays
        registered, with the collecting callback: no more poller calls than gunicorn makes)."""
        if self.cfg.is_ssl:
            return super().on_client_socket_readable(conn, client)
        self.keepalived_conns.remove(conn)
        self._collect(conn, b"", registered=True)
        self._on_readable(conn, client)

    def finish_request(self, conn: _Conn, fs: Any) -> None:
        # Bytes of the next request that the last one read ahead are collected like any others
        # (gunicorn would hand them straight to a thread, to wait there for the rest).
        if (
            not self.cfg.is_ssl
            and self.alive
            and not fs.cancelled()
            and fs.exception() is None
            and fs.result() is True
        ):
            ahead = conn.parser.unreader.take_buffered()
            if ahead:
                conn.sock.setblocking(False)
                self._collect(conn, ahead)
                if self._complete(conn):
                    self._dispatch(conn)
                return
        super().finish_request(conn, fs)

    def _collect(self, conn: _Conn, collected: bytes, registered: bool = False) -> None:
        """Wait on the poller for ``conn``'s request: ``keepalive`` seconds for a first byte,
        then ``IDV_CLIENT_TIMEOUT`` for the whole head."""
        conn.collected, conn.needed, conn.chunked = collected, None, None
        self._expire_at(conn, self.client_timeout if collected else self.cfg.keepalive)
        callback = partial(self._on_readable, conn)
        if registered:  # same events, new callback: the selector makes no system call
            self.poller.modify(conn.sock, selectors.EVENT_READ, callback)
        else:
            self.poller.register(conn.sock, selectors.EVENT_READ, callback)

    def _expire_at(self, conn: _Conn, seconds: float) -> None:
        conn.deadline = time.monotonic() + seconds
        heapq.heappush(self._deadlines, (conn.deadline, next(self._order), conn))

    def _on_readable(self, conn: _Conn, _sock: Any) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client closed: gunicorn's parser answers what was cut short, if any
            self._dispatch(conn) if conn.collected else self._close(conn)
            return
        first = not conn.collected
        conn.collected += data
        if self._complete(conn):
            self._dispatch(conn)
            return
        if conn.needed is not None:
            return  # the body is on its way, under its own deadline (``_complete``)
        if first:
            self._expire_at(conn, self.client_timeout)  # the head's whole deadline starts
        elif len(conn.collected) > request_head.HEAD_MAX:
            self._close(conn, b"HTTP/1.1 431 Request Header Fields Too Large")

    def _complete(self, conn: _Conn) -> bool:
        """Whether ``conn`` holds its whole head and the body it announced."""
        if conn.needed is None:
            end = request_head.head_end(conn.collected)
            if end is None:
                return False
            body = request_head.body_to_wait_for(conn.collected[:end])
            if body == request_head.CHUNKED:
                # followed as it comes; its deadline is the largest body's
                conn.chunked, body = request_head.ChunkedBody(end), request_head.BODY_MAX
            conn.needed = end + body
            if body:  # the body's own deadline: the client timeout, plus 64 KiB/s
                self._expire_at(conn, self.client_timeout + body / 65536)
        if conn.chunked is not None:
            return conn.chunked.scan(conn.collected) is not None  # False: the parser says why
        return len(conn.collected) >= conn.needed

    def _dispatch(self, conn: _Conn) -> None:
        """Hand a connection whose request is all here to a request thread."""
        self.poller.unregister(conn.sock)
        conn.deadline, conn.data_ready = None, True
        self.enqueue_req(conn)

    def _close(self, conn: _Conn, status_line: bytes | None = None) -> None:
        """Close a connection that is on the poller, answering ``status_line`` first if given."""
        self.poller.unregister(conn.sock)
        conn.deadline = None
        page = error_page(status_line) if status_line else None
        if page is not None:
            with contextlib.suppress(OSError):
                conn.sock.send(page)  # a few hundred bytes: the socket buffer takes them
                conn.sock.shutdown(socket.SHUT_WR)
                # Unread bytes make close() send a reset, which can discard the answer: take
                # what is there (a bounded amount: this is the poller's thread).
                for _ in range(4):
                    if not conn.sock.recv(65536):
                        break
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self) -> None:
        """Close connections whose request did not arrive in time (run by the poller's loop)."""
        super().murder_pending()
        if not self.alive:  # stopping: a connection that sent nothing is not waited for
            for _, _, conn in list(self._deadlines):
                if conn.deadline is not None and not conn.collected:
                    self._close(conn)
        now = time.monotonic()
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, _, conn = heapq.heappop(self._deadlines)
            if conn.deadline != deadline:
                continue  # dispatched, closed, or given a later deadline since
            if conn.needed is not None:  # the head came, the body did not: the contract's 408
                self.log.warning(LATE_BODY, f"{self.client_timeout:g}")
                self._close(conn, b"HTTP/1.1 408 Request Timeout")
            else:
                if conn.collected:
                    self.log.warning(LATE_HEAD, f"{self.client_timeout:g}")
                self._close(conn)

    def handle(self, conn: _Conn) -> Any:
        # On a request thread: the parser reads the collected bytes first, then the socket.
        collected, conn.collected = getattr(conn, "collected", b""), b""
        if collected:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(collected)
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
