"""The audit trail is append-only and tamper-evident: a hash chain per writer, sealed with a MAC."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select, text

from service.cli_audit import audit as audit_cli
from service.context import ServiceContext
from service.settings import Settings
from service.storage import audit
from service.storage.tables import audit_heads, audit_log

T0 = datetime(2026, 11, 23, 10, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture
def key(ctx: ServiceContext) -> Iterator[bytes]:
    """The audit MAC key, configured as ServiceContext.build does."""
    mac_key = ctx.keys.derived_key("audit-mac")
    audit.configure(mac_key)
    yield mac_key


def _append(ctx: ServiceContext, n: int, start: datetime = T0, **kw: object) -> None:
    with ctx.engine.begin() as conn:
        for i in range(n):
            audit.append(
                conn,
                event="subject.created",
                outcome="ok",
                now=start + timedelta(seconds=i),
                client_id="cl-1",
                subject_ref=f"ref-{i}",
                ip="203.0.113.7",
                detail={"n": i, "stepped_up": False},
                **kw,  # type: ignore[arg-type]
            )


def _problems(ctx: ServiceContext, key: bytes) -> list[str]:
    with ctx.engine.connect() as conn:
        return audit.verify_chain(conn, key)


def _rows(ctx: ServiceContext) -> list:
    with ctx.engine.connect() as conn:
        return list(conn.execute(select(audit_log).order_by(audit_log.c.writer, audit_log.c.seq)))


def _sql(ctx: ServiceContext, statement: str, **params: object) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(text(statement), params)


def test_an_untouched_chain_verifies(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 5)
    _append(ctx, 3)
    assert _problems(ctx, key) == []
    rows = _rows(ctx)
    assert len(rows) == 8
    assert rows[0].prev_hash == audit.GENESIS
    assert all(b.prev_hash == a.hash for a, b in zip(rows, rows[1:], strict=False))


def test_an_edited_field_is_detected_and_named(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 5)
    row = _rows(ctx)[2]
    _sql(ctx, "UPDATE audit_log SET outcome = 'denied' WHERE id = :id", id=row.id)
    problems = _problems(ctx, key)
    assert problems[0] == (
        f"entry {row.id} (writer {row.writer}, seq 3): hash mismatch (edited or moved)"
    )


def test_an_edited_timestamp_is_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 3)
    row = _rows(ctx)[1]
    _sql(ctx, "UPDATE audit_log SET at = :at WHERE id = :id", at=T0 - timedelta(days=1), id=row.id)
    assert f"entry {row.id} " in _problems(ctx, key)[0]


def test_an_edit_with_a_recomputed_hash_fails_the_mac(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 3)
    row = _rows(ctx)[1]
    forged = {**row._mapping, "event": "nothing.happened"}
    _sql(
        ctx,
        "UPDATE audit_log SET event = :e, hash = :h WHERE id = :id",
        e="nothing.happened",
        h=audit.entry_hash(forged),
        id=row.id,
    )
    assert "MAC mismatch" in _problems(ctx, key)[0]


def test_a_deleted_middle_entry_is_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 5)
    rows = _rows(ctx)
    _sql(ctx, "DELETE FROM audit_log WHERE id = :id", id=rows[2].id)
    problems = _problems(ctx, key)
    assert problems[0].startswith(f"entry {rows[3].id} (writer {rows[3].writer}, seq 4): seq gap")


def test_deleted_entries_at_the_end_are_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 5)
    rows = _rows(ctx)
    _sql(ctx, "DELETE FROM audit_log WHERE seq >= 4")
    assert "entries deleted at the end" in _problems(ctx, key)[0]
    # Moving the head back to match needs the key.
    _sql(
        ctx,
        "UPDATE audit_heads SET seq = 3, hash = :h WHERE writer = :w",
        h=rows[2].hash,
        w=rows[2].writer,
    )
    assert "head MAC mismatch" in " ".join(_problems(ctx, key))


def test_a_deleted_chain_and_head_rows_are_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 2)
    _sql(ctx, "DELETE FROM audit_log")
    assert "no entries left" in _problems(ctx, key)[0]
    _append(ctx, 2)
    _sql(ctx, "DELETE FROM audit_heads")
    assert any("head row missing" in p for p in _problems(ctx, key))


def test_swapped_entries_are_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 5)
    a, b = _rows(ctx)[1:3]
    cols = ["at", "event", "subject_ref", "detail", "prev_hash", "hash", "mac"]
    sets = ", ".join(f"{c} = :{c}" for c in cols)
    with ctx.engine.begin() as conn:
        for src, dst in ((b, a), (a, b)):
            conn.execute(
                text(f"UPDATE audit_log SET {sets} WHERE id = :id"),
                {**{c: src._mapping[c] for c in cols}, "id": dst.id},
            )
    assert _problems(ctx, key)[0].startswith(f"entry {a.id} (writer {a.writer}, seq 2)")


def test_swapped_sequence_numbers_are_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 4)
    a, b = _rows(ctx)[1:3]
    with ctx.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET seq = -1 WHERE id = :id"), {"id": a.id})
        conn.execute(text("UPDATE audit_log SET seq = 2 WHERE id = :id"), {"id": b.id})
        conn.execute(text("UPDATE audit_log SET seq = 3 WHERE id = :id"), {"id": a.id})
    assert _problems(ctx, key)


def test_a_forged_entry_without_the_key_is_detected(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 2)
    entry = {
        "writer": "w-forged",
        "seq": 1,
        "prev_hash": audit.GENESIS,
        "at": T0,
        "client_id": "cl-1",
        "operator": None,
        "event": "client.revoked",
        "subject_ref": None,
        "outcome": "ok",
        "detail": "{}",
        "ip": None,
    }
    digest = audit.entry_hash(entry)
    wrong = audit.entry_mac(b"x" * 32, digest)
    with ctx.engine.begin() as conn:
        conn.execute(audit_log.insert().values(**entry, hash=digest, mac=wrong))
        conn.execute(
            audit_heads.insert().values(
                writer="w-forged",
                seq=1,
                hash=digest,
                mac=audit.head_mac(b"x" * 32, "w-forged", 1, digest),
            )
        )
    problems = _problems(ctx, key)
    assert problems[0].endswith("(writer w-forged, seq 1): MAC mismatch (forged, or another key)")
    assert any("w-forged: head MAC mismatch" in p for p in problems)


def test_another_key_does_not_verify(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 1)
    assert "MAC mismatch" in _problems(ctx, b"y" * 32)[0]


def test_a_rolled_back_transaction_leaves_the_chain_valid(ctx: ServiceContext, key: bytes) -> None:
    with ctx.engine.connect() as conn:
        with conn.begin():
            audit.append(conn, event="a", outcome="ok", now=T0)
        with pytest.raises(RuntimeError), conn.begin():
            audit.append(conn, event="b", outcome="ok", now=T0)
            audit.append(conn, event="c", outcome="ok", now=T0)
            raise RuntimeError("the change failed")
        with conn.begin():
            audit.append(conn, event="d", outcome="ok", now=T0)
    rows = _rows(ctx)
    assert [(r.event, r.seq) for r in rows] == [("a", 1), ("d", 2)]
    assert _problems(ctx, key) == []


def test_an_append_is_two_statements_once_the_connection_knows_its_head(
    ctx: ServiceContext, key: bytes
) -> None:
    """The hot path: the remembered head is checked and advanced by one UPDATE, plus the INSERT
    (on PostgreSQL both in one statement); after a rollback the remembered head is stale and the
    last entry is read back once."""
    from sqlalchemy import event

    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "audit" in statement:
            statements.append(statement.split()[0].upper())

    steady = ["WITH"] if ctx.engine.dialect.name == "postgresql" else ["UPDATE", "INSERT"]
    event.listen(ctx.engine, "before_cursor_execute", count)
    try:
        with ctx.engine.connect() as conn:
            for name in ("first", "second"):
                statements.clear()
                with conn.begin():
                    audit.append(conn, event=name, outcome="ok", now=T0)
            assert statements == steady
            with pytest.raises(RuntimeError), conn.begin():
                audit.append(conn, event="rolled back", outcome="ok", now=T0)
                raise RuntimeError("the change failed")
            statements.clear()
            with conn.begin():
                audit.append(conn, event="after", outcome="ok", now=T0)
            assert statements == [*steady[:1], "SELECT", "INSERT", "UPDATE"]
            statements.clear()
            with conn.begin():
                audit.append(conn, event="steady again", outcome="ok", now=T0)
            assert statements == steady
    finally:
        event.remove(ctx.engine, "before_cursor_execute", count)
    assert [(r.event, r.seq) for r in _rows(ctx)] == [
        ("first", 1),
        ("second", 2),
        ("after", 3),
        ("steady again", 4),
    ]
    assert _problems(ctx, key) == []


def test_a_chain_cannot_fork(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 2)
    row = _rows(ctx)[1]
    with pytest.raises(Exception, match="(?i)unique"), ctx.engine.begin() as conn:
        conn.execute(
            audit_log.insert().values(**{c: row._mapping[c] for c in row._mapping if c != "id"})
        )


def test_concurrent_threads_do_not_fork_the_chain(ctx: ServiceContext, key: bytes) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(25):
                with ctx.engine.begin() as conn:
                    audit.append(
                        conn, event="t", outcome="ok", now=T0, detail={"thread": t, "i": i}
                    )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _problems(ctx, key) == []
    rows = _rows(ctx)
    assert len(rows) == 200
    chains: dict[str, list[int]] = {}
    for r in rows:
        chains.setdefault(r.writer, []).append(r.seq)
    assert all(seqs == list(range(1, len(seqs) + 1)) for seqs in chains.values())
    with ctx.engine.connect() as conn:
        assert audit.stats(conn) == (200, len(chains))


_PROCESS = """
import sys
from datetime import UTC, datetime
from service.storage import audit
from service.storage.db import make_engine
audit.configure(bytes.fromhex(sys.argv[2]))
engine = make_engine(sys.argv[1])
for i in range(40):
    with engine.begin() as conn:
        audit.append(conn, event="p", outcome="ok", now=datetime.now(UTC), detail={"i": i})
