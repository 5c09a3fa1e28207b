"""Support-desk reads (scope ``admin``), watched while they happen (T3: the courier insiders).

Every read names its operator, is audited, is limited per operator, and raises an alert (audit
entry + webhook to the tenant) the moment an operator reads many subjects or asks for another
tenant's subject. Everything returned is masked.
"""

from __future__ import annotations

import json
from typing import Any

from service.context import ServiceContext
from service.domain.clock import rfc3339
from service.domain.errors import Forbidden, InvalidRequest, NotFound, RateLimited
from service.domain.phone import mask_phone
from service.storage import audit
from service.storage import factors as factor_store
from service.storage.clients import ClientRecord
from service.storage.db import scrub_wal
from service.storage.tables import verifications
from service.usecases import notify
from service.usecases.factors import recovery_waits, summaries
from service.usecases.subjects import erase as erase_subject
from service.usecases.subjects import find, phone_of, subject_ref

OPERATOR_MAX = 128


def _alert(
    ctx: ServiceContext, client: ClientRecord, operator: str, why: str, ip: str | None
) -> None:
    alert_tenant(ctx, client, why, operator=operator, ip=ip)


def alert_tenant(
    ctx: ServiceContext,
    client: ClientRecord,
    why: str,
    *,
    operator: str | None = None,
    ip: str | None = None,
) -> None:
    """An ``operator.alert`` (audit entry + webhook to the tenant): about one of its operators,
    or, without ``operator``, about the tenant itself (its attestations spiking)."""
    now = ctx.clock()
    who = {"operator": operator} if operator is not None else {}
    with ctx.engine.begin() as conn:
        audit.append(
            conn,
            event="operator.alert",
            outcome=why,
            now=now,
            client_id=client.id,
            operator=operator,
            ip=ip,
            detail={"why": why},
        )
        notify.event(conn, client.id, "", "operator.alert", now, **who, why=why)


def _watched(
    ctx: ServiceContext,
    client: ClientRecord,
    operator: str | None,
    tenant: str | None,
    ip: str | None,
) -> str:
    """The operator's name, once the header, the tenant and the operator's limits allow the
    request; alerts on a cross-tenant request and on bulk use (T3)."""
    if not operator or len(operator) > OPERATOR_MAX or not operator.isprintable():
        raise InvalidRequest("an Idv-Operator header naming the operator is required")
    if tenant is not None and tenant != client.id:
        _alert(ctx, client, operator, "cross_tenant_read", ip)
        raise Forbidden("operators read only their own tenant's subjects")
    who = f"{client.id}:{operator}"
    try:
        ctx.limits.hit("operator_reads", who)
    except RateLimited:
        _alert(ctx, client, operator, "read_limit_reached", ip)
        raise
    if ctx.limits.remaining("operator_alert", who) == 0:
        _alert(ctx, client, operator, "bulk_reads", ip)  # fires on every read past the mark
    ctx.limits.record("operator_alert", who)
    return operator


def erase(
    ctx: ServiceContext,
    client: ClientRecord,
    operator: str | None,
    subject_id: str,
    tenant: str | None,
    ip: str | None,
) -> None:
    """The support desk erases a subject (API.md ``DELETE /v1/admin/subjects/{id}``): the
    route takes scope ``admin`` (``verify`` alone is refused: an app backend erases only with
    the person's ``delete_account`` step-up), the operator named, audited, limited like reads,
    and alerted to the tenant every time (T3: an insider erasing accounts is what the tenant
    must see)."""
    operator = _watched(ctx, client, operator, tenant, ip)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        subject = find(ctx, conn, client, subject_id)
        ref = subject_ref(ctx, client.id, subject_id)
        erase_subject(conn, subject, now)
        why = "subject_erased"
        for event, outcome, detail in (
            ("operator.erase", "ok", {}),
            ("operator.alert", why, {"why": why}),
        ):
            audit.append(
                conn,
                event=event,
                outcome=outcome,
                now=now,
                client_id=client.id,
                operator=operator,
                ip=ip,
                subject_ref=ref,
                detail=detail,
            )
        notify.event(conn, client.id, subject_id, "operator.alert", now, operator=operator, why=why)
    scrub_wal(ctx.engine)


def lookup(
    ctx: ServiceContext,
    client: ClientRecord,
    operator: str | None,
    subject_id: str,
    tenant: str | None,
    ip: str | None,
) -> dict[str, Any]:
    """A subject's masked phone, factors and recent decisions, for operator ``operator``."""
    operator = _watched(ctx, client, operator, tenant, ip)
    now = ctx.clock()
    with ctx.engine.begin() as conn:
        try:
            subject = find(ctx, conn, client, subject_id)
        except NotFound:
            audit.append(
                conn,
                event="operator.read",
                outcome="not_found",
                now=now,
                client_id=client.id,
                operator=operator,
                ip=ip,
            )
            raise
        suspended = recovery_waits(conn, subject.pk, now)
        rows = summaries(conn, factor_store.for_subject(conn, subject.pk), suspended)
        recent = conn.execute(
            verifications.select()
            .where(verifications.c.subject_pk == subject.pk)
            .order_by(verifications.c.created_at.desc())
            .limit(10)
        ).all()
        audit.append(
            conn,
            event="operator.read",
            outcome="ok",
            now=now,
            client_id=client.id,
            operator=operator,
            ip=ip,
            subject_ref=subject_ref(ctx, client.id, subject_id),
        )
    phone = phone_of(ctx, subject)
    return {
        "subject_id": subject_id,
        "phone": mask_phone(phone) if phone else None,
        "locked_until": rfc3339(subject.locked_until) if subject.locked_until else None,
        "factors": rows,
        "recent_decisions": [
            {
                "verification_id": r.id,
                "action": r.action,
                "status": r.status,
                "reasons": json.loads(r.reasons),
                "created_at": rfc3339(r.created_at),
            }
            for r in recent
        ],
    }
