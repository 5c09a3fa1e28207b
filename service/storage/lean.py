"""Hot-path statements run straight on the DBAPI cursor of an SQLAlchemy connection.

Every proof runs a handful of statements that never change; going through
``Connection.execute`` costs about as much Python per statement as the database does to answer
it (execution context, result metadata, events). ``Lean`` compiles a statement once per dialect
with SQLAlchemy, keeps SQLAlchemy's own bind and result processors (so values are stored and
read back exactly as ``Connection.execute`` would: the same SQLite datetime text, the same
PostgreSQL types), and runs it on the connection's DBAPI cursor, inside the connection's
transaction.

What it keeps from ``Connection.execute``:

- the transaction: a connection without one begins it first (SQLAlchemy's autobegin, which
  fires the SQLite ``BEGIN IMMEDIATE`` listener of ``db.make_engine``);
- errors: a DBAPI error goes through SQLAlchemy's handler, so it arrives as
  ``sqlalchemy.exc.IntegrityError`` / ``OperationalError`` (the HTTP layer's 409 and 503) and a
  dropped PostgreSQL connection is invalidated, never returned to the pool.

- the ``before_cursor_execute`` event (what tracing and the bench's statement counter use).

What it drops: ``after_cursor_execute``, execution options and result objects (rows are named
tuples).
Only for statements on the hot path; everything else uses ``Connection.execute``.

``transaction(engine)`` is the hot path's write transaction (the proof route's and
verification create's): it runs on the pooled DBAPI connection without building a SQLAlchemy
``Connection`` (on SQLite a ``Connection``'s checkout, begin, commit and close cost 223 k
instructions a transaction, this 85 k, a bare ``sqlite3`` connection 23 k:
``bench/transaction_cost.py``; a TOTP proof is 2.4 M in all). See ``LeanTransaction`` for what
it keeps.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from sqlalchemy import Connection, Engine, exc
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql.expression import ClauseElement


@dataclass(frozen=True)
class _Plan:
    sql: str
    positional: tuple[str, ...] | None  # bind names in order (qmark), None for named styles
    defaults: dict[str, Any]  # literal values SQLAlchemy bound itself (``status = 'pending'``)
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]
    # Only the columns that need a result processor (SQLite datetimes, JSON...), by position:
    # most columns are plain text or integers, and a call per column of every row was the
    # largest Python cost of reading one (bench/RESULTS.md, 125 calls per proof).
    results: tuple[tuple[int, Callable[[Any], Any]], ...]
    row: Any  # a namedtuple class: rows read by attribute (``row.seq``) or unpacked


class Lean:
    """A fixed statement, compiled once per dialect, run on the DBAPI cursor."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._plans: dict[str, _Plan] = {}

    def _plan(self, dialect: Dialect) -> _Plan:
        plan = self._plans.get(dialect.name)
        if plan is None:
            compiled: Any = self.statement.compile(dialect=dialect)
            results = tuple(
                column[3]._cached_result_processor(dialect, None)
                for column in compiled._result_columns
            )
            plan = _Plan(
                sql=compiled.string,
                positional=tuple(compiled.positiontup) if compiled.positional else None,
                defaults={
                    name: bind.value
                    for name, bind in compiled.binds.items()
                    if not bind.required and name in compiled.bind_names.values()
                },
                binds=tuple(compiled._bind_processors.items()),
                results=tuple(
                    (i, process) for i, process in enumerate(results) if process is not None
                ),
                row=namedtuple("LeanRow", [c[0] for c in compiled._result_columns], rename=True),  # type: ignore[misc]
            )
            self._plans[dialect.name] = plan
        return plan

    def _run(self, conn: Connection, params: Mapping[str, Any]) -> tuple[Any, _Plan]:
        dialect = conn.dialect
        plan = self._plans.get(dialect.name) or self._plan(dialect)
        values = {**plan.defaults, **params} if plan.defaults else dict(params)
        for name, process in plan.binds:
            value = values.get(name)
            if value is not None:
                values[name] = process(value)
        args: Any = values if plan.positional is None else [values[n] for n in plan.positional]
        if not conn.in_transaction():
            conn.begin()  # what Connection.execute's autobegin does
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        listeners = conn.dispatch.before_cursor_execute
        if listeners:  # tracing, counters: still see it (the call costs even with none)
            listeners(conn, cursor, plan.sql, args, None, False)
        try:
            cursor.execute(plan.sql, args)
        except dialect.loaded_dbapi.Error as exc:
            cursor.close()
            conn._handle_dbapi_exception(exc, plan.sql, args, cursor, None)
            raise  # not reached: the handler raises the wrapped error
        except BaseException:
            cursor.close()
            raise
        return cursor, plan

    def _row(self, plan: _Plan, row: Any) -> Any:
        if plan.results:
            row = list(row)
            for i, process in plan.results:
                value = row[i]
                if value is not None:
                    row[i] = process(value)
        return plan.row._make(row)

    def all(self, conn: Connection, params: Mapping[str, Any]) -> list[Any]:
        """Every row: named tuples in the statement's column order."""
        cursor, plan = self._run(conn, params)
        try:
            return [self._row(plan, row) for row in cursor.fetchall()]
        finally:
            cursor.close()

    def first(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first row, or None."""
        cursor, plan = self._run(conn, params)
        try:
            row = cursor.fetchone()
            return None if row is None else self._row(plan, row)
        finally:
            cursor.close()

    def rowcount(self, conn: Connection, params: Mapping[str, Any]) -> int:
        """Run an INSERT, UPDATE or DELETE; the number of rows it touched."""
        cursor, _ = self._run(conn, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()


def run_plain(conn: Connection, sql: str) -> None:
    """Run a constant statement without parameters or rows (``BEGIN IMMEDIATE``) on the DBAPI
    cursor, errors handled as ``Connection.execute`` would. Usable inside engine events."""
    cursor: Any = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    listeners = conn.dispatch.before_cursor_execute
    if listeners:
        listeners(conn, cursor, sql, (), None, False)
    try:
        cursor.execute(sql)
    except conn.dialect.loaded_dbapi.Error as exc:
        conn._handle_dbapi_exception(exc, sql, (), cursor, None)
    finally:
        cursor.close()


class LeanTransaction:
    """A write transaction on a pooled DBAPI connection, without a SQLAlchemy ``Connection``
    unless a statement needs one.

    What it keeps of ``engine.begin()``:

    - the pool: the DBAPI connection is checked out of the engine's pool (on SQLite
      ``FairWriterPool``: the writer goes to threads in arrival order; on PostgreSQL the
      ``QueuePool`` and its idle-connection ping) with the ``connect`` and ``checkout`` events,
      and goes back to it, reset, whatever happens;
    - on SQLite ``BEGIN IMMEDIATE`` first (what ``db.make_engine``'s ``begin`` listener
      issues), so concurrent writers queue in the pool and never meet SQLite's busy handler;
      psycopg opens the transaction at the first statement, as under a ``Connection``;
    - commit when the block ends, rollback when it raises; the ``commit`` event (the bench's
      commit counter), DBAPI errors raised as SQLAlchemy's (``IntegrityError``: 409,
      ``OperationalError``: 503), a connection the dialect reports broken invalidated (a
      PostgreSQL restart: the pool replaces it);
    - every other use of ``Connection``: an attribute this class does not have (``execute``,
      ``scalar``, ``begin_nested``, ...) builds a ``Connection`` on the same DBAPI connection,
      joined to the transaction already open (the ``begin`` listener sees
      ``idv_joined`` and issues no second BEGIN), and that ``Connection`` commits or rolls back
      and closes at the end instead. ``Lean`` statements run on the cursor either way.

    ``conn.info`` is the pooled connection's ``info``, as on a ``Connection`` (the audit chain
    remembers its head there). A ``before_cursor_execute`` listener sees this object as its
    connection while no ``Connection`` was needed.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self.dispatch = engine.dispatch  # engine-level listeners (no Connection to listen on)
        self._joined: Connection | None = None
        self._fairy: Any = None

    # -- what Lean and the audit chain read ------------------------------------------------
    @property
    def connection(self) -> Any:
        """The pooled DBAPI connection (``.dbapi_connection``, ``.info``), as on ``Connection``."""
        return self._fairy

    @property
    def info(self) -> dict[Any, Any]:
        return self._fairy.info  # type: ignore[no-any-return]

    def in_transaction(self) -> bool:
        return self._fairy is not None

    def _handle_dbapi_exception(
        self, e: BaseException, statement: str, parameters: Any, cursor: Any, context: Any
    ) -> None:
        """Raise ``e`` as SQLAlchemy would (``DBAPIError.instance``); a connection the dialect
        reports as broken is invalidated with every connection the pool made before it (what
        ``Connection`` does: after a database restart they are all dead)."""
        if self._joined is not None:
            self._joined._handle_dbapi_exception(e, statement, parameters, cursor, context)
        dbapi = self.dialect.loaded_dbapi
        broken = isinstance(e, dbapi.Error) and self.dialect.is_disconnect(
            e, self._fairy.dbapi_connection, cursor
        )
        if broken:  # as Connection does: this connection, and the pool's older ones, are stale
            self.engine.pool._invalidate(self._fairy, e)  # type: ignore[arg-type]
        raise exc.DBAPIError.instance(
            statement,
            parameters,
            e,  # type: ignore[arg-type]
            dbapi.Error,
            hide_parameters=self.engine.hide_parameters,
            dialect=self.dialect,
            connection_invalidated=broken,
        ) from e

    def __getattr__(self, name: str) -> Any:
        """Anything else a ``Connection`` has: on a ``Connection`` joined to this transaction."""
        if name.startswith("__") or self._fairy is None:
            raise AttributeError(name)
        if self._joined is None:
            joined = Connection(self.engine, connection=self._fairy)
            joined.execution_options(idv_joined=True)
            self._joined = joined
        return getattr(self._joined, name)

    # -- the transaction ---------------------------------------------------------------------
    def __enter__(self) -> LeanTransaction:
        try:
            self._fairy = self.engine.raw_connection()
        except self.dialect.loaded_dbapi.Error as e:
            Connection._handle_dbapi_exception_noconnection(e, self.dialect, self.engine)
            raise
        if self.dialect.name == "sqlite":  # psycopg begins at the first statement itself
            try:
                run_plain(self, "BEGIN IMMEDIATE")  # type: ignore[arg-type]
            except BaseException:
                self._fairy.close()
                self._fairy = None
                raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        joined, fairy = self._joined, self._fairy
        committed = False
        try:
            if joined is not None and joined.in_transaction():
                # It ran a statement, so it holds the transaction now: it ends it. (A joined
                # Connection that only had an attribute read began nothing: commit below.)
                if exc_type is None:
                    joined.commit()
                else:
                    joined.rollback()
            elif exc_type is None:
                if self.dispatch.commit:
                    self.dispatch.commit(self)
                try:
                    fairy.dbapi_connection.commit()
                except self.dialect.loaded_dbapi.Error as e:
                    self._handle_dbapi_exception(e, "COMMIT", (), None, None)
                committed = True
            # Raised: the pool's reset rolls back at check-in below (and invalidates the
            # connection if even that fails), so the error raised is the block's own.
        finally:
            self._fairy = None
            if joined is not None:
                joined.close()  # gives the DBAPI connection back to the pool (reset: rollback)
            elif committed:  # nothing left open: back to the pool without the reset's rollback
                fairy._close_special(transaction_reset=True)
            else:
                fairy.close()  # back to the pool, whose reset rolls back anything left open


def transaction(engine: Engine) -> Any:
    """The hot path's write transaction (``LeanTransaction``), on SQLite and PostgreSQL, in
    place of ``engine.begin()``: use it as ``with transaction(engine) as conn:``; ``conn``
    stands for a ``Connection``."""
    return LeanTransaction(engine)
