"""When the poller hands a request to a thread (service.http.request_head; issue 20, item 5):
only a whole head, and a Content-Length body it can wait for; anything else at once."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from service.http.request_head import BODY_MAX, CHUNKED, ChunkedBody, body_to_wait_for, head_end

HEAD = b"POST /v1/verifications HTTP/1.1\r\nHost: idv\r\n"


def test_the_head_ends_at_the_blank_line() -> None:
    assert head_end(HEAD) is None
    assert head_end(HEAD + b"X-A: 1\r\n") is None
    assert head_end(HEAD + b"\r\n{}") == len(HEAD) + 2
    assert head_end(b"GET / HTTP/1.1\nHost: idv\n\n") == 26  # bare LF: gunicorn refuses it


def test_a_single_content_length_is_waited_for() -> None:
    assert body_to_wait_for(HEAD + b"Content-Length: 42\r\n\r\n") == 42
    assert body_to_wait_for(HEAD + b"content-length:7 \r\n\r\n") == 7
    assert body_to_wait_for(HEAD + b"Content-Length: %d\r\n\r\n" % BODY_MAX) == BODY_MAX


def test_anything_else_is_handed_over_at_once() -> None:
    for fields in (
        b"",
        b"Content-Length: %d\r\n" % (BODY_MAX + 1),
        b"Content-Length: 2\r\nContent-Length: 2\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 0x10\r\n",
        b"Content-Length: 10\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
        b"Content-Length: 10\r\nExpect: 100-continue\r\n",
        b"Content-Length: 99999999999999999999\r\n",
    ):
        assert body_to_wait_for(HEAD + fields + b"\r\n") == 0, fields


@given(st.binary(max_size=300))
def test_never_more_than_the_limit_whatever_the_bytes(junk: bytes) -> None:
    assert (
        body_to_wait_for(HEAD + junk) == CHUNKED or 0 <= body_to_wait_for(HEAD + junk) <= BODY_MAX
    )
    end = head_end(HEAD + junk)
    assert end is None or end <= len(HEAD + junk)


def test_a_chunked_body_is_followed_as_it_arrives() -> None:
    assert body_to_wait_for(HEAD + b"Transfer-Encoding: Chunked\r\n\r\n") == CHUNKED
    whole = b"2\r\n{}\r\n3;ext=1\r\nabc\r\n0\r\nX-Trailer: t\r\n\r\n"
    scan = ChunkedBody(0)
    for cut in range(len(whole)):  # a byte at a time: waits until the last one, never rescans
        assert scan.scan(whole[:cut]) is None, cut
    assert scan.scan(whole) is True
    assert ChunkedBody(0).scan(b"0\r\n\r\n") is True


def test_a_malformed_or_oversized_chunked_body_is_handed_over_at_once() -> None:
    # gunicorn's parser and service.http.body answer these (400, 413): never a wait.
    for body in (
        b"zz\r\n{}\r\n0\r\n\r\n",
        b"2\r\n{}XX0\r\n\r\n",
        b"%x\r\n" % (BODY_MAX + 1),
        b"100000\r\n" + b"a" * BODY_MAX + b"\r\n1\r\n",
        b"1" * 9000,
    ):
        assert ChunkedBody(0).scan(body) is False, body[:20]
