"""Compact JSON text from an encoder built once.

``json.dumps`` with any argument besides the value (``separators``, ``sort_keys``) builds a
``JSONEncoder`` per call, and ``JSONEncoder.encode`` builds its C encoder per call too. The hot
path writes five such texts per proof (the audit entry's detail and hash input, the assertion's
claims, the answer); ``compact`` builds the C encoder once and reuses it. It is the encoder
``json.dumps`` itself uses (``json.encoder.c_make_encoder``), given the same arguments, so the
text is the same, byte for byte (tests/unit/test_jsontext.py). ``check_circular`` is off: a
value that contains itself is refused with ``RecursionError`` rather than ``ValueError``; idv
never writes one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from typing import Any

Dumps = Callable[[Any], str]


def compact(
    *,
    sort_keys: bool = False,
    ensure_ascii: bool = True,
    default: Callable[[Any], Any] | None = None,
) -> Dumps:
    """``json.dumps(value, separators=(",", ":"), sort_keys=..., ensure_ascii=...,
    default=...)`` as a function of ``value`` alone."""
    reference = json.JSONEncoder(
        separators=(",", ":"),
        sort_keys=sort_keys,
        ensure_ascii=ensure_ascii,
        default=default,
        check_circular=False,
    )
    make = getattr(_encoder, "c_make_encoder", None)
    if make is None:  # a Python built without the C accelerator: the pure-Python encoder
        return reference.encode
    strings = _encoder.encode_basestring_ascii if ensure_ascii else _encoder.encode_basestring
    encode = make(
        None,  # markers: no circular check
        reference.default,
        strings,
        None,  # indent
        ":",
        ",",
        sort_keys,
        False,  # skipkeys
        True,  # allow_nan, as json.dumps
    )

    def dumps(value: Any) -> str:
        return "".join(encode(value, 0))

    return dumps
