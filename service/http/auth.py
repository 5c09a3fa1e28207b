"""Bearer authentication and scopes for ``/v1`` routes."""

from __future__ import annotations

from flask import current_app, g, request

from service.context import ServiceContext
from service.domain.errors import Forbidden, InvalidRequest
from service.domain.text import storable
from service.storage.clients import ClientRecord
from service.usecases.clients import KnownKey, authenticate, recognise


def ctx() -> ServiceContext:
    """The wired service of this app."""
    return current_app.extensions["idv"]


def caller(scope: str | None) -> ClientRecord:
    """The authenticated client, which must hold ``scope`` if given (else 403 ``forbidden``)."""
    client: ClientRecord | None = g.get("idv_client")
    if client is None:
        client = authenticate(ctx(), request.headers.get("Authorization"))
        ctx().limits.hit("client", client.id)
        g.idv_client = client
    if scope is not None and scope not in client.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope")
    return client


def known_caller(scope: str) -> tuple[ClientRecord, KnownKey | None]:
    """``caller`` for the proof route: a key this process verified before comes from memory,
    with a ``KnownKey`` that the proof's first statement confirms live (revoked: 401 at once)."""
    client: ClientRecord | None = g.get("idv_client")
    if client is not None:
        if scope not in client.scopes:
            raise Forbidden(f"this API key lacks the {scope!r} scope")
        return client, None
    return recognised(ctx(), request.headers.get("Authorization"), scope, g)


def recognised(
    service: ServiceContext, authorization: str | None, scope: str, seen: object
) -> tuple[ClientRecord, KnownKey | None]:
    """The key's client (from memory when verified before), counted against its ``client``
    limit and set as ``seen.idv_client`` (the access log names it), then the scope check.
    Shared by ``known_caller`` and the proof route's WSGI fast path (``service.http.fast``)."""
    client, known = recognise(service, authorization)
    service.limits.hit("client", client.id)
    seen.idv_client = client  # type: ignore[attr-defined]
    if scope not in client.scopes:
        raise Forbidden(f"this API key lacks the {scope!r} scope")
    return client, known


def client_ip() -> str | None:
    """The peer address (X-Forwarded-For only when IDV_TRUST_PROXY is set)."""
    if ctx().settings.trust_proxy and request.headers.get("X-Forwarded-For"):
        forwarded = request.headers["X-Forwarded-For"].split(",")[0].strip()[:64]
        # gunicorn refuses control characters in header values (RFC 9110 §5.5); another WSGI
        # server may not, and the address is audited: the body parser's rule, here too.
        if not storable(forwarded):
            raise InvalidRequest("X-Forwarded-For holds a U+0000 or an unpaired surrogate")
        return forwarded
    return request.remote_addr
