"""Outbound HTTP (the SMS gateway, tenants' webhooks, CAMARA): one POST under one deadline.

A socket timeout bounds each read, not the exchange: a peer that sends a byte inside every
timeout holds the caller for as long as it likes. Measured before this module: an SMS send
with a 1 s timeout, a webhook delivery with 5 s and a CAMARA call with a 1 s deadline each took
18-20 s against a server that answered one byte every half second, and a slower trickle holds
them for ever: a request thread per SMS challenge, and every tenant's webhooks behind one
tenant's endpoint. Here a timer shuts the socket down when the deadline passes, so a blocked
connect, handshake, write or read ends then, whatever the peer does.

No redirects are followed (a gateway that redirects is answered with its 3xx status) and the
answer's body is read up to a limit, never further.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass


class OutboundTimeout(Exception):
    """The deadline passed before the answer was read."""


class OutboundError(Exception):
    """No usable answer: refused, reset, malformed, or a body over the limit. The message is a
    short reason (an exception's type name), never the URL or what was sent."""


@dataclass(frozen=True)
class Answer:
    """A peer's HTTP answer: status, headers (lower-case names) and at most ``max_body`` bytes."""

    status: int
    headers: dict[str, str]
    body: bytes


def check_url(url: str) -> urllib.parse.SplitResult:
    """An absolute http(s) URL with a host, or ValueError (no file: or custom schemes)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an absolute http:// or https:// URL")
    return parts


def post(
    url: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    timeout: float,
    max_body: int = 0,
    tls: ssl.SSLContext | None = None,
) -> Answer:
    """POST ``body`` to ``url`` once; the whole exchange ends within ``timeout`` seconds.

    Raises OutboundTimeout when the deadline passes first, OutboundError when there is no
    usable answer (an answer's body longer than ``max_body`` included).
    """
    parts = check_url(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(
            parts.hostname or "", parts.port, timeout=timeout, context=tls
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=timeout)
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):  # already closed: nothing left to wake
                sock.shutdown(socket.SHUT_RDWR)  # wakes a blocked recv/send in the caller

    timer = threading.Timer(timeout, cut)
    timer.daemon = True
    timer.start()
    try:
        connection.request("POST", target, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = response.read(max_body + 1) if max_body else b""
        found = {name.lower(): value for name, value in response.getheaders()}
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            raise OutboundTimeout from None
        raise OutboundError(type(exc).__name__) from None
    finally:
        timer.cancel()
        connection.close()
    if expired.is_set():  # the last bytes arrived as the timer fired: late all the same
        raise OutboundTimeout
    if len(data) > max_body:
        raise OutboundError("answer too large")
    return Answer(response.status, found, data)
