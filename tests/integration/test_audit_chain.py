"""The audit trail is append-only and tamper-evident: a hash chain per writer, sealed with a MAC."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, select, text

from service.cli_audit import audit as audit_cli
from service.context import ServiceContext
from service.settings import Settings
from service.storage import audit
from service.storage.db import make_engine
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


# -- anchors: the chains vouch for each other (issue 20, item 6) -------------------------
@pytest.fixture
def writers(settings: Settings, key: bytes) -> Iterator[Callable[[], Connection]]:
    """Connections of their own engines: each is a writer with its own chain."""
    opened: list[tuple[Engine, Connection]] = []

    def new() -> Connection:
        engine = make_engine(settings.database_url)
        opened.append((engine, engine.connect()))
        return opened[-1][1]

    yield new
    for engine, conn in opened:
        conn.close()
        engine.dispose()


def _write(conn: Connection, n: int, at: datetime, event: str = "x") -> None:
    with conn.begin():
        for i in range(n):
            audit.append(conn, event=event, outcome="ok", now=at + timedelta(microseconds=i))


def _chain(ctx: ServiceContext, conn: Connection) -> list:
    writer = conn.info["idv_audit_writer"][1]
    return [r for r in _rows(ctx) if r.writer == writer]


def _two_anchored_chains(writers: Callable[[], Connection]) -> tuple[Connection, Connection]:
    """Chain A (3 entries), then B (5; its first anchors A), then A again 40 s later (anchors B)."""
    a, b = writers(), writers()
    _write(a, 3, T0)
    _write(b, 5, T0 + timedelta(seconds=1))
    _write(a, 2, T0 + audit.ANCHOR_INTERVAL + timedelta(seconds=10))
    return a, b


def test_anchors_name_the_other_chains_heads(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    a, b = _two_anchored_chains(writers)
    chain_a, chain_b = _chain(ctx, a), _chain(ctx, b)
    assert _problems(ctx, key) == []
    # B's first entry vouches for A's head; A's first entry after the interval for B's.
    assert json.loads(chain_b[0].anchors) == [[chain_a[2].writer, 3, chain_a[2].hash]]
    assert [r.anchors for r in chain_b[1:]] == [None] * 4
    assert json.loads(chain_a[3].anchors) == [[chain_b[4].writer, 5, chain_b[4].hash]]
    assert chain_a[0].anchors is None and chain_a[4].anchors is None


def test_a_chain_deleted_with_its_head_row_is_found(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    """The attack of issue 20 item 6: half the trail gone and `verify` said OK."""
    a, b = _two_anchored_chains(writers)
    for victim, witness, seq in ((b, a, 5), (a, b, 3)):
        gone, by = _chain(ctx, victim)[0].writer, _chain(ctx, witness)
        saved = _rows(ctx)
        with ctx.engine.begin() as conn:
            heads = list(conn.execute(select(audit_heads)))
            conn.execute(audit_log.delete().where(audit_log.c.writer == gone))
            conn.execute(audit_heads.delete().where(audit_heads.c.writer == gone))
        anchor = next(r for r in by if r.anchors)
        assert _problems(ctx, key) == [
            f"writer {gone}: seq {seq}, anchored by entry {anchor.id} (writer {anchor.writer}, "
            f"seq {anchor.seq}), and its whole chain are missing (chain deleted with its head row)"
        ]
        with ctx.engine.begin() as conn:  # put everything back for the next round
            conn.execute(audit_log.delete())
            conn.execute(audit_heads.delete())
            conn.execute(audit_log.insert(), [dict(r._mapping) for r in saved])
            conn.execute(audit_heads.insert(), [dict(h._mapping) for h in heads])
        assert _problems(ctx, key) == []


def test_a_deleted_head_row_cannot_hide_a_truncation(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    """Delete B's last entries and its head row: B's writer carries on from the entry before the
    gap and re-creates its head, so the chain alone looks whole; A's anchor does not."""
    a, b = _two_anchored_chains(writers)
    anchor = _chain(ctx, a)[3]
    writer = _chain(ctx, b)[0].writer
    _sql(ctx, "DELETE FROM audit_log WHERE writer = :w AND seq >= 4", w=writer)
    _sql(ctx, "DELETE FROM audit_heads WHERE writer = :w", w=writer)
    _write(b, 2, T0 + timedelta(seconds=2), event="rewritten")
    rewritten = _chain(ctx, b)[4]
    assert (rewritten.seq, rewritten.event) == (5, "rewritten")
    assert _problems(ctx, key) == [
        f"entry {rewritten.id} (writer {writer}, seq 5): differs from what entry {anchor.id} "
        f"(writer {anchor.writer}, seq 4) anchored (chain rewritten)"
    ]


