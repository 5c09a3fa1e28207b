"""``storage.lean``: hot-path statements on the DBAPI cursor behave like ``Connection.execute``
(same stored values, same errors, same transaction), on SQLite and on PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, event, exc, select, text

from service.context import ServiceContext
from service.storage.lean import Lean, transaction
from service.storage.tables import carrier_events

T0 = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)

_INSERT = Lean(
    carrier_events.insert().values(
        phone_hash=bindparam("phone_hash"),
        type=bindparam("type"),
        occurred_at=bindparam("occurred_at"),
        received_at=bindparam("received_at"),
        client_id=bindparam("client_id"),
    )
)
_READ = Lean(
    select(carrier_events.c.type, carrier_events.c.occurred_at, carrier_events.c.client_id)
    .where(carrier_events.c.phone_hash == bindparam("phone_hash"))
    .order_by(carrier_events.c.occurred_at)
)
_MOVE = Lean(
    carrier_events.update()
    .where(carrier_events.c.phone_hash == bindparam("b_hash"), carrier_events.c.type == "sim_swap")
    .values(type=bindparam("b_type"))
)


def _row(phone_hash: str, at: datetime, kind: str = "sim_swap") -> dict:
    return {
        "phone_hash": phone_hash,
        "type": kind,
        "occurred_at": at,
        "received_at": at,
        "client_id": None,
    }


def test_values_are_stored_and_read_back_as_connection_execute_does(ctx: ServiceContext) -> None:
    with ctx.engine.begin() as conn:
        _INSERT.rowcount(conn, _row("lean", T0))
        conn.execute(carrier_events.insert().values(**_row("core", T0)))
    with ctx.engine.connect() as conn:
        # The same stored form (on SQLite: the same text, so comparisons in SQL agree).
        stored = {
            r.phone_hash: r.occurred_at
            for r in conn.execute(text("SELECT phone_hash, occurred_at FROM carrier_events"))
        }
        assert stored["lean"] == stored["core"]
        core = conn.execute(
            select(carrier_events.c.occurred_at).where(carrier_events.c.phone_hash == "lean")
        ).scalar_one()
        rows = _READ.all(conn, {"phone_hash": "lean"})
    assert len(rows) == 1
    kind, at, client_id = rows[0]  # unpacks like a tuple ...
    assert (rows[0].type, rows[0].occurred_at) == (kind, at)  # ... and reads by name
    assert (kind, client_id) == ("sim_swap", None)
    assert at == core and at.replace(tzinfo=UTC) == T0


def test_rowcount_and_literal_binds(ctx: ServiceContext) -> None:
    with ctx.engine.begin() as conn:
        for i in range(3):
            _INSERT.rowcount(conn, _row("h", T0 + timedelta(seconds=i)))
        _INSERT.rowcount(conn, _row("h", T0, "sim_lost"))
        # ``type == "sim_swap"`` is a literal SQLAlchemy binds itself: Lean supplies it.
        assert _MOVE.rowcount(conn, {"b_hash": "h", "b_type": "sim_unblocked"}) == 3
        assert _MOVE.rowcount(conn, {"b_hash": "h", "b_type": "sim_unblocked"}) == 0
        assert _READ.first(conn, {"phone_hash": "nobody"}) is None


def test_a_connection_without_a_transaction_begins_one(ctx: ServiceContext) -> None:
    """Like autobegin: the write belongs to a transaction that a rollback undoes."""
    with ctx.engine.connect() as conn:
        _INSERT.rowcount(conn, _row("rolled", T0))
        assert conn.in_transaction()
        conn.rollback()
        assert _READ.all(conn, {"phone_hash": "rolled"}) == []
        _INSERT.rowcount(conn, _row("kept", T0))
        conn.commit()
    with ctx.engine.connect() as conn:
        assert len(_READ.all(conn, {"phone_hash": "kept"})) == 1


def test_database_errors_arrive_as_sqlalchemy_errors_and_roll_back(ctx: ServiceContext) -> None:
    """The HTTP layer maps IntegrityError to 409: a NOT NULL violation must arrive as one."""
    with pytest.raises(exc.IntegrityError), ctx.engine.begin() as conn:
        _INSERT.rowcount(conn, _row("first", T0))
        _INSERT.rowcount(conn, {**_row("second", T0), "type": None})
    with ctx.engine.connect() as conn:
        assert _READ.all(conn, {"phone_hash": "first"}) == []  # nothing half-written
        # The connection is usable again afterwards.
        assert _READ.first(conn, {"phone_hash": "first"}) is None


def test_before_cursor_execute_listeners_still_see_the_statement(ctx: ServiceContext) -> None:
    seen: list[str] = []

    def listen(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        seen.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", listen)
    try:
        with ctx.engine.begin() as conn:
            _READ.all(conn, {"phone_hash": "x"})
    finally:
        event.remove(ctx.engine, "before_cursor_execute", listen)
    assert any("FROM carrier_events" in s for s in seen)


# -- lean.transaction: the proof route's write transaction (a LeanTransaction on SQLite) -------


def test_a_lean_transaction_commits_what_it_wrote(ctx: ServiceContext) -> None:
    with transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("tx", T0))
        assert conn.in_transaction()
    with ctx.engine.connect() as conn:
        assert len(_READ.all(conn, {"phone_hash": "tx"})) == 1


def test_a_raising_block_writes_nothing_and_the_writer_is_usable_again(
    ctx: ServiceContext,
) -> None:
    for _ in range(3):  # the same pooled connection each time: it came back clean
        with pytest.raises(RuntimeError), transaction(ctx.engine) as conn:
            _INSERT.rowcount(conn, _row("undone", T0))
            conn.execute(carrier_events.insert().values(**_row("undone", T0, "sim_lost")))
            raise RuntimeError("the use case refused after writing")
    with transaction(ctx.engine) as conn:
        assert _READ.all(conn, {"phone_hash": "undone"}) == []


def test_database_errors_in_a_lean_transaction_are_sqlalchemy_errors(ctx: ServiceContext) -> None:
    with pytest.raises(exc.IntegrityError), transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("first", T0))
        _INSERT.rowcount(conn, {**_row("second", T0), "type": None})
    with pytest.raises(exc.IntegrityError), transaction(ctx.engine) as conn:
        conn.execute(carrier_events.insert().values(**{**_row("third", T0), "type": None}))
    with transaction(ctx.engine) as conn:
        assert _READ.all(conn, {"phone_hash": "first"}) == []


def test_connection_calls_join_the_same_transaction(ctx: ServiceContext) -> None:
    """``conn.execute`` (and anything else a Connection has) runs in the transaction the lean
    statements are in: both commit together, and both are undone together."""
    with transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("both", T0))
        conn.execute(carrier_events.insert().values(**_row("both", T0, "sim_lost")))
        assert len(_READ.all(conn, {"phone_hash": "both"})) == 2  # each sees the other's
        seen = conn.execute(
            select(carrier_events.c.type).where(carrier_events.c.phone_hash == "both")
        ).all()
        assert len(seen) == 2
        _INSERT.rowcount(conn, _row("both", T0, "port_out"))
    with pytest.raises(ZeroDivisionError), transaction(ctx.engine) as conn:
        conn.execute(carrier_events.insert().values(**_row("neither", T0)))
        _INSERT.rowcount(conn, _row("neither", T0, "sim_lost"))
        _ = 1 / 0
    with ctx.engine.connect() as conn:
        assert len(_READ.all(conn, {"phone_hash": "both"})) == 3
        assert _READ.all(conn, {"phone_hash": "neither"}) == []


def test_commit_listeners_see_each_commit(ctx: ServiceContext) -> None:
    commits: list[object] = []

    def count(conn) -> None:  # type: ignore[no-untyped-def]
        commits.append(conn)

    event.listen(ctx.engine, "commit", count)
    try:
        with transaction(ctx.engine) as conn:
            _INSERT.rowcount(conn, _row("c1", T0))
        with transaction(ctx.engine) as conn:
            conn.execute(carrier_events.insert().values(**_row("c2", T0)))
        with pytest.raises(RuntimeError), transaction(ctx.engine) as conn:
            _INSERT.rowcount(conn, _row("c3", T0))
            raise RuntimeError
    finally:
        event.remove(ctx.engine, "commit", count)
    assert len(commits) == 2


def test_lean_and_connection_transactions_from_many_threads_all_land(
    ctx: ServiceContext,
) -> None:
    """Writers from eight threads, half through ``transaction`` and half through
    ``engine.begin()``: each queues for the one SQLite writer (no ``database is locked``),
    none is lost."""

    def write(n: int) -> None:
        for i in range(15):
            row = _row(f"t{n}", T0 + timedelta(seconds=i))
            if n % 2:
                with transaction(ctx.engine) as conn:
                    _INSERT.rowcount(conn, row)
            else:
                with ctx.engine.begin() as conn:
                    conn.execute(carrier_events.insert().values(**row))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(8)))  # raises here what any writer raised
    with ctx.engine.connect() as conn:
        for n in range(8):
            assert len(_READ.all(conn, {"phone_hash": f"t{n}"})) == 15


def test_a_lean_transaction_on_a_dropped_connection_is_a_sqlalchemy_error_and_recovers(
    ctx: ServiceContext,
) -> None:
    """The server side of the connection goes away mid-transaction (PostgreSQL restarted):
    the error is SQLAlchemy's and the broken connection never serves the next transaction."""
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("PostgreSQL: a server that can drop the connection")
    with pytest.raises(exc.DBAPIError) as dropped, transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("lost", T0))
        pid = conn.connection.dbapi_connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        with ctx.engine.connect() as other:  # another pooled connection ends this one's backend
            other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        _INSERT.rowcount(conn, _row("lost", T0, "sim_lost"))  # a lean statement meets it
    assert dropped.value.connection_invalidated
    # As Connection does on a disconnect, the pool's other connections are stale too: the next
    # checkout of any of them reconnects instead of failing the next request.
    assert ctx.engine.pool._invalidate_time > 0
    with transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("after", T0))
    with ctx.engine.connect() as conn:
        assert _READ.all(conn, {"phone_hash": "lost"}) == []
        assert len(_READ.all(conn, {"phone_hash": "after"})) == 1


def test_a_connection_attribute_that_runs_nothing_does_not_lose_the_writes(
    ctx: ServiceContext,
) -> None:
    """Reading a ``Connection`` attribute builds the joined ``Connection`` without it beginning
    anything: the lean statements' transaction must still commit (and roll back on error)."""
    with transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("kept", T0))
        assert not conn.get_execution_options().get("idv_read_only")
    with pytest.raises(RuntimeError), transaction(ctx.engine) as conn:
        _INSERT.rowcount(conn, _row("undone", T0))
        assert conn.closed is False
        raise RuntimeError
    with ctx.engine.connect() as conn:
        assert len(_READ.all(conn, {"phone_hash": "kept"})) == 1
        assert _READ.all(conn, {"phone_hash": "undone"}) == []
