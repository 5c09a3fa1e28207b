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
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection
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
        plan = self._plan(conn.dialect)
        values = {**plan.defaults, **params} if plan.defaults else dict(params)
        for name, process in plan.binds:
            value = values.get(name)
            if value is not None:
                values[name] = process(value)
        args: Any = values if plan.positional is None else [values[n] for n in plan.positional]
        if not conn.in_transaction():
            conn.begin()  # what Connection.execute's autobegin does
        dbapi_conn: Any = conn.connection.dbapi_connection
        cursor = dbapi_conn.cursor()
        if conn._has_events or conn.engine._has_events:  # tracing, counters: still see it
            conn.dispatch.before_cursor_execute(conn, cursor, plan.sql, args, None, False)
        try:
            cursor.execute(plan.sql, args)
        except conn.dialect.loaded_dbapi.Error as exc:
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
    if conn._has_events or conn.engine._has_events:
        conn.dispatch.before_cursor_execute(conn, cursor, sql, (), None, False)
    try:
        cursor.execute(sql)
    except conn.dialect.loaded_dbapi.Error as exc:
        conn._handle_dbapi_exception(exc, sql, (), cursor, None)
    finally:
        cursor.close()
