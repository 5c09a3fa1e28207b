"""The audit trail: one row per decision or change, append-only and tamper-evident (T3, T4).

Subjects appear only pseudonymised (a keyed hash), never with a phone number, code or secret;
``append`` refuses a ``detail`` whose keys name one. Client addresses are kept truncated to
their /24 (IPv4) or /48 (IPv6) network (``service.domain.addresses``): an erased subject's full
address stays nowhere (PIPL art. 47, 51).

**A chain per writer.** Every entry belongs to a writer and carries its sequence number in
that writer's chain, the hash of the writer's previous entry, its own hash (SHA-256 over a
canonical serialisation of every field) and a MAC (HMAC-SHA256 of the hash under a key derived
from the key ring). ``UNIQUE(writer, seq)`` means a chain can never fork: two appends with the
same ``seq`` cannot both commit.

The writer is the *database connection*: a random id is stored in the pooled DBAPI connection's
``info`` the first time it appends, and lives as long as that connection (a connection that is
closed simply leaves its chain closed). A connection runs one transaction at a time, so:

- the connection remembers the head it wrote last, and the next append advances the stored
  head with ``UPDATE audit_heads ... WHERE writer = ? AND seq = <remembered> AND hash = ...``
  inside the caller's transaction: if a rolled-back transaction left the memory ahead of the
  database, that UPDATE matches nothing and the last entry is read back with
  ``SELECT ... WHERE writer = ? ORDER BY seq DESC LIMIT 1`` instead, so a rollback never
  corrupts the chain;
- no two transactions ever extend the same chain at once, so there is no lock and no unique
  violation to retry, and different connections, threads, processes and instances never wait
  on each other for the audit trail (no global lock; STYLE.md "The hot path").

(A writer per process would make two threads' transactions race for the same ``seq`` on
PostgreSQL, and a writer per thread deadlocks if one thread holds two write transactions.)

``audit_heads`` keeps each writer's last ``(seq, hash)`` with its own MAC, updated in the same
transaction, so deleting entries from the end of a chain is detected too.

**Anchors: the chains vouch for each other.** A head row can be deleted together with its whole
chain, or put back from an earlier copy after the entries behind it are deleted, and the chain
alone cannot tell. So a writer's entry now and then carries ``anchors``: the ``(writer, seq,
hash)`` of the other chains' heads that moved since its last anchor (its first entry anchors the
heads that moved in the last ``ANCHOR_LOOKBACK``; then every ``ANCHOR_INTERVAL`` of its own
clock). The anchors are part of the entry's hash, so they are sealed by its MAC like every other
field. ``verify_chain`` then requires every anchored entry to be there with that hash: a chain
deleted with its head, a head row deleted or put back after truncating (the writer then carries
on from the entry before the gap), or entries moved across chains are all named. The cost is one
read of ``audit_heads`` (only heads that moved lately: ``at`` is set by the UPDATE every append
already makes) per writer and interval; the append path stays two statements otherwise, with no
lock shared by writers. What anchors cannot show: a chain deleted before any other writer
anchored it (at most ``ANCHOR_INTERVAL`` of one writer's activity while others append), or
every chain rolled back consistently to an earlier copy of the database; export the trail
regularly (``idv audit export``) to keep a copy out of the database's reach.

A verified anchor ``(w, k, h)`` is also what a pruned prefix can later be checked against: a
chain whose first surviving entry is ``k + 1`` with ``prev_hash`` ``h`` continues exactly what
that anchor saw.

The row ``id`` is a surrogate key, not evidence: order within a chain is ``seq`` and time is
``at``, both sealed by the hash.
"""

from __future__ import annotations

import functools
import hmac
import json
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from service.crypto import profile as crypto_profile
from service.domain import jsontext
from service.domain.addresses import truncated_network
from service.domain.clock import as_utc
from service.storage.lean import Lean
from service.storage.tables import audit_heads, audit_log

GENESIS = "0" * 64
HASH_VERSION = "idv-audit-v1"
HASH_VERSION_ANCHORED = "idv-audit-v2"  # an entry that carries anchors (hashes one field more)
# How often a writer anchors the other chains (by the ``now`` of its appends), how far back a
# new writer looks, and the slack for clocks of other instances and transactions that commit
# after their ``now``.
ANCHOR_INTERVAL = timedelta(seconds=30)
ANCHOR_LOOKBACK = timedelta(minutes=10)
ANCHOR_SLACK = timedelta(minutes=5)
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"code", "secret", "phone", "pin", "otp", "password", "signature"}
)