engine.dispose()
"""


def test_two_processes_do_not_fork_the_chain(
    ctx: ServiceContext, key: bytes, settings: Settings
) -> None:
    root = Path(__file__).resolve().parents[2]
    cmd = [sys.executable, "-c", _PROCESS, settings.database_url, key.hex()]
    procs = [subprocess.Popen(cmd, cwd=root, env={"PYTHONPATH": str(root)}) for _ in range(2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert _problems(ctx, key) == []
    assert len(_rows(ctx)) == 80


def test_secrets_are_refused_in_detail(ctx: ServiceContext, key: bytes) -> None:
    for bad in (
        {"code": "123456"},
        {"PIN": "1234"},
        {"sms_code": "1"},
        {"outer": {"phone": "+8613800138000"}},
        {"items": [{"totp_secret": "x"}]},
        {"signature": "x"},
    ):
        with pytest.raises(ValueError, match="must not carry"), ctx.engine.begin() as conn:
            audit.append(conn, event="x", outcome="ok", now=T0, detail=bad)
    assert _rows(ctx) == []


def test_export_since_returns_only_newer_entries(ctx: ServiceContext, key: bytes) -> None:
    _append(ctx, 3, start=T0)
    _append(ctx, 2, start=T0 + timedelta(hours=1))
    with ctx.engine.connect() as conn:
        items = list(audit.export(conn, T0 + timedelta(minutes=30)))
        everything = list(audit.export(conn))
    assert len(everything) == 5
    assert [i["at"] for i in items] == [
        "2026-11-23T11:00:00.123456+00:00",
        "2026-11-23T11:00:01.123456+00:00",
    ]
    assert items[0]["detail"] == {"n": 0, "stepped_up": False}
    assert {"writer", "seq", "prev_hash", "hash", "mac"} <= set(items[0])


def test_timestamps_hash_the_same_whatever_the_offset(ctx: ServiceContext, key: bytes) -> None:
    from datetime import timezone

    with ctx.engine.begin() as conn:
        audit.append(conn, event="x", outcome="ok", now=T0.astimezone(timezone(timedelta(hours=8))))
    assert _problems(ctx, key) == []
    with ctx.engine.connect() as conn:
        assert [i["at"] for i in audit.export(conn)] == ["2026-11-23T10:00:00.123456+00:00"]


# -- the CLI ----------------------------------------------------------------------------
@pytest.fixture
def cli_env(settings: Settings) -> dict[str, str]:
    return {
        "IDV_DATABASE_URL": settings.database_url,
        "IDV_KEY_FILE": str(settings.key_file),
        "IDV_DATA_DIR": str(settings.data_dir),
        "IDV_POLICY_FILE": str(settings.policy_file),
    }


def test_cli_verify_exits_1_naming_the_entry_after_tampering(
    ctx: ServiceContext, key: bytes, cli_env: dict[str, str]
) -> None:
    _append(ctx, 4)
    _append(ctx, 3)
    runner = CliRunner()
    ok = runner.invoke(audit_cli, ["verify"], env=cli_env)
    assert ok.exit_code == 0, ok.output
    assert ok.output.strip().startswith("audit chain OK: 7 entries in ")
    row = _rows(ctx)[2]
    _sql(ctx, "UPDATE audit_log SET subject_ref = 'someone-else' WHERE id = :id", id=row.id)
    bad = runner.invoke(audit_cli, ["verify"], env=cli_env)
    assert bad.exit_code == 1
    assert f"entry {row.id} (writer {row.writer}, seq 3): hash mismatch" in bad.output


def test_cli_export_writes_json_lines_since(
    ctx: ServiceContext, key: bytes, cli_env: dict[str, str]
) -> None:
    _append(ctx, 2, start=T0)
    _append(ctx, 1, start=T0 + timedelta(days=1))
    runner = CliRunner()
    out = runner.invoke(audit_cli, ["export", "--since", "2026-11-24T00:00:00Z"], env=cli_env)
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.output.splitlines()]
    assert [line["at"] for line in lines] == ["2026-11-24T10:00:00.123456+00:00"]
    everything = runner.invoke(audit_cli, ["export"], env=cli_env)
    assert len(everything.output.splitlines()) == 3
    bad = runner.invoke(audit_cli, ["export", "--since", "yesterday"], env=cli_env)
    assert bad.exit_code == 2
