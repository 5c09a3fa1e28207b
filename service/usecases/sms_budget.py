"""What one tenant may text, and where (issue 20 items 3 and 4; ASVS 6.6.3).

Every SMS challenge is charged here, before the code is made, against:

- the tenant's budget for the phone (``sms_sends``, ``sms_sends_daily``): keyed by tenant and
  phone, so one tenant creating its own subject with another tenant's user's number spends
  only its own budget, and learns nothing of the other's sends (its ``Retry-After`` is its own);
- a ceiling per phone across tenants (``sms_phone``, ``sms_phone_daily``) against toll fraud,
  higher than any one tenant's budget (checked at start) and charged only with sends the
  tenant's own budget already took, so no tenant reaches it alone;
- the tenant's whole SMS budget (``sms_client``, ``sms_client_daily``) against SMS pumping;
- its calling regions (``idv clients sms-regions``): a phone outside them is 422
  ``factor_not_allowed``; a tenant with none set may text any region, ``sms_calling_code`` a
  minute per calling code;
- an ``operator.alert`` (audit entry + webhook) when the tenant's sends in a minute pass
  ``sms_surge`` and three times its per-minute average of the previous hour.

All or nothing: a refused send gives back whatever it had counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import phonenumbers
from sqlalchemy import Connection

from service.context import ServiceContext
from service.domain.errors import FactorNotAllowed, RateLimited
from service.ratelimit import parse_limit
from service.storage import audit
from service.storage.clients import ClientRecord
from service.usecases import notify

SURGE_FACTOR = 3  # a minute at three times the previous hour's average is a jump


def parse_regions(text: str) -> frozenset[str]:
    """``"CN,HK"`` as ISO 3166 region codes phonenumbers knows; ``"any"``: no restriction."""
    if text.strip().lower() == "any":
        return frozenset()
    regions = frozenset(part.strip().upper() for part in text.split(",") if part.strip())
    unknown = sorted(regions - phonenumbers.SUPPORTED_REGIONS)
    if not regions or unknown:
        raise ValueError(
            f"not ISO 3166 region codes with phone numbers: {', '.join(unknown) or text!r} "
            "(e.g. CN,HK, or 'any')"
        )
    return regions


def charge(
    ctx: ServiceContext,
    conn: Connection,
    client: ClientRecord,
    phone: str,
    phone_hash: str,
    action_limits: Mapping[str, str],
    now: datetime,
) -> None:
    """Count one SMS to ``phone`` for ``client`` against every budget, or raise (nothing
    counted): ``FactorNotAllowed`` outside the tenant's regions, ``RateLimited`` otherwise."""
    parsed = phonenumbers.parse(phone, None)
    if client.sms_regions:
        region = phonenumbers.region_code_for_number(parsed)
        if region not in client.sms_regions:
            raise FactorNotAllowed("this tenant does not send SMS to that region")
    own = [
        ("sms_sends", (client.id, phone_hash)),
        ("sms_sends_daily", (client.id, phone_hash)),
        ("sms_client", (client.id,)),
        ("sms_client_daily", (client.id,)),
    ]
    if not client.sms_regions:
        own.append(("sms_calling_code", (client.id, str(parsed.country_code))))
    taken = ctx.limits.take_all(own, action_limits=action_limits)
    try:
        for kind in ("sms_phone", "sms_phone_daily"):
            taken.append(_ceiling(ctx, kind, phone_hash))
    except BaseException:
        ctx.limits.give_back(taken)
        raise
    _watch(ctx, conn, client, now)


def _ceiling(ctx: ServiceContext, kind: str, phone_hash: str):  # type: ignore[no-untyped-def]
    """Take a place under the phone's ceiling. When it is full the answer reveals nothing of
    the other tenants' sends: no count, and ``Retry-After`` is the whole window, the same
    whoever sent when."""
    try:
        return ctx.limits.take(kind, phone_hash)
    except RateLimited:
        window = parse_limit(ctx.limits.limit_for(kind)).get_expiry()
        raise RateLimited(
            "too many SMS to this phone number; retry later", retry_after=window
        ) from None


def _watch(ctx: ServiceContext, conn: Connection, client: ClientRecord, now: datetime) -> None:
    """Alert once when this send makes the tenant's minute a jump (in the send's transaction)."""
    minute, previous_hour = ctx.limits.tally("sms_surge", client.id)
    floor = parse_limit(ctx.limits.limit_for("sms_surge")).amount
    window = parse_limit(ctx.limits.limit_for("sms_surge")).get_expiry()
    usual = previous_hour * window / 3600
    if minute != max(floor, int(SURGE_FACTOR * usual) + 1):
        return  # only the send that crosses the mark alerts, once a window
    audit.append(
        conn,
        event="operator.alert",
        outcome="sms_surge",
        now=now,
        client_id=client.id,
        detail={"why": "sms_surge", "sent": minute, "previous_hour": previous_hour},
    )
    notify.event(
        conn,
        client.id,
        "",
        "operator.alert",
        now,
        why="sms_surge",
        sent=minute,
        previous_hour=previous_hour,
    )
