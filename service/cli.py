"""The ``idv`` command: serve, db upgrade, clients, policy and keys.

A bad setting or policy file stops the command with one line naming the culprit (exit 2),
never a traceback.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from typing import Any

import click

from service.crypto.keyring import KeyRingError, adopt_profile
from service.domain.errors import ConfigError, IdvError, PolicyError
from service.settings import Settings


def _settings() -> Settings:
    return Settings.from_env()


def prepare(settings: Settings) -> None:
    """Make the service ready to start: key ring present; schema created (SQLite) or checked."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from service.domain.policy import load_policy
    from service.factors.registry import CATALOG
    from service.storage.db import alembic_config, make_engine, upgrade

    load_policy(settings.policy_file, factors=CATALOG)
    changed = adopt_profile(settings.key_file, settings.keys_json, settings.crypto_profile)
    if changed:  # e.g. the first start under IDV_CRYPTO_PROFILE=gm: SM4 and SM2 keys added
        click.echo(
            f"idv: key ring ready for the {settings.crypto_profile} profile: added "
            f"{', '.join(changed)}",
            err=True,
        )
    engine = make_engine(settings.database_url)
    try:
        if settings.is_sqlite:
            upgrade(engine)
            return
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
        if current != head:
            raise ConfigError(
                "IDV_DATABASE_URL",
                f"schema is at {current}, not {head}: run `idv db upgrade` first",
            )
    finally:
        engine.dispose()


@click.group()
def cli() -> None:
    """idv: identity verification and step-up authentication."""


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--workers",
    default=None,
    type=int,
    help="Processes (default: 1 without IDV_REDIS_URL, which allows no more; with it, one per"
    " core on PostgreSQL, at most 2 on SQLite).",
)
@click.option("--threads", default=8, show_default=True, type=int)
def serve(host: str, port: int, workers: int | None, threads: int) -> None:
    """Serve the API with gunicorn."""
    import os

    from gunicorn.app.base import BaseApplication

    from service import workers as worker_plan
    from service.app import create_app, settle_heap
    from service.http.server import configure

    settings = _settings()
    plan = worker_plan.plan(settings, workers, worker_plan.usable_cores())
    workers = plan.workers
    settings = worker_plan.share_argon2(settings, workers, os.environ)
    prepare(settings)

    class _Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            configure(self.cfg, settings, bind=f"{host}:{port}", workers=workers, threads=threads)

        def load(self):  # type: ignore[no-untyped-def]
            from service.storage.db import Checkpointer
            from service.usecases.notify import Deliverer
            from service.usecases.purge import Purger

            app = create_app(settings)
            Deliverer(app.extensions["idv"]).start()  # durable outbox → tenants' webhooks
            Checkpointer(app.extensions["idv"].engine).start()  # SQLite: WAL off the requests
            Purger(app.extensions["idv"]).start()  # IDV_RETENTION, small batches (issue 23)
            settle_heap()  # start-up objects out of the GC's full collections (short pauses)
            return app

    click.echo(plan.line, err=True)  # how many cores idv uses, and why not more
    click.echo(
        f"idv serving on http://{host}:{port} ({workers} worker(s), {threads} threads)", err=True
    )
    _Server().run()


@cli.command("purge")
@click.option("--dry-run", is_flag=True, help="Count what would go; remove nothing.")
def purge_command(dry_run: bool) -> None:
    """Remove what is past its retention (IDV_RETENTION) now; print what went per kind."""
    from service.usecases.purge import purge

    ctx = _context()
    try:
        removed = purge(ctx, dry_run=dry_run)
    finally:
        ctx.engine.dispose()
    if removed is None:
        click.echo("another instance is purging now; nothing done")
        return
    verb = "would remove" if dry_run else "removed"
    for kind, count in removed.items():
        click.echo(f"{kind}: {verb} {count}")