_MAC_KEY: bytes | None = None
# IDV_CRYPTO_PROFILE: "gm" hashes new entries with SM3 and seals them with HMAC-SM3 (GB/T 39786
# §8.4 log integrity); entries of either profile verify, so a chain may hold both.
_PROFILE = crypto_profile.INTL


def configure(mac_key: bytes | Mapping[str, bytes], profile: str = crypto_profile.INTL) -> None:
    """Set the key entries are sealed with: ``ctx.keys.derived_keys("audit-mac")`` (one key
    per profile) or one key for every profile, and the profile new entries are written under."""
    global _MAC_KEY, _PROFILE
    keys = _keys_by_profile(mac_key)
    if any(len(k) < 32 for k in keys.values()):
        raise ValueError("the audit MAC key must be at least 32 bytes")
    _MAC_KEY, _PROFILE = keys[profile], profile


def _keys_by_profile(mac_key: bytes | Mapping[str, bytes]) -> dict[str, bytes]:
    if isinstance(mac_key, bytes):
        return dict.fromkeys(crypto_profile.PROFILES, mac_key)
    return dict(mac_key)


# -- canonical form ---------------------------------------------------------------------
def canonical_at(value: datetime) -> str:
    """The timestamp as hashed: UTC, microseconds, ``+00:00`` (same on SQLite and PostgreSQL)."""
    return as_utc(value).isoformat(timespec="microseconds")


# json.dumps(..., sort_keys=True, separators=(",", ":")) and (..., separators=(",", ":"),
# ensure_ascii=True), each built once (jsontext: the same text).
_DETAIL_JSON = jsontext.compact(sort_keys=True)
_FIELDS_JSON = jsontext.compact(ensure_ascii=True)


def canonical_detail(detail: dict[str, Any] | None) -> str:
    """The ``detail`` column's text: sorted keys, no spaces."""
    return _DETAIL_JSON(detail or {})


def entry_hash(entry: dict[str, Any], profile: str | None = None) -> str:
    """SHA-256 (SM3 under ``gm``), hex, over a canonical serialisation of every field of an
    entry but its id.

    ``anchors`` is hashed when present (as version 2), so entries without it hash as they
    always did and an entry whose anchors are removed or added no longer matches its hash.
    """
    anchors = entry.get("anchors")
    fields = [
        HASH_VERSION if anchors is None else HASH_VERSION_ANCHORED,
        entry["writer"],
        int(entry["seq"]),
        entry["prev_hash"],
        canonical_at(entry["at"]),
        entry["client_id"],
        entry["operator"],
        entry["event"],
        entry["subject_ref"],
        entry["outcome"],
        entry["detail"],
        entry["ip"],
        *(() if anchors is None else (anchors,)),
    ]
    data = _FIELDS_JSON(fields)
    return crypto_profile.plain_hash(profile or _PROFILE, data.encode())


def entry_mac(key: bytes, hash_hex: str, profile: str | None = None) -> str:
    """HMAC-SHA256 (HMAC-SM3 under ``gm``) of an entry's hash."""
    msg = f"entry\x00{hash_hex}".encode()
    return crypto_profile.keyed_hash(profile or _PROFILE, key, msg).hex()


def head_mac(key: bytes, writer: str, seq: int, hash_hex: str, profile: str | None = None) -> str:
    """HMAC-SHA256 (HMAC-SM3 under ``gm``) of a chain head (domain-separated from entries)."""
    msg = f"head\x00{writer}\x00{int(seq)}\x00{hash_hex}".encode()
    return crypto_profile.keyed_hash(profile or _PROFILE, key, msg).hex()


def _profile_of(entry: dict[str, Any]) -> str | None:
    """The profile an entry was hashed under (the configured one is tried first)."""
    order = sorted(crypto_profile.PROFILES, key=lambda p: p != _PROFILE)
    return next((p for p in order if entry_hash(entry, p) == entry["hash"]), None)


