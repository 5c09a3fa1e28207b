"""What the portal itself keeps: its accounts (phone → idv subject id) and the TOTP set-ups that
wait for their first code. idv holds the factors; the portal never stores a factor's secret
beyond the minutes a set-up is on screen."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idv_client import EnrolledFactor


@dataclass
class Users:
    """The portal's own accounts: phone → subject id (idv holds the factors)."""

    path: Path | None = None
    by_phone: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        if self.path and self.path.exists():
            self.by_phone = json.loads(self.path.read_text())

    def get(self, phone: str) -> dict[str, Any] | None:
        """The account of ``phone`` (as typed, spaces removed), if any."""
        return self.by_phone.get(phone)

    def by_subject(self, subject_id: str) -> dict[str, Any] | None:
        """The account whose idv subject is ``subject_id``, if any."""
        return next((u for u in self.by_phone.values() if u["subject_id"] == subject_id), None)

    def update(self, subject_id: str, **values: Any) -> None:
        """Set (or, with ``None``, drop) fields of the account of ``subject_id``."""
        user = self.by_subject(subject_id)
        if user is None:
            return
        record = {k: v for k, v in {**user, **values}.items() if v is not None}
        self.save(user["phone"], record)

    def save(self, phone: str, record: dict[str, Any]) -> None:
        """Create or replace the account of ``phone`` (and write the file, if there is one)."""
        with self.lock:
            self.by_phone[phone] = record
            if self.path:
                self.path.write_text(json.dumps(self.by_phone))


@dataclass
class PendingTotp:
    """TOTP set-ups shown but not yet activated, per subject, in this process only.

    The enrolment spent the ``enroll_factor`` unlock, so a mistyped first code must not throw the
    set-up away: the page shows the same QR code again until a code matches. The secret stays
    server side (a Flask session is a signed, not encrypted, cookie) and is forgotten after
    ``ttl`` seconds or once the factor is active.
    """

    ttl: float = 15 * 60
    clock: Any = time.monotonic
    _items: dict[str, tuple[float, EnrolledFactor]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, subject_id: str, enrolled: EnrolledFactor) -> None:
        """Keep ``enrolled`` (with its secret) for the subject's next activation attempts."""
        with self._lock:
            self._items[subject_id] = (self.clock() + self.ttl, enrolled)

    def get(self, subject_id: str) -> EnrolledFactor | None:
        """The subject's set-up in progress, or None (never had one, done, or timed out)."""
        with self._lock:
            now = self.clock()
            for key in [k for k, (until, _) in self._items.items() if until <= now]:
                del self._items[key]
            item = self._items.get(subject_id)
            return item[1] if item else None

    def drop(self, subject_id: str) -> None:
        """Forget the subject's set-up (activated, replaced or voided by idv)."""
        with self._lock:
            self._items.pop(subject_id, None)


@dataclass
class Portal:
    """What every route of the portal uses: idv clients, accounts, set-ups in progress."""

    idv: Any  # idv_client.IdvClient with the verify scope
    carrier: Any | None  # an IdvClient with the carrier scope (developer panel), or None
    users: Users
    pending_totp: PendingTotp
    sms_path: Path | None = None
    branch: Any | None = None  # branch.DemoBranch: the demo's stand-in for the tenant's face check
