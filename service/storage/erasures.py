"""Phones erased from a tenant's subjects, kept 30 days by keyed hash only (issue 19, hole 2).

Erasing a subject and creating it again with the same phone must not hand the new subject the
onboarding exemption (the no-PIN bootstrap): that wiped every protection of the old account.
Only the phone's keyed hash, the tenant and the time are kept (PIPL art. 6, minimum necessary);
rows older than ``KEPT`` are ignored and deleted whenever a phone is erased or a subject created.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import Connection, delete, insert, select

from service.storage.tables import erased_phones

KEPT = timedelta(days=30)


def remember(conn: Connection, client_id: str, phone_hash: str | None, now: datetime) -> None:
    """Record that ``client_id`` erased a subject holding this phone (and forget old rows)."""
    forget_old(conn, now)
    if phone_hash is not None:
        conn.execute(
            insert(erased_phones).values(client_id=client_id, phone_hash=phone_hash, erased_at=now)
        )


def recently_erased(
    conn: Connection, client_id: str, phone_hashes: Sequence[str], now: datetime
) -> bool:
    """Whether this tenant erased a subject with this phone less than 30 days ago
    (``phone_hashes``: the phone's keyed hash under every crypto profile in use)."""
    row = conn.execute(
        select(erased_phones.c.id)
        .where(
            erased_phones.c.client_id == client_id,
            erased_phones.c.phone_hash.in_(list(phone_hashes)),
            erased_phones.c.erased_at > now - KEPT,
        )
        .limit(1)
    ).first()
    return row is not None


def forget_old(conn: Connection, now: datetime) -> None:
    """Delete rows past ``KEPT`` (PIPL art. 19: no longer than the purpose needs)."""
    conn.execute(delete(erased_phones).where(erased_phones.c.erased_at <= now - KEPT))