@cli.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Create or upgrade the schema (run this for PostgreSQL deployments)."""
    from service.storage.db import make_engine, upgrade

    engine = make_engine(_settings().database_url)
    upgrade(engine)
    engine.dispose()
    click.echo("schema is up to date")


@cli.group()
def clients() -> None:
    """API clients (tenants)."""


def _context():  # type: ignore[no-untyped-def]
    from service.context import ServiceContext

    settings = _settings()
    prepare(settings)
    return ServiceContext.build(settings)


@clients.command("create")
@click.argument("name")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["verify", "carrier", "admin"]),
    help="Repeat for several scopes (default: verify).",
)
@click.option("--expires-in-days", type=click.IntRange(1, 3650), default=None)
@click.option("--issuer", default=None, help="The tenant's name in authenticator apps (速借).")
def clients_create(
    name: str, scopes: tuple[str, ...], expires_in_days: int | None, issuer: str | None
) -> None:
    """Create a client; its API key is the last line of output, shown only this once."""
    from service.usecases.clients import create_client

    ctx = _context()
    expires = ctx.clock() + timedelta(days=expires_in_days) if expires_in_days else None
    client, key = create_client(ctx, name, list(scopes) or ["verify"], expires, issuer)
    click.echo(f"client_id: {client.id}")
    click.echo(f"scopes: {' '.join(client.scopes)}")
    click.echo("api key (shown once, stored hashed):")
    click.echo(key)


@clients.command("list")
def clients_list() -> None:
    """List clients (never their keys)."""
    from service.storage import clients as store

    ctx = _context()
    with ctx.engine.connect() as conn:
        for c in store.all_clients(conn):
            state = "revoked" if c.revoked_at else "active"
            used = c.last_used_at.isoformat() if c.last_used_at else "never"
            click.echo(f"{c.id}\t{c.name}\t{','.join(c.scopes)}\t{state}\tlast used {used}")


def _change_client(
    client_id: str, setter: Any, value: Any, event: str, **audit_fields: Any
) -> None:
    """Set one of CLIENT_ID's settings with ``setter`` and audit it, in one transaction."""
    from service.storage import audit

    ctx = _context()
    with ctx.engine.begin() as conn:
        if not setter(conn, client_id, value):
            raise click.ClickException(f"no client {client_id}")
        audit.append(
            conn, event=event, outcome="ok", now=ctx.clock(), client_id=client_id, **audit_fields
        )


@clients.command("issuer")
@click.argument("client_id")
@click.argument("name")
def clients_issuer(client_id: str, name: str) -> None:
    """Set CLIENT_ID's name in authenticator apps: the otpauth issuer of new TOTP set-ups."""
    from service.storage import clients as store
    from service.usecases.clients import check_issuer

    issuer = check_issuer(name)
    _change_client(client_id, store.set_issuer, issuer, "client.issuer", operator="cli")
    click.echo(f"issuer of {client_id}: {issuer}")


@clients.command("webauthn")
@click.argument("client_id")
@click.option("--rp-id", required=True, help="The WebAuthn relying party id, e.g. loans.example.")
@click.option(
    "--origin",
    "origins",
    multiple=True,
    required=True,
    help="An origin ceremonies may come from, e.g. https://loans.example (repeatable).",
)
def clients_webauthn(client_id: str, rp_id: str, origins: tuple[str, ...]) -> None:
    """Set CLIENT_ID's WebAuthn relying party: its passkeys are bound to RP_ID and accepted
    only from these origins (API.md, Passkeys)."""
    from service.domain.errors import InvalidRequest
    from service.factors.passkey import check_relying_party
    from service.storage import audit
    from service.storage import clients as store

    ctx = _context()
    try:
        rp_id, checked = check_relying_party(rp_id, list(origins))
    except InvalidRequest as exc:
        raise click.BadParameter(str(exc)) from None
    with ctx.engine.begin() as conn:
        if not store.set_webauthn(conn, client_id, rp_id, checked):
            raise click.ClickException(f"no client {client_id}")
        audit.append(
            conn,
            event="client.webauthn",
            outcome="ok",
            now=ctx.clock(),
            client_id=client_id,
            operator="cli",
            detail={"rp_id": rp_id, "origins": checked},
        )
    click.echo(f"WebAuthn relying party of {client_id}: {rp_id} ({', '.join(checked)})")


@clients.command("revoke")
@click.argument("client_id")
def clients_revoke(client_id: str) -> None:
    """Revoke a client's API key at once, on every instance."""
    from service.storage import audit
    from service.storage import clients as store

    ctx = _context()
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        if not store.revoke(conn, client_id, now):
            raise click.ClickException(f"no live client {client_id}")
        audit.append(
            conn, event="client.revoked", outcome="ok", now=now, client_id=client_id, operator="cli"
        )
    click.echo(f"revoked {client_id}")


@cli.group()
def policy() -> None:
    """Policy files."""


@policy.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def policy_check(file: str) -> None:
    """Validate a policy file; a problem names the file, the key and what is wrong."""
    from service.domain.policy import load_policy
    from service.factors.registry import CATALOG

    loaded = load_policy(file, factors=CATALOG)
    click.echo(f"{file}: OK ({len(loaded.actions)} actions: {', '.join(sorted(loaded.actions))})")


