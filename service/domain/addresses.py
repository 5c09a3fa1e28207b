"""Network addresses as the audit trail keeps them: truncated to the network, never the host.

PIPL art. 51 (de-identification) and API.md "the audit trail stays, pseudonymised": a full
client address is personal data that outlives an erased subject in the audit trail. The trail
keeps the IPv4 /24 or the IPv6 /48 instead: enough to see which operator, carrier network or
data centre a request came from (what an investigation of T1/T3 abuse needs), too coarse to
name a household or a phone. Truncation, not a keyed pseudonym: it needs no key, the same
prefix means the same network in every export and every instance, and no one holding the key
can undo it (an HMAC over 2^32 IPv4 addresses is reversed by trying them all).
"""

from __future__ import annotations

import ipaddress

IPV4_PREFIX = 24
IPV6_PREFIX = 48


def truncated_network(value: str | None) -> str | None:
    """``203.0.113.0/24`` for ``203.0.113.7``; ``2001:db8:1::/48`` for ``2001:db8:1:2::9``.

    An IPv4-mapped IPv6 address (``::ffff:203.0.113.7``) is truncated as the IPv4 it carries. A
    value that is not an address (callers supply ``context.ip`` themselves) is kept as nothing:
    it could hold anything, a phone number included, and identifies no network.
    """
    if not value:
        return None
    try:
        address = ipaddress.ip_address(value.strip().split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    prefix = IPV4_PREFIX if address.version == 4 else IPV6_PREFIX
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))
