"""What a factor's enrolment prepares before its transaction (issue 22: a factor is one module;
its use-case glue plugs into ``service.usecases.factors`` through this)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection

from service.storage.subjects import SubjectRecord


@dataclass
class Prepared:
    """A factor's enrolment, prepared before the transaction (argon2 runs outside one)."""

    secret: str  # stored encrypted in the factor row
    status: str = "active"
    alg: str | None = None
    # In the transaction, after the row is written (recovery codes' digests, a challenge).
    after_insert: Callable[[Connection, SubjectRecord], None] | None = None
    # After the commit: what the answer shows.
    shown: Callable[[SubjectRecord], dict[str, Any]] | None = None