@policy.command("explain")
@click.argument("action")
@click.option("--factors", default="", help="Factor types the subject has, e.g. totp,knowledge,sms")
@click.option(
    "--signal",
    "signals",
    multiple=True,
    help="sim_swap=2d, sim_unblocked=1h, sim_lost=3h, number_recycled, "
    "signal_unavailable, onboarding, event:password_reset=3h, event:recovered=10m, locked=10m",
)
@click.option(
    "--policy-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Default: IDV_POLICY_FILE or the packaged default policy.",
)
def policy_explain(
    action: str, factors: str, signals: tuple[str, ...], policy_file: str | None
) -> None:
    """Print the decision for ACTION and the rules behind it (touches no database)."""
    from service.domain.clock import utcnow
    from service.domain.policy import decide, format_decision, load_policy, state_from_args
    from service.factors.registry import CATALOG

    loaded = load_policy(policy_file or _settings().policy_file, factors=CATALOG)
    now = utcnow()
    try:
        names = [f for f in factors.split(",") if f]
        state = state_from_args(names, list(signals), now, known=CATALOG.names)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    click.echo(format_decision(decide(loaded, action, state, now)))


@cli.group()
def keys() -> None:
    """Key ring."""


@keys.command("rotate-signing")
@click.option(
    "--alg",
    type=click.Choice(["ES256", "EdDSA", "SM2"]),
    default=None,
    help="Default: ES256, or SM2 under IDV_CRYPTO_PROFILE=gm.",
)
def keys_rotate_signing(alg: str | None) -> None:
    """Add a signing key and sign with it from now on; older keys stay published in the JWKS
    (RFC 7517) so assertions they signed verify until they expire. Restart instances after."""
    from service.crypto.keyring import load_key_ring, new_signing_key, write_key_file

    settings = _settings()
    if settings.keys_json:
        raise click.ClickException("keys come from IDV_KEYS: rotate them in your secret store")
    alg = alg or ("SM2" if settings.crypto_profile == "gm" else "ES256")
    if alg == "SM2":
        _require_gm_library()
    ring = load_key_ring(settings.key_file, None, create=True, profile=settings.crypto_profile)
    key = new_signing_key(alg)
    ring.signing_keys.append(key)
    # Keys older than the previous one have outlived every assertion they signed (<= 5 min).
    ring.signing_keys[:] = ring.signing_keys[-3:]
    write_key_file(settings.key_file, ring)
    click.echo(
        f"new signing key {key.kid} ({alg}); published: "
        f"{', '.join(k.kid for k in ring.signing_keys)}"
    )


@keys.command("rotate")
def keys_rotate() -> None:
    """Add a data key (SM4-GCM under IDV_CRYPTO_PROFILE=gm), make it active and re-encrypt
    stored secrets with it in batches; rewrite keyed lookups under the profile. Old keys stay
    in the key ring, so values not yet rewritten keep working."""
    from service.crypto.keyring import load_key_ring, write_key_file
    from service.usecases.keys import reencrypt, rewrite_lookups

    settings = _settings()
    if settings.keys_json:
        raise click.ClickException("keys come from IDV_KEYS: rotate them in your secret store")
    ctx = _context()
    ring = load_key_ring(settings.key_file, None, create=False, profile=settings.crypto_profile)
    kid = ring.add_data_key()
    if settings.crypto_profile not in ring.lookup_profiles:
        ring.lookup_profiles.insert(0, settings.crypto_profile)
    write_key_file(settings.key_file, ring)  # saved first: nothing is ever encrypted under
    count = reencrypt(ctx, ring)  # a key that is not on disk
    lookups = rewrite_lookups(ctx, ring)
    if ring.lookup_profiles != [settings.crypto_profile]:
        # Every keyed lookup is now under this profile: lookups stop trying the others.
        ring = load_key_ring(settings.key_file, None, create=False, profile=ring.profile)
        ring.lookup_profiles[:] = [settings.crypto_profile]
        write_key_file(settings.key_file, ring)
    click.echo(
        f"new data key {kid}; re-encrypted {count} value(s), rewrote {lookups} keyed "
        "lookup(s). Restart instances to encrypt new values with it."
    )


def _require_gm_library() -> None:
    from service.crypto import profile

    try:
        profile.require_library(profile.GM)
    except profile.ProfileUnavailable as exc:
        raise ConfigError("--alg SM2", str(exc)) from None


@cli.group()
def subjects() -> None:
    """Subjects."""


