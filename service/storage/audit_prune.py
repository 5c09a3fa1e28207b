"""Pruning the audit trail past its retention while every chain stays verifiable (issue 23).

A chain is pruned from its start only: the oldest entries of one writer go, in batches of a
few hundred, each batch one short transaction that also records the writer's *checkpoint*:
the ``(seq, hash)`` of the last entry removed, sealed with a MAC under the audit key
(domain-separated from entries and heads). ``verify_chain`` then starts that chain at
``seq + 1`` with ``prev_hash`` equal to the checkpoint's hash, exactly as it would have
walked on from the removed entry, so:

- an edit, a deletion inside the kept range or a reordering still breaks a link;
- deleting kept entries from the start shows as a gap after the checkpoint; a checkpoint
  moved forward needs the key; an older checkpoint put back leaves a gap;
- a chain removed whole (entries, head and checkpoint) is still named by the other chains'
  anchors (``service.storage.audit``), and a head left without entries must match its
  checkpoint.

Cybersecurity Law art. 21 (logs at least six months; the purge refuses less) and PIPL art. 19.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Connection, delete, insert, select

from service.crypto import profile as crypto_profile
from service.domain.clock import as_utc
from service.storage.tables import audit_checkpoints, audit_log


def checkpoint_mac(key: bytes, writer: str, seq: int, hash_hex: str, profile: str) -> str:
    """HMAC of a checkpoint (domain-separated from entries and heads)."""
    msg = f"checkpoint\x00{writer}\x00{int(seq)}\x00{hash_hex}".encode()
    return crypto_profile.keyed_hash(profile, key, msg).hex()


def checkpoints(
    conn: Connection, keys: Mapping[str, bytes]
) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """Each writer's sealed checkpoint ``{writer: (seq, hash)}``, and the problems of those whose
    MAC holds under no profile (they are left out, so their chain shows a gap)."""
    found: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    for row in conn.execute(select(audit_checkpoints)):
        if any(
            hmac.compare_digest(checkpoint_mac(k, row.writer, row.seq, row.hash, p), row.mac)
            for p, k in keys.items()
        ):
            found[row.writer] = (int(row.seq), row.hash)
        else:
            problems.append(f"writer {row.writer}: checkpoint MAC mismatch (forged checkpoint)")
    return found, problems


def old_writers(conn: Connection, cutoff: datetime) -> list[str]:
    """The writers with entries older than ``cutoff``."""
    query = select(audit_log.c.writer).where(audit_log.c.at < as_utc(cutoff)).distinct()
    return sorted(r.writer for r in conn.execute(query))


def prune_batch(
    conn: Connection,
    writer: str,
    cutoff: datetime,
    key: bytes,
    profile: str,
    now: datetime,
    limit: int,
) -> int:
    """Remove up to ``limit`` of ``writer``'s oldest entries older than ``cutoff`` (a prefix of
    the chain: it stops at the first entry that is not), and move the checkpoint past them, in
    the caller's transaction. Returns how many entries went."""
    rows = conn.execute(
        select(audit_log.c.seq, audit_log.c.hash, audit_log.c.at)
        .where(audit_log.c.writer == writer)
        .order_by(audit_log.c.seq)
        .limit(limit)
    ).all()
    cut = as_utc(cutoff)
    prefix = []
    for row in rows:
        if as_utc(row.at) >= cut:
            break
        prefix.append(row)
    if not prefix:
        return 0
    last = prefix[-1]
    conn.execute(delete(audit_log).where(audit_log.c.writer == writer, audit_log.c.seq <= last.seq))
    conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.writer == writer))
    conn.execute(
        insert(audit_checkpoints).values(
            writer=writer,
            seq=last.seq,
            hash=last.hash,
            mac=checkpoint_mac(key, writer, last.seq, last.hash, profile),
            at=as_utc(now),
        )
    )
    return len(prefix)