# -- writing ----------------------------------------------------------------------------
@functools.lru_cache(maxsize=1024)
def _names_a_secret(key: str) -> bool:
    """Whether a detail key's words include a forbidden one (the same few keys recur: cached)."""
    return bool(set(re.split(r"[^a-z0-9]+", key.lower())) & FORBIDDEN_DETAIL_KEYS)


def _check_detail(value: Any, path: str = "detail") -> None:
    """Refuse keys that name a secret, code or phone number, at any depth (T4)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if _names_a_secret(str(key)):
                raise ValueError(f"audit {path} must not carry {key!r} (secrets, codes, phones)")
            if isinstance(inner, dict | list | tuple):
                _check_detail(inner, f"{path}.{key}")
    elif isinstance(value, list | tuple):
        for inner in value:
            _check_detail(inner, path)


def _writer_id(conn: Connection) -> str:
    """This connection's writer id, created at its first append (and again after a fork)."""
    info = conn.info
    owner = info.get("idv_audit_writer")
    if owner is None or owner[0] != os.getpid():
        owner = (os.getpid(), f"w-{secrets.token_hex(8)}")
        info["idv_audit_writer"] = owner
        info.pop("idv_audit_head", None)  # a new chain: nothing remembered
        info.pop("idv_audit_anchor", None)
    return owner[1]


_ENTRY_COLUMNS = [c for c in audit_log.c if c.name != "id"]
_INSERT_ENTRY = Lean(audit_log.insert().values({c.name: bindparam(c.name) for c in _ENTRY_COLUMNS}))
_UPDATE_HEAD = (
    audit_heads.update()
    .where(audit_heads.c.writer == bindparam("b_writer"))
    .values(
        seq=bindparam("b_seq"), hash=bindparam("b_hash"), mac=bindparam("b_mac"), at=bindparam("at")
    )
)
# Move the head on only if it is where this connection last left it: one statement both checks
# the remembered head and advances it.
_ADVANCE = _UPDATE_HEAD.where(
    audit_heads.c.seq == bindparam("b_old_seq"), audit_heads.c.hash == bindparam("b_old_hash")
)
_ADVANCE_HEAD = Lean(_ADVANCE)
# PostgreSQL: the same check-and-advance and the INSERT in ONE statement (a data-modifying CTE;
# SQLite has none): the entry is inserted only if the head moved, one round trip instead of two.
_HEAD_MOVED = _ADVANCE.returning(audit_heads.c.writer).cte("head_moved")
_ADVANCE_AND_INSERT = Lean(
    audit_log.insert()
    .from_select(
        [c.name for c in _ENTRY_COLUMNS],
        select(*(bindparam(c.name, type_=c.type) for c in _ENTRY_COLUMNS)).select_from(_HEAD_MOVED),
    )
    .add_cte(_HEAD_MOVED)
)
_LAST_OF_WRITER = (
    select(audit_log.c.seq, audit_log.c.hash)
    .where(audit_log.c.writer == bindparam("writer"))
    .order_by(audit_log.c.seq.desc())
    .limit(1)
)
_HEADS_MOVED_SINCE = (
    select(audit_heads.c.writer, audit_heads.c.seq, audit_heads.c.hash)
    .where(audit_heads.c.at >= bindparam("since"), audit_heads.c.writer != bindparam("writer"))
    .order_by(audit_heads.c.writer)
)


class _Anchoring:
    """When this connection anchored last, in which of its entries, and the heads it saw."""

    __slots__ = ("at", "seq", "seen")

    def __init__(self, at: datetime, seq: int, seen: dict[str, int]) -> None:
        self.at, self.seq, self.seen = at, seq, seen


def _anchors(conn: Connection, writer: str, now: datetime) -> tuple[str | None, _Anchoring | None]:
    """The anchors this append carries (None: none due) and the anchoring state it leaves.

    Due at a writer's first append and then every ``ANCHOR_INTERVAL``; lists the other heads
    that moved since the last anchor and that it has not anchored at their current ``seq``.
    """
    last: _Anchoring | None = conn.info.get("idv_audit_anchor")
    if last is not None and timedelta(0) <= now - last.at < ANCHOR_INTERVAL:
        return None, None
    since = min(last.at, now) - ANCHOR_SLACK if last is not None else now - ANCHOR_LOOKBACK
    seen = last.seen if last is not None else {}
    rows = conn.execute(_HEADS_MOVED_SINCE, {"since": since, "writer": writer}).all()
    moved = [[r.writer, int(r.seq), r.hash] for r in rows if seen.get(r.writer) != r.seq]
    state = _Anchoring(now, 0, {r.writer: int(r.seq) for r in rows})
    return (json.dumps(moved, separators=(",", ":")) if moved else None), state