@subjects.command("unlock")
@click.argument("client_id")
@click.argument("subject_id")
@click.option("--operator", required=True, help="Who unlocks (recorded in the audit trail).")
def subjects_unlock(client_id: str, subject_id: str, operator: str) -> None:
    """End a subject's lockout and reset its failure counters (audited)."""
    from service.storage import audit
    from service.storage import subjects as store
    from service.usecases.subjects import subject_ref

    ctx = _context()
    now = ctx.clock()
    ref = subject_ref(ctx, client_id, subject_id)
    with ctx.engine.begin() as conn:
        subject = store.get(conn, client_id, subject_id)
        if subject is None:
            raise click.ClickException("no such subject for that client")
        store.unlock(conn, subject.pk)
        # The lockout counts failures from this moment on (``verifications.failures_since``).
        store.record_event(conn, subject.pk, "unlocked", now)
        audit.append(
            conn,
            event="subject.unlocked",
            outcome="ok",
            now=now,
            client_id=client_id,
            subject_ref=ref,
            operator=operator,
        )
    from service.factors.registry import NAMES

    for factor in NAMES:
        for action in ctx.policy.actions.values():
            ctx.limits.reset("failed_proofs", ref, factor, action_limits=action.limits)
    ctx.limits.reset("subject_failures", ref)
    click.echo(f"unlocked {subject_id}")


@cli.command("carrier-sim")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9090, show_default=True, type=int)
@click.option(
    "--script",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="JSON timeline of numbers (swaps, recycling, failure modes).",
)
def carrier_sim(host: str, port: int, script: str | None) -> None:
    """Serve a CAMARA SIM Swap / Number Recycling simulator for development and tests."""
    from service.carrier.simulator import run_simulator

    run_simulator(host, port, script)


def _register_groups() -> None:
    """Command groups that live in their own modules."""
    from service.cli_audit import audit as audit_group

    cli.add_command(audit_group)


_register_groups()


@clients.command("webhook")
@click.argument("client_id")
@click.argument("url")
def clients_webhook(client_id: str, url: str) -> None:
    """Register CLIENT_ID's webhook URL for sensitive events; prints the signing secret once."""
    from service.storage import clients as store
    from service.usecases.notify import register

    ctx = _context()
    with ctx.engine.connect() as conn:
        if store.by_id(conn, client_id) is None:
            raise click.ClickException(f"no client {client_id}")
    secret = register(ctx, client_id, url)
    click.echo(f"webhook for {client_id}: {url}")
    click.echo("signing secret (shown once; verify Idv-Signature with it):")
    click.echo(secret)


@clients.command("attestation-key")
@click.argument("client_id")
@click.argument("pem_file")
def clients_attestation_key(client_id: str, pem_file: str) -> None:
    """Register a public key (PEM, ES256 or EdDSA) that CLIENT_ID signs attestations with;
    prints its key id (the JWS header's kid) alone on the last line."""
    from service.domain.errors import InvalidRequest
    from service.usecases.attested import register_key

    try:
        with open(pem_file, encoding="utf-8") as handle:
            pem = handle.read(65536)
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise InvalidRequest(f"cannot read {pem_file}: {reason}") from None
    kid = register_key(_context(), client_id, pem)
    click.echo(f"attestation key for {client_id} (JWS header kid):")
    click.echo(kid)


@clients.command("sms-regions")
@click.argument("client_id")
@click.argument("regions")
def clients_sms_regions(client_id: str, regions: str) -> None:
    """Let CLIENT_ID text only REGIONS (ISO 3166 codes, ``CN,HK``; ``any`` lifts the limit).

    An SMS to a phone of another region is then 422 ``factor_not_allowed``: a loan platform in
    China has no reason to text +882 (SMS pumping). Audited.
    """
    from service.storage import clients as store
    from service.usecases.sms_budget import parse_regions

    try:
        wanted = parse_regions(regions)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="REGIONS") from None
    detail = {"regions": sorted(wanted)}
    _change_client(client_id, store.set_sms_regions, wanted, "client.sms_regions", detail=detail)
    click.echo(f"{client_id} may text {', '.join(sorted(wanted)) or 'any region'}")


def main() -> None:
    """Entry point of the ``idv`` console script."""
    from sqlalchemy.exc import SQLAlchemyError

    from service.domain.text import storable

    if not all(storable(arg) for arg in sys.argv[1:]):
        # Bytes that are not UTF-8 arrive as lone surrogates, which no database takes.
        _fail("command-line arguments must be UTF-8 text without NUL characters")
    try:
        cli(standalone_mode=True)
    except (ConfigError, PolicyError, IdvError) as exc:
        _fail(str(exc))
    except KeyRingError as exc:
        _fail(f"IDV_KEY_FILE / IDV_KEYS: {exc}")
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        _fail(f"IDV_DATABASE_URL: cannot use the database: {reason}")
    except OSError as exc:
        _fail(
            f"cannot use {exc.filename or 'a file'}: {exc.strerror or exc} "
            "(check IDV_DATA_DIR, IDV_KEY_FILE and IDV_DATABASE_URL)"
        )


def _fail(line: str) -> None:
    """One clear line on stderr, exit status 2: never a traceback for a setting."""
    click.echo(f"idv: {line}", err=True)
    sys.exit(2)


if __name__ == "__main__":
    main()
