"""Subject records: one per (client, subject id); the phone encrypted, a keyed hash beside."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import (
    Connection,
    Integer,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    type_coerce,
    union_all,
    update,
)

from service.domain.clock import as_utc
from service.factors.registry import SINGLE_USE_SETS
from service.storage import clients as client_store
from service.storage.clients import ClientRecord
from service.storage.factors import FactorRecord
from service.storage.lean import Lean
from service.storage.tables import (
    CARRIER_EVENT_TYPES,
    TS,
    attestation_keys,
    carrier_events,
    clients,
    factors,
    recovery_codes,
    subject_events,
    subjects,
    verifications,
)


@dataclass(frozen=True)
class SubjectRecord:
    """A subject as stored; ``phone_ct`` is ciphertext."""

    pk: int
    client_id: str
    subject_id: str
    phone_ct: str | None
    phone_hash: str | None
    phone_set_at: datetime | None
    locked_until: datetime | None
    created_at: datetime


def record_of(row, prefix: str = "") -> SubjectRecord:  # type: ignore[no-untyped-def]
    """A subject from a row; ``prefix`` when its columns are labelled (``s_pk``, ...)."""
    phone_set_at = getattr(row, prefix + "phone_set_at")
    locked_until = getattr(row, prefix + "locked_until")
    return SubjectRecord(
        pk=getattr(row, prefix + "pk"),
        client_id=getattr(row, prefix + "client_id"),
        subject_id=getattr(row, prefix + "subject_id"),
        phone_ct=getattr(row, prefix + "phone_ct"),
        phone_hash=getattr(row, prefix + "phone_hash"),
        phone_set_at=as_utc(phone_set_at) if phone_set_at else None,
        locked_until=as_utc(locked_until) if locked_until else None,
        created_at=as_utc(getattr(row, prefix + "created_at")),
    )


_GET = Lean(
    select(subjects).where(
        subjects.c.client_id == bindparam("client_id"),
        subjects.c.subject_id == bindparam("subject_id"),
    )
)


def get(conn: Connection, client_id: str, subject_id: str) -> SubjectRecord | None:
    """The subject of this tenant, or None (another tenant's subject is simply not found)."""
    row = _GET.first(conn, {"client_id": client_id, "subject_id": subject_id})
    return record_of(row) if row else None


# A subject's columns labelled ``s_pk``, ... for statements that join it (``record_of``'s prefix).
LABELLED = [c.label(f"s_{c.name}") for c in subjects.c if c.name != "updated_at"]
# The caller's client row (and its stored key hash) with the subject, when there is one: for a
# request whose API key this process knew, its revocation and expiry are read in the request's
# first statement, not a statement of their own (usecases.clients.confirm).
_WITH_CLIENT = Lean(
    select(*[c.label(f"c_{c.name}") for c in clients.c], *LABELLED)
    .select_from(
        clients.outerjoin(
            subjects,
            and_(
                subjects.c.client_id == clients.c.id,
                subjects.c.subject_id == bindparam("subject_id"),
            ),
        )
    )
    .where(clients.c.id == bindparam("client_id"))
)


def get_with_client(
    conn: Connection, client_id: str, subject_id: str
) -> tuple[SubjectRecord | None, ClientRecord, str] | None:
    """``get`` and the client as stored now, with its key hash; None: no such client."""
    row = _WITH_CLIENT.first(conn, {"client_id": client_id, "subject_id": subject_id})
    if row is None:
        return None
    subject = record_of(row, prefix="s_") if row.s_pk is not None else None
    return subject, client_store.record_of(row, prefix="c_"), row.c_key_hash


_BY_PK = select(subjects).where(subjects.c.pk == bindparam("pk"))
_LAST_EVENTS = (
    select(subject_events.c.type, func.max(subject_events.c.occurred_at))
    .where(subject_events.c.subject_pk == bindparam("pk"))
    .group_by(subject_events.c.type)
)


def by_pk(conn: Connection, pk: int) -> SubjectRecord | None:
    """The subject with this primary key."""
    row = conn.execute(_BY_PK, {"pk": pk}).first()
    return record_of(row) if row else None


def create(
    conn: Connection,
    *,
    client_id: str,
    subject_id: str,
    phone_ct: str,
    phone_hash: str,
    now: datetime,
) -> int:
    """Insert a subject and return its primary key."""
    res = conn.execute(
        insert(subjects).values(
            client_id=client_id,
            subject_id=subject_id,
            phone_ct=phone_ct,
            phone_hash=phone_hash,
            phone_set_at=now,
            created_at=now,
            updated_at=now,
        )
    )
    assert res.inserted_primary_key is not None
    return int(res.inserted_primary_key[0])


def set_phone(conn: Connection, pk: int, *, phone_ct: str, phone_hash: str, now: datetime) -> None:
    """Replace the subject's phone; ``phone_set_at`` restarts (T2: recycled-number checks)."""
    conn.execute(
        update(subjects)
        .where(subjects.c.pk == pk)
        .values(phone_ct=phone_ct, phone_hash=phone_hash, phone_set_at=now, updated_at=now)
    )


def lock(conn: Connection, pk: int, until: datetime) -> None:
    """Lock the subject out of new verifications until ``until`` (never shortens a lock)."""
    conn.execute(
        update(subjects)
        .where(subjects.c.pk == pk)
        .where((subjects.c.locked_until.is_(None)) | (subjects.c.locked_until < until))
        .values(locked_until=until)
    )


def unlock(conn: Connection, pk: int) -> None:
    """End a lockout (``idv subjects unlock``)."""
    conn.execute(update(subjects).where(subjects.c.pk == pk).values(locked_until=None))


def webauthn_handle(conn: Connection, pk: int, fresh: str) -> str:
    """The subject's WebAuthn user handle, set to ``fresh`` the first time it is asked for
    (a conditional UPDATE, so racing registrations agree on one handle)."""
    conn.execute(
        update(subjects)
        .where(subjects.c.pk == pk, subjects.c.webauthn_handle.is_(None))
        .values(webauthn_handle=fresh)
    )
    handle = conn.execute(
        select(subjects.c.webauthn_handle).where(subjects.c.pk == pk)
    ).scalar_one()
    return str(handle)


def remove(conn: Connection, pk: int) -> None:
    """Erase the subject; factors, verifications and events go with it (ON DELETE CASCADE).

    PostgreSQL: rows are locked in the order every other writer takes them (verification,
    then factor, then subject): a proof locks its verification row, then its factor's row
    through the single-use INSERT's foreign key; an enrolment deletes or adds a factor row,
    then refers to the subject row. The cascade alone would take the subject row first, then
    the factor rows, then the verification rows, and a proof or a PIN enrolment running
    meanwhile deadlocked with the erasure. SQLite renders no ``FOR UPDATE``: its writers are
    serialised by ``BEGIN IMMEDIATE``.
    """
    for table in (verifications, factors):
        conn.execute(
            select(table.c.id)
            .where(table.c.subject_pk == pk)
            .order_by(table.c.id)
            .with_for_update()
        )
    conn.execute(delete(subjects).where(subjects.c.pk == pk))


def record_event(conn: Connection, pk: int, event_type: str, now: datetime) -> None:
    """Record a sensitive event (password reset, factor added/removed, phone changed)."""
    conn.execute(insert(subject_events).values(subject_pk=pk, type=event_type, occurred_at=now))


def last_events(conn: Connection, pk: int) -> dict[str, datetime]:
    """The latest time of each sensitive event type for this subject."""
    rows = conn.execute(_LAST_EVENTS, {"pk": pk})
    return {t: as_utc(at) for t, at in rows if at is not None}


@dataclass(frozen=True)
class Snapshot:
    """Everything a decision needs to know about a subject besides the subject row itself."""

    factors: list[FactorRecord]  # every factor, oldest first
    # The latest carrier event of each type for the phone (global), all a decision needs. Not
    # every event: a number with 20,000 of them made each decision about it take 100-180 ms.
    carrier: dict[str, datetime]
    events: dict[str, datetime]  # the latest time of each sensitive event type
    # The end of the completion window of the subject's waiting delayed recovery, if any: its
    # phone-bound factors read as suspended until then (API.md, Recovery).
    waiting_until: datetime | None = None
    # Whether the subject's tenant registered an attestation key: it can offer ``attested``.
    tenant_attests: bool = False


# Unused codes of a recovery-code set, computed only for rows of that type (CASE evaluates the
# subquery lazily): one index range of at most ten rows, on the rare subject that has a set.
_REMAINING_CODES = case(
    (
        or_(*(factors.c.type == name for name in sorted(SINGLE_USE_SETS))),
        select(func.count())
        .where(recovery_codes.c.factor_id == factors.c.id, recovery_codes.c.used_at.is_(None))
        .scalar_subquery(),
    ),
    else_=type_coerce(null(), Integer),
)

# One statement instead of three (the hot path: every proof, challenge and creation decides
# again). Rows are tagged: "f" a factor, "c" the latest carrier event of a type for the phone
# (the unique constraint's index answers it), "e" the latest sensitive event of a type, "a" one
# row when the tenant can attest (a seek on the attestation keys' primary key). The first SELECT
# types the columns for all of them.
_SNAPSHOT = Lean(
    union_all(
        select(
            literal("f").label("kind"),
            factors.c.id,
            factors.c.type,
            factors.c.status,
            factors.c.secret_ct,
            factors.c.alg,
            factors.c.label,
            factors.c.created_at,
            type_coerce(null(), TS).label("at"),
            _REMAINING_CODES.label("remaining"),
            factors.c.sign_count,
        ).where(factors.c.subject_pk == bindparam("pk")),
        # One index seek per type (max() of an equality-bound index prefix), never a scan of
        # every event of the number.
        *(
            select(
                literal("c"),
                null(),
                literal(kind),
                null(),
                null(),
                null(),
                null(),
                null(),
                select(func.max(carrier_events.c.occurred_at))
                .where(
                    carrier_events.c.phone_hash == bindparam("phone_hash"),
                    carrier_events.c.type == kind,
                )
                .scalar_subquery(),
                null(),
                null(),
            )
            for kind in CARRIER_EVENT_TYPES
        ),
        select(
            literal("e"),
            null(),
            subject_events.c.type,
            null(),
            null(),
            null(),
            null(),
            null(),
            func.max(subject_events.c.occurred_at),
            null(),
            null(),
        )
        .where(subject_events.c.subject_pk == bindparam("pk"))
        .group_by(subject_events.c.type),
        # A waiting delayed recovery (at most one: a partial unique index answers it).
        select(
            literal("w"),
            verifications.c.id,
            null(),
            null(),
            null(),
            null(),
            null(),
            null(),
            verifications.c.expires_at,
            null(),
            null(),
        ).where(
            verifications.c.subject_pk == bindparam("pk"),
            # A literal, not a bound value, so that SQLite and PostgreSQL plans can use the
            # partial unique index (uq_verifications_one_waiting), whose predicate it matches.
            verifications.c.status == literal_column("'waiting'"),
        ),
        select(literal("a"), *[null()] * 10).where(
            exists().where(attestation_keys.c.client_id == bindparam("client_id"))
        ),
    )
)


def snapshot(conn: Connection, subject: SubjectRecord) -> Snapshot:
    """The subject's factors, its phone's carrier events and its latest sensitive events."""
    found: list[FactorRecord] = []
    carrier: dict[str, datetime] = {}
    events: dict[str, datetime] = {}
    waiting_until: datetime | None = None
    attests = False
    params = {"pk": subject.pk, "phone_hash": subject.phone_hash, "client_id": subject.client_id}
    for row in _SNAPSHOT.all(conn, params):
        kind, fid, type_, status, secret_ct, alg, label, created_at, at, left, count = row
        if kind == "a":
            attests = True
        elif kind == "f":
            found.append(
                FactorRecord(
                    id=fid,
                    subject_pk=subject.pk,
                    type=type_,
                    status=status,
                    secret_ct=secret_ct,
                    alg=alg,
                    label=label,
                    created_at=as_utc(created_at),
                    remaining=None if left is None else int(left),
                    sign_count=count,
                )
            )
        elif kind == "c":
            if at is not None:  # None: no event of that type for the phone
                carrier[type_] = as_utc(at)
        elif kind == "w":
            waiting_until = max(as_utc(at), waiting_until or as_utc(at))
        elif at is not None:
            events[type_] = as_utc(at)
    found.sort(key=lambda f: f.created_at)
    return Snapshot(found, carrier, events, waiting_until, attests)
