"""Request body parsing: JSON objects only, validated by pydantic models."""

from __future__ import annotations

import json
from typing import TypeVar

from flask import request
from pydantic import BaseModel, ValidationError

from service.domain.errors import InvalidRequest

M = TypeVar("M", bound=BaseModel)


def json_object(*, optional: bool = False) -> dict:
    """The request body as a JSON object; 400 ``invalid_request`` for anything else."""
    raw = request.get_data(cache=True)
    if not raw.strip():
        if optional:
            return {}
        raise InvalidRequest("a JSON object body is required")
    if request.mimetype != "application/json":
        raise InvalidRequest("Content-Type must be application/json")
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    return body


def parse(model: type[M], *, optional: bool = False) -> M:
    """Validate the JSON body against ``model``; field errors become one 400 message.

    The message names fields and problems, never the submitted values (no secret echoes).
    """
    body = json_object(optional=optional)
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            where = ".".join(str(p) for p in err["loc"]) or "body"
            problems.append(f"{where}: {err['msg']}")
        raise InvalidRequest("; ".join(problems[:5])) from None