def append(
    conn: Connection,
    *,
    event: str,
    outcome: str,
    now: datetime,
    client_id: str | None = None,
    subject_ref: str | None = None,
    operator: str | None = None,
    ip: str | None = None,
    detail: dict[str, Any] | None = None,
) -> None:
    """Append an entry in the caller's transaction (it commits or rolls back with the change).

    Two statements in the steady state: the connection remembers the head it wrote last, and
    one conditional UPDATE both checks that the stored head is still that one and advances it.
    When it is not (the transaction that wrote the remembered head rolled back, or this is the
    connection's first append) the last entry is read back instead, as a third statement. Every
    ``ANCHOR_INTERVAL`` one more statement reads the heads to anchor (see the module's doc).
    """
    key = _MAC_KEY
    if key is None:
        raise RuntimeError("audit.configure(mac_key) has not been called")
    _check_detail(detail)
    writer = _writer_id(conn)
    remembered: tuple[int, str] | None = conn.info.get("idv_audit_head")
    at = as_utc(now)  # SQLite drops the offset: store UTC so what we hash reads back
    anchors, anchoring = _anchors(conn, writer, at)
    entry: dict[str, Any] = {
        "writer": writer,
        "at": at,
        "client_id": client_id,
        "operator": operator,
        "event": event,
        "subject_ref": subject_ref,
        "outcome": outcome,
        "detail": canonical_detail(detail),
        "ip": truncated_network(ip),  # never the host: it would outlive an erasure
        "anchors": anchors,
    }
    if remembered is not None:
        seq, digest, mac = _seal(entry, key, remembered[0] + 1, remembered[1])
        head = {
            "b_writer": writer,
            "b_old_seq": remembered[0],
            "b_old_hash": remembered[1],
            "b_seq": seq,
            "b_hash": digest,
            "b_mac": mac,
            "at": at,
        }
        row = {**entry, "hash": digest, "mac": entry_mac(key, digest)}
        if conn.dialect.name == "postgresql":
            done = _ADVANCE_AND_INSERT.rowcount(conn, {**head, **row}) == 1
        else:
            done = _ADVANCE_HEAD.rowcount(conn, head) == 1
            if done:
                _INSERT_ENTRY.rowcount(conn, row)
        if done:
            _remember(conn, seq, digest, anchoring)
            return
    last = conn.execute(_LAST_OF_WRITER, {"writer": writer}).first()
    kept: _Anchoring | None = conn.info.get("idv_audit_anchor")
    if anchoring is None and kept is not None and kept.seq > (last.seq if last else 0):
        # The entry that carried the last anchors was rolled back: anchor again, now.
        del conn.info["idv_audit_anchor"]
        entry["anchors"], anchoring = _anchors(conn, writer, at)
    seq, digest, mac = _seal(entry, key, *((last.seq + 1, last.hash) if last else (1, GENESIS)))
    _INSERT_ENTRY.rowcount(conn, {**entry, "hash": digest, "mac": entry_mac(key, digest)})
    values = {"b_writer": writer, "b_seq": seq, "b_hash": digest, "b_mac": mac, "at": at}
    if not conn.execute(_UPDATE_HEAD, values).rowcount:
        conn.execute(
            audit_heads.insert().values(writer=writer, seq=seq, hash=digest, mac=mac, at=at)
        )
    _remember(conn, seq, digest, anchoring)


def _remember(conn: Connection, seq: int, digest: str, anchoring: _Anchoring | None) -> None:
    """Keep the head this connection wrote, and when it anchored, for its next append."""
    conn.info["idv_audit_head"] = (seq, digest)
    if anchoring is not None:
        anchoring.seq = seq
        conn.info["idv_audit_anchor"] = anchoring


