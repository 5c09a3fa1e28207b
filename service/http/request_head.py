"""Where a request's head ends and how much body follows it: read on the poller, not a thread.

``service.http.server.Worker`` collects a request's bytes on gunicorn's poller thread and hands
the connection to a request thread only once they are all there (issue 20, item 5: forty
clients that each sent one header line every 2 s held every request thread). These functions
only decide *when* the bytes are complete; gunicorn's own parser still reads every byte and
refuses what is malformed, with the statuses it always used. So when in doubt (a framing this
code does not follow, a conflict, an ``Expect``) they say "hand it over now", never "wait".
"""

from __future__ import annotations

import re

# Larger than any head gunicorn accepts with idv's limits (request line 8190 bytes, 100
# fields of 8190): a head still without its end past this is answered 431 by the poller.
HEAD_MAX = 64 * 1024
# The largest body idv reads (API.md: request bodies are limited to 1 MiB).
BODY_MAX = 1 << 20

_END = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*\r?$", re.MULTILINE)


def head_end(buf: bytes) -> int | None:
    """Offset just after the blank line that ends the head, or None while it is incomplete.

    A bare LF counts (RFC 9112 §2.2 lets a recipient accept one) so that gunicorn, not a wait,
    answers a head that uses them (it refuses them: 400).
    """
    match = _END.search(buf)
    return match.end() if match else None


def body_to_wait_for(head: bytes) -> int:
    """How many body bytes to collect on the poller before a thread reads the request.

    A single well-formed ``Content-Length`` up to ``BODY_MAX``: that many; ``Transfer-Encoding:
    chunked`` alone: ``CHUNKED`` (follow it with ``ChunkedBody``). Anything else is 0, handed
    over at once: ``Expect`` (the client waits for ``100 Continue`` before its body), other
    codings, both framings, repeated or malformed lengths and bodies over the limit (gunicorn or
    Flask refuse them without reading them).
    """
    lowered_head = head.lower()
    if b"content-length" not in lowered_head and b"transfer-encoding" not in lowered_head:
        return 0  # the common GET: no field to look at
    lengths: list[bytes] = []
    codings: list[bytes] = []
    for name, value in _FIELD.findall(head):
        lowered = name.lower()
        if lowered == b"expect":
            return 0
        if lowered == b"transfer-encoding":
            codings.append(value.lower())
        elif lowered == b"content-length":
            lengths.append(value)
    if codings:
        return CHUNKED if codings == [b"chunked"] and not lengths else 0
    if len(lengths) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 8:
        return 0
    length = int(lengths[0])
    return length if length <= BODY_MAX else 0


CHUNKED = -1
_HEX = frozenset(b"0123456789abcdefABCDEF")


class ChunkedBody:
    """Follows chunked framing (RFC 9112 §7.1) over a growing buffer, resuming where it stopped
    (a body dripped a byte at a time costs no rescans)."""

    def __init__(self, start: int) -> None:
        self.pos = start  # where the next chunk-size line (or trailer line) begins
        self.total = 0
        self.trailers = False

    def scan(self, buf: bytes) -> bool | None:
        """True: the body is complete; None: wait for more; False: hand it over now (malformed,
        or over ``BODY_MAX``: gunicorn's parser and ``http.body`` answer 400 or 413)."""
        while True:
            end = buf.find(b"\r\n", self.pos)
            if end < 0:
                return None if len(buf) - self.pos <= 8192 else False
            if self.trailers:
                if end == self.pos:
                    return True  # the empty line after the last chunk (and any trailers)
                self.pos = end + 2
                continue
            size_text = buf[self.pos : end].split(b";", 1)[0].strip(b" \t")
            if not size_text or len(size_text) > 8 or not set(size_text) <= _HEX:
                return False
            size = int(size_text, 16)
            if size == 0:
                self.trailers, self.pos = True, end + 2
                continue
            if self.total + size > BODY_MAX:
                return False
            data_end = end + 2 + size
            if len(buf) < data_end + 2:
                return None
            if buf[data_end : data_end + 2] != b"\r\n":
                return False
            self.total, self.pos = self.total + size, data_end + 2
