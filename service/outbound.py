"""Outbound HTTP (the SMS gateway, tenants' webhooks, CAMARA): one POST under one deadline.

A socket timeout bounds each read, not the exchange: a peer that sends a byte inside every
timeout holds the caller for as long as it likes. Measured before this module: an SMS send
with a 1 s timeout, a webhook delivery with 5 s and a CAMARA call with a 1 s deadline each took
18-20 s against a server that answered one byte every half second, and a slower trickle holds
them for ever: a request thread per SMS challenge, and every tenant's webhooks behind one
tenant's endpoint. Here a timer shuts the socket down when the deadline passes, so a blocked
connect, handshake, write or read ends then, whatever the peer does.

No redirects are followed (a gateway that redirects is answered with its 3xx status), the
answer's body is read up to a limit, never further, and ``HTTP(S)_PROXY`` / ``NO_PROXY`` are
honoured as urllib honours them.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import socket
import ssl
import threading
import urllib.parse
import urllib.request
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


def _proxy_for(parts: urllib.parse.SplitResult) -> urllib.parse.SplitResult | None:
    """The proxy that ``HTTP_PROXY`` / ``HTTPS_PROXY`` name for this URL, unless ``NO_PROXY``
    exempts its host: what urllib, which the SMS and webhook senders used before, honours."""
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    found = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    return found if found.hostname else None


def _connect(
    parts: urllib.parse.SplitResult, timeout: float, tls: ssl.SSLContext | None
) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """A connection (not opened yet) to the URL's host or its proxy, the request target, and
    the headers the proxy needs."""
    host, port = parts.hostname or "", parts.port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    proxy = _proxy_for(parts)
    if proxy is None:
        if parts.scheme == "https":
            return http.client.HTTPSConnection(host, port, timeout=timeout, context=tls), target, {}
        return http.client.HTTPConnection(host, port, timeout=timeout), target, {}
    auth: dict[str, str] = {}
    if proxy.username is not None:
        user_pass = (
            f"{urllib.parse.unquote(proxy.username)}:{urllib.parse.unquote(proxy.password or '')}"
        )
        auth["Proxy-Authorization"] = "Basic " + base64.b64encode(user_pass.encode()).decode()
    if parts.scheme == "https":  # CONNECT; TLS and its certificate check stay end to end
        tunnel = http.client.HTTPSConnection(
            proxy.hostname or "", proxy.port, timeout=timeout, context=tls
        )
        tunnel.set_tunnel(host, port or 443, headers=auth)
        return tunnel, target, {}
    # A plain HTTP proxy takes the absolute URL.
    relay = http.client.HTTPConnection(proxy.hostname or "", proxy.port, timeout=timeout)
    return relay, urllib.parse.urlunsplit(parts._replace(fragment="")), auth


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
    connection, target, sent = _connect(check_url(url), timeout, tls)
    sent.update(headers)
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
        connection.request("POST", target, body=body, headers=sent)
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