def _seal(entry: dict[str, Any], key: bytes, seq: int, prev_hash: str) -> tuple[int, str, str]:
    """Put ``seq`` and ``prev_hash`` into ``entry``; return (seq, its hash, the head's MAC)."""
    entry["seq"], entry["prev_hash"] = seq, prev_hash
    digest = entry_hash(entry)
    return seq, digest, head_mac(key, entry["writer"], seq, digest)


# -- reading ----------------------------------------------------------------------------
def _label(row: Any) -> str:
    return f"entry {row.id} (writer {row.writer}, seq {row.seq})"


def _entry_problem(row: Any, keys: Mapping[str, bytes]) -> str | None:
    """What is wrong with one entry taken alone (its hash and MAC, under the profile it was
    written in), or None."""
    label = _label(row)
    profile = _profile_of(dict(row._mapping))
    if profile is None:
        return f"{label}: hash mismatch (edited or moved)"
    if not row.mac:
        return f"{label}: not sealed (written before the audit chain)"
    if not hmac.compare_digest(entry_mac(keys[profile], row.hash, profile), row.mac):
        return f"{label}: MAC mismatch (forged, or another key)"
    return None


def _anchored(
    conn: Connection, keys: Mapping[str, bytes]
) -> dict[tuple[str, int], tuple[str, str]]:
    """Every ``(writer, seq) -> (hash, label of the entry that vouched)`` of the sealed anchors.

    Only anchors in entries whose hash and MAC hold count (the walk reports the others).
    """
    found: dict[tuple[str, int], tuple[str, str]] = {}
    query = select(audit_log).where(audit_log.c.anchors.is_not(None)).order_by(audit_log.c.id)
    for row in conn.execute(query.execution_options(yield_per=1000)):
        if _entry_problem(row, keys) is None:
            for writer, seq, digest in json.loads(row.anchors):
                found.setdefault((writer, int(seq)), (digest, _label(row)))
    return found


def verify_chain(conn: Connection, mac_key: bytes | Mapping[str, bytes]) -> list[str]:
    """Walk every chain; return the problems found, first entry first (empty: intact).

    Besides each chain's own links and head, every anchored ``(writer, seq, hash)`` must be
    there (module doc): a chain deleted with its head, or truncated behind a head row deleted
    or put back, shows as an anchored entry that is missing or different.

    Run it in one snapshot (the CLI uses REPEATABLE READ on PostgreSQL; a SQLite transaction
    is one) so heads and entries are read at the same moment.
    """
    from service.storage.audit_prune import checkpoints

    keys = _keys_by_profile(mac_key)
    heads = {h.writer: h for h in conn.execute(select(audit_heads))}
    anchored = _anchored(conn, keys)
    # A pruned chain starts after its sealed checkpoint (service.storage.audit_prune).
    pruned, bad_checkpoints = checkpoints(conn, keys)
    problems: list[tuple[int, str]] = [(-1, message) for message in bad_checkpoints]
    seen: set[str] = set()
    writer: str | None = None
    expected_seq, prev_hash, last = 1, GENESIS, None

    def close_chain() -> None:
        if writer is None or last is None:
            return
        head = heads.get(writer)
        if head is None:
            problems.append((last.id, f"writer {writer}: head row missing (heads deleted)"))
        elif head.seq > last.seq:
            problems.append(
                (
                    last.id,
                    f"writer {writer}: head records seq {head.seq} but the chain ends at "
                    f"{_label(last)} (entries deleted at the end)",
                )
            )
        elif head.seq < last.seq:
            problems.append(
                (last.id, f"writer {writer}: head records seq {head.seq}, behind {_label(last)}")
            )
        elif head.hash != last.hash:
            problems.append((last.id, f"writer {writer}: head hash does not match {_label(last)}"))

    # yield_per on the statement, not the connection: Connection.execution_options changes the
    # caller's connection in place, and a later UPDATE on it failed on PostgreSQL.
    rows = conn.execute(
        select(audit_log)
        .order_by(audit_log.c.writer, audit_log.c.seq)
        .execution_options(yield_per=1000)
    )
    for row in rows:
        if row.writer != writer:
            close_chain()
            writer, last = row.writer, None
            expected_seq, prev_hash = _chain_start(pruned.get(writer))
            seen.add(writer)
        label = _label(row)
        problem = _entry_problem(row, keys)
        if problem is not None:
            problems.append((row.id, problem))
        if row.seq != expected_seq:
            what = "at the start" if expected_seq == 1 else f"after seq {expected_seq - 1}"
            problems.append((row.id, f"{label}: seq gap, entries deleted {what}"))
        elif row.prev_hash != prev_hash:
            problems.append(
                (row.id, f"{label}: prev_hash mismatch (entries deleted, replaced or reordered)")
            )
        vouched = anchored.pop((row.writer, row.seq), None)
        if vouched is not None and vouched[0] != row.hash:
            problems.append(
                (row.id, f"{label}: differs from what {vouched[1]} anchored (chain rewritten)")
            )
        expected_seq, prev_hash, last = row.seq + 1, row.hash, row
    close_chain()

    for name, head in heads.items():
        if not any(
            hmac.compare_digest(head_mac(keys[p], name, head.seq, head.hash, p), head.mac)
            for p in crypto_profile.PROFILES
        ):
            problems.append((-1, f"writer {name}: head MAC mismatch (forged head)"))
        if name not in seen and pruned.get(name) != (head.seq, head.hash):
            problems.append((-1, f"writer {name}: head records seq {head.seq}, no entries left"))
    problems.extend((-1, message) for message in _pruned_anchors(anchored, pruned))
    problems.extend((-1, message) for message in _missing_anchored(anchored, seen))
    problems.sort(key=lambda p: (p[0] < 0, p[0]))
    return [message for _, message in problems]


