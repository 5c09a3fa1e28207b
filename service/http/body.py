"""Request body parsing: JSON objects only, validated by pydantic models."""

from __future__ import annotations

import json
from typing import TypeVar

from flask import request
from gunicorn.http.errors import ParseException
from pydantic import BaseModel, ValidationError
from werkzeug.exceptions import ClientDisconnected, RequestEntityTooLarge, RequestTimeout

from service.domain.errors import InvalidRequest
from service.domain.text import storable

M = TypeVar("M", bound=BaseModel)


class _RepeatedName(ValueError):
    pass


def _unique_names(pairs: list[tuple[str, object]]) -> dict:
    """An object whose member names are unique (RFC 8259 section 4; RFC 7493 I-JSON makes it a
    MUST). Python keeps the last of repeated names, while another parser in front of idv (a
    tenant's gateway, a WAF) may keep the first: ``{"action": "login", "action":
    "payment_password_reset"}`` would then be checked as one action and run as the other."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RepeatedName
    return obj


class _NotANumber(ValueError):
    pass


def _no_constant(name: str) -> object:
    """Refuse ``NaN``, ``Infinity`` and ``-Infinity``: RFC 8259 section 6 has no such numbers
    (Python's json reads them by default), and no other parser in the chain need agree on them.
    """
    raise _NotANumber(name)


def _all_storable(value: object) -> bool:
    """Every string in a parsed JSON value, member names included, is ``storable``.

    Iterative: a body nested as deep as json.loads allows must not overflow the stack here."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if not storable(item):
                return False
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return True


def raw_body() -> bytes:
    """The whole request body (read once, cached); 408, 413 or 400 when it cannot be read."""
    try:
        raw = request.get_data(cache=True)
    except (ClientDisconnected, OSError):
        # The body stopped arriving: the client went silent for IDV_CLIENT_TIMEOUT (the read
        # fails, http.server) or went away. 408, and gunicorn closes the connection, since
        # where a next request would start is unknown.
        raise RequestTimeout() from None
    except ParseException:  # gunicorn could not read a chunked body: a bad size or terminator
        raise InvalidRequest("the chunked request body is malformed") from None
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(raw) >= limit:
        # A chunked body has no Content-Length to refuse up front; werkzeug stops reading at
        # the limit and hands over what it read, which must not pass for the whole body.
        raise RequestEntityTooLarge()
    return raw


def json_object(*, optional: bool = False) -> dict:
    """The request body as a JSON object; 400 ``invalid_request`` for anything else."""
    raw = raw_body()
    return decode_object(raw, request.mimetype, optional=optional)


def decode_object(raw: bytes, mimetype: str, *, optional: bool = False) -> dict:
    """``raw`` (a body with Content-Type ``mimetype``) as a JSON object; 400 otherwise.

    The rules of every route's body, without Flask: the proof route's WSGI fast path
    (``service.http.fast``) calls it too."""
    if not raw.strip():
        if optional:
            return {}
        raise InvalidRequest("a JSON object body is required")
    if mimetype != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    try:
        body = json.loads(raw, object_pairs_hook=_unique_names, parse_constant=_no_constant)
    except _RepeatedName:
        raise InvalidRequest("the body repeats a member name in one object") from None
    except _NotANumber:
        raise InvalidRequest("the body holds NaN or Infinity, which JSON has not") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    # In a UTF-8 body a NUL or a lone surrogate reaches a string only as a \\u escape (raw
    # control characters and invalid UTF-8 fail above); UTF-16 and UTF-32 bodies, which
    # json.loads also reads, are full of zero bytes. Any other body needs no walk: the hot
    # path's case.
    if (b"\\u" in raw or b"\x00" in raw) and not _all_storable(body):
        raise InvalidRequest("the body holds a U+0000 or an unpaired surrogate in a string")
    return body


def parse(model: type[M], *, optional: bool = False) -> M:
    """Validate the JSON body against ``model``; field errors become one 400 message.

    The message names fields and problems, never the submitted values (no secret echoes).
    """
    return validate(model, json_object(optional=optional))


def validate(model: type[M], body: dict) -> M:
    """``body`` as ``model``; field errors become one 400 message (values never echoed)."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidRequest("; ".join(problems[:5])) from None