def test_a_truncated_chain_with_its_old_head_put_back_is_found(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    """A head row saved earlier and put back after deleting the entries behind it."""
    a, b = writers(), writers()
    _write(b, 2, T0)
    with ctx.engine.connect() as conn:
        old_head = dict(conn.execute(select(audit_heads)).one()._mapping)
    _write(b, 3, T0 + timedelta(seconds=1))
    _write(a, 1, T0 + timedelta(seconds=2))  # A's first entry anchors B at seq 5
    _sql(ctx, "DELETE FROM audit_log WHERE writer = :w AND seq > 2", w=old_head["writer"])
    with ctx.engine.begin() as conn:
        conn.execute(audit_heads.delete().where(audit_heads.c.writer == old_head["writer"]))
        conn.execute(audit_heads.insert().values(**old_head))
    problems = _problems(ctx, key)
    assert len(problems) == 1
    assert problems[0].startswith(f"writer {old_head['writer']}: seq 5, anchored by entry ")
    assert problems[0].endswith("missing (chain truncated, its head row deleted or put back)")


def test_chains_swapped_or_entries_moved_across_chains_are_found(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    a, b = _two_anchored_chains(writers)
    wa, wb = _chain(ctx, a)[0].writer, _chain(ctx, b)[0].writer
    # Swap the two chains' identities, heads included.
    with ctx.engine.begin() as conn:
        for table in (audit_log, audit_heads):
            for old, new in ((wa, "w-tmp"), (wb, wa), ("w-tmp", wb)):
                conn.execute(table.update().where(table.c.writer == old).values(writer=new))
    assert any("hash mismatch" in p for p in _problems(ctx, key))
    with ctx.engine.begin() as conn:  # swap back, then move B's last entry to the end of A
        for table in (audit_log, audit_heads):
            for old, new in ((wa, "w-tmp"), (wb, wa), ("w-tmp", wb)):
                conn.execute(table.update().where(table.c.writer == old).values(writer=new))
    assert _problems(ctx, key) == []
    last_b = _chain(ctx, b)[4]
    _sql(ctx, "UPDATE audit_log SET writer = :w, seq = 6 WHERE id = :id", w=wa, id=last_b.id)
    problems = " | ".join(_problems(ctx, key))
    assert f"entry {last_b.id} (writer {wa}, seq 6): hash mismatch" in problems
    assert f"writer {wb}: seq 5, anchored by entry" in problems


def test_anchoring_reads_the_heads_once_per_interval_and_again_after_a_rollback(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    from sqlalchemy import event

    a, b = writers(), writers()
    _write(a, 1, T0)
    reads: list[str] = []

    def count(_conn, _cursor, statement, *_args) -> None:  # type: ignore[no-untyped-def]
        if "FROM audit_heads" in statement:
            reads.append(statement)

    event.listen(b.engine, "before_cursor_execute", count)
    _write(b, 3, T0 + timedelta(seconds=1))  # the first append anchors
    assert len(reads) == 1
    _write(b, 3, T0 + timedelta(seconds=20))  # within the interval: nothing to read
    assert len(reads) == 1
    with pytest.raises(RuntimeError), b.begin():  # an anchoring entry that rolls back ...
        audit.append(b, event="lost", outcome="ok", now=T0 + timedelta(seconds=40))
        raise RuntimeError("the change failed")
    assert len(reads) == 2
    _write(a, 1, T0 + timedelta(seconds=41))
    _write(b, 1, T0 + timedelta(seconds=42))  # ... is made again by the next append
    assert len(reads) == 3
    event.remove(b.engine, "before_cursor_execute", count)
    assert json.loads(_chain(ctx, b)[-1].anchors)[0][:2] == [_chain(ctx, a)[0].writer, 2]
    assert _problems(ctx, key) == []


# -- pruning past the retention (issue 23, item 3) ---------------------------------------
def _pruned_chains(
    ctx: ServiceContext, writers: Callable[[], Connection]
) -> tuple[Connection, Connection]:
    """Two anchored chains, then pruned by the real purge three years (the default audit
    retention) after T0 + 5 s: A keeps seq 4-6, B keeps 6-7, each behind a sealed checkpoint."""
    from service.usecases.purge import purge

    a, b = _two_anchored_chains(writers)  # A 1-3 at T0, B 1-5 at T0+1s, A 4-5 at T0+40s
    _write(b, 2, T0 + 2 * audit.ANCHOR_INTERVAL + timedelta(seconds=20))  # B 6 anchors A 5
    _write(a, 1, T0 + 4 * audit.ANCHOR_INTERVAL)  # A 6 anchors B 7
    removed = purge(ctx, now=T0 + timedelta(days=3 * 365, seconds=5), batch=2)
    assert removed is not None and removed["audit"] == 8
    return a, b


def test_a_pruned_trail_still_verifies_and_keeps_its_checkpoints(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection], cli_env: dict[str, str]
) -> None:
    a, b = _pruned_chains(ctx, writers)
    assert [r.seq for r in _chain(ctx, a)] == [4, 5, 6]
    assert [r.seq for r in _chain(ctx, b)] == [6, 7]
    assert _problems(ctx, key) == []
    ok = CliRunner().invoke(audit_cli, ["verify"], env=cli_env)
    assert ok.exit_code == 0 and ok.output.startswith("audit chain OK"), ok.output
    _write(a, 2, T0 + timedelta(days=3 * 365, seconds=10))  # the chain carries on
    assert _problems(ctx, key) == []


def test_after_pruning_an_edit_a_deletion_and_a_reordering_are_still_found(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    a, b = _pruned_chains(ctx, writers)
    first, middle = _chain(ctx, a)[0], _chain(ctx, a)[1]
    saved = _rows(ctx)

    def restore() -> None:
        with ctx.engine.begin() as conn:
            conn.execute(audit_log.delete())
            conn.execute(audit_log.insert(), [dict(r._mapping) for r in saved])
        assert _problems(ctx, key) == []

    _sql(ctx, "UPDATE audit_log SET outcome = 'denied' WHERE id = :id", id=middle.id)
    assert _problems(ctx, key)[0].startswith(f"entry {middle.id} (writer {middle.writer}, seq 5)")
    restore()
    _sql(ctx, "DELETE FROM audit_log WHERE id = :id", id=middle.id)
    assert "seq gap, entries deleted after seq 4" in _problems(ctx, key)[0]
    restore()
    # The first kept entry deleted: the chain no longer continues from its checkpoint.
    _sql(ctx, "DELETE FROM audit_log WHERE id = :id", id=first.id)
    assert "seq gap, entries deleted after seq 3" in _problems(ctx, key)[0]
    restore()
    b6, b7 = _chain(ctx, b)
    with ctx.engine.begin() as conn:
        conn.execute(text("UPDATE audit_log SET seq = -1 WHERE id = :id"), {"id": b6.id})
        conn.execute(text("UPDATE audit_log SET seq = 6 WHERE id = :id"), {"id": b7.id})
        conn.execute(text("UPDATE audit_log SET seq = 7 WHERE id = :id"), {"id": b6.id})
    assert _problems(ctx, key)


def test_after_pruning_a_chain_removed_whole_is_found(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    from service.storage.tables import audit_checkpoints

    a, b = _pruned_chains(ctx, writers)
    gone = _chain(ctx, b)[0].writer
    with ctx.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.writer == gone))
        conn.execute(audit_heads.delete().where(audit_heads.c.writer == gone))
        conn.execute(audit_checkpoints.delete().where(audit_checkpoints.c.writer == gone))
    problems = _problems(ctx, key)
    assert len(problems) == 1 and problems[0].startswith(f"writer {gone}: seq 7, anchored by")
    assert "whole chain are missing" in problems[0]


def test_a_checkpoint_forged_moved_or_removed_is_found(
    ctx: ServiceContext, key: bytes, writers: Callable[[], Connection]
) -> None:
    """Without the key nobody can prune more than the purge did and hide it."""
    from service.storage.tables import audit_checkpoints

    a, _b = _pruned_chains(ctx, writers)
    first = _chain(ctx, a)[0]
    with ctx.engine.begin() as conn:
        conn.execute(audit_log.delete().where(audit_log.c.id == first.id))
        conn.execute(
            audit_checkpoints.update()
            .where(audit_checkpoints.c.writer == first.writer)
            .values(seq=first.seq, hash=first.hash)
        )
    problems = _problems(ctx, key)
    assert f"writer {first.writer}: checkpoint MAC mismatch (forged checkpoint)" in problems
    assert any("seq gap, entries deleted at the start" in p for p in problems)
    with ctx.engine.begin() as conn:
        conn.execute(audit_checkpoints.delete())
    assert any("seq gap, entries deleted at the start" in p for p in _problems(ctx, key))