def _chain_start(checkpoint: tuple[int, str] | None) -> tuple[int, str]:
    """The (seq, prev_hash) a chain's first surviving entry must have."""
    return (1, GENESIS) if checkpoint is None else (checkpoint[0] + 1, checkpoint[1])


def _pruned_anchors(
    anchored: dict[tuple[str, int], tuple[str, str]], pruned: dict[str, tuple[int, str]]
) -> list[str]:
    """Take out of ``anchored`` the anchors that point into pruned prefixes; one that points at
    the checkpointed entry itself must match its hash."""
    messages = []
    for (writer, seq), (digest, by) in list(anchored.items()):
        checkpoint = pruned.get(writer)
        if checkpoint is None or seq > checkpoint[0]:
            continue
        del anchored[(writer, seq)]
        if seq == checkpoint[0] and digest != checkpoint[1]:
            messages.append(f"writer {writer}: checkpoint differs from what {by} anchored")
    return messages


def _missing_anchored(
    anchored: dict[tuple[str, int], tuple[str, str]], seen: set[str]
) -> list[str]:
    """One problem per chain with anchored entries that the walk did not find (its highest)."""
    highest: dict[str, tuple[int, str]] = {}
    for (writer, seq), (_digest, by) in anchored.items():
        if seq > highest.get(writer, (0, ""))[0]:
            highest[writer] = (seq, by)
    messages = []
    for writer, (seq, by) in sorted(highest.items()):
        if writer in seen:
            what = "missing (chain truncated, its head row deleted or put back)"
        else:
            what = "and its whole chain are missing (chain deleted with its head row)"
        messages.append(f"writer {writer}: seq {seq}, anchored by {by}, {what}")
    return messages


def stats(conn: Connection) -> tuple[int, int]:
    """(entries, chains)."""
    row = conn.execute(select(func.count(), func.count(func.distinct(audit_log.c.writer)))).one()
    return int(row[0]), int(row[1])


def export(conn: Connection, since: datetime | None = None) -> Iterator[dict[str, Any]]:
    """Entries from ``since`` (inclusive) in time order, as JSON-ready dicts with their seals."""
    query = select(audit_log).order_by(audit_log.c.at, audit_log.c.id)
    if since is not None:
        query = query.where(audit_log.c.at >= as_utc(since))
    for row in conn.execute(query.execution_options(yield_per=1000)):
        item = dict(row._mapping)
        item["at"] = canonical_at(row.at)
        item["detail"] = json.loads(row.detail)
        yield item


def entries(conn: Connection, since: datetime | None = None) -> list[dict[str, Any]]:
    """Audit entries in order, optionally from ``since``."""
    query = select(audit_log).order_by(audit_log.c.id)
    if since is not None:
        query = query.where(audit_log.c.at >= as_utc(since))
    return [dict(r._mapping) for r in conn.execute(query)]
