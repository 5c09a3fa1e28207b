"""Attested proofing around the proof itself: tenants' keys, and watching their use.

The verifier is ``service.factors.attested``; the proof's order of checks is
``service.usecases.proofs``. Here: registering a tenant's public key (``idv clients
attestation-key``) and the alert when one tenant's accepted attestations spike. A tenant that
vouches for people is a new way into their accounts; a compromised tenant key, or an insider
at the tenant (T3), would show as a burst of attestations.
"""

from __future__ import annotations

from service.context import ServiceContext
from service.domain.errors import NotFound
from service.factors.attested import parse_public_key
from service.storage import attestations as store
from service.storage import audit
from service.storage import clients as client_store
from service.storage.clients import ClientRecord
from service.usecases.operators import alert_tenant


def register_key(ctx: ServiceContext, client_id: str, pem: str) -> str:
    """Register ``pem`` (ES256 or EdDSA) as one of ``client_id``'s attestation keys; its key id.

    Registering the same key again changes nothing and names the same key id.
    """
    key = parse_public_key(pem)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        if client_store.by_id(conn, client_id) is None:
            raise NotFound(f"no client {client_id}")
        added = store.add_key(conn, client_id, key, now)
        audit.append(
            conn,
            event="client.attestation_key",
            outcome="added" if added else "unchanged",
            now=now,
            client_id=client_id,
            operator="cli",
            detail={"kid": key.kid, "alg": key.alg},
        )
    return key.kid


def watch_accepted(ctx: ServiceContext, client: ClientRecord) -> None:
    """Count an accepted attestation of ``client``; alert on each one past the spike threshold.

    "Spike": more accepted attestations in the window than the ``attestation_alert`` limit
    (``IDV_RATE_LIMITS``, default in ``service.ratelimit.DEFAULTS``). Every accepted one past
    the mark alerts, as the support desk's bulk reads do.
    """
    if ctx.limits.remaining("attestation_alert", client.id) == 0:
        alert_tenant(ctx, client, "attestation_spike")
    ctx.limits.record("attestation_alert", client.id)
