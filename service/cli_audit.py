"""``idv audit``: verify the tamper-evident audit chain, export entries as JSON lines."""

from __future__ import annotations

import json
import sys

import click

AUDIT_MAC_PURPOSE = "audit-mac"


@click.group()
def audit() -> None:
    """The audit trail: append-only, one hash chain per writer, every entry sealed with a MAC."""


@audit.command("verify")
def audit_verify() -> None:
    """Walk every chain; exit 1 naming the first bad entry (edited, deleted, reordered, forged)."""
    from service.cli import _context
    from service.storage.audit import stats, verify_chain

    ctx = _context()
    try:
        conn = ctx.engine.connect()
        if conn.dialect.name == "postgresql":
            # One snapshot: heads and entries read at the same moment while others append.
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        with conn:
            problems = verify_chain(conn, ctx.keys.derived_keys(AUDIT_MAC_PURPOSE))
            count, chains = stats(conn)
            conn.rollback()
    finally:
        ctx.engine.dispose()
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        click.echo(f"audit chain BROKEN: {problems[0]}{more}")
        sys.exit(1)
    click.echo(f"audit chain OK: {count} entries in {chains} chains")


@audit.command("export")
@click.option("--since", default=None, metavar="RFC3339", help="Only entries at or after this.")
def audit_export(since: str | None) -> None:
    """Write entries (with their hashes and MACs) to stdout as JSON lines, oldest first."""
    from service.cli import _context
    from service.domain.clock import parse_rfc3339
    from service.storage.audit import export

    try:
        start = parse_rfc3339(since) if since is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--since") from None
    ctx = _context()
    try:
        with ctx.engine.connect() as conn:
            for item in export(conn, start):
                click.echo(json.dumps(item, sort_keys=True, separators=(",", ":")))
            conn.rollback()
    finally:
        ctx.engine.dispose()
