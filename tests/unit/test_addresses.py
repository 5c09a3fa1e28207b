"""Addresses as the audit trail keeps them: the /24 or /48 network, never the host (PIPL 51)."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from service.domain.addresses import truncated_network


def test_known_addresses() -> None:
    assert truncated_network("203.0.113.7") == "203.0.113.0/24"
    assert truncated_network(" 203.0.113.255 ") == "203.0.113.0/24"
    assert truncated_network("2001:db8:1:2::9") == "2001:db8:1::/48"
    assert truncated_network("fe80::1%eth0") == "fe80::/48"
    assert truncated_network("::ffff:198.51.100.23") == "198.51.100.0/24"
    for not_an_address in (None, "", "unknown", "13800138000", "203.0.113.7/32", "1.2.3"):
        assert truncated_network(not_an_address) is None


@given(st.ip_addresses())
def test_the_host_part_is_always_gone(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    network = ipaddress.ip_network(truncated_network(str(address)))
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    assert address in network
    assert network.prefixlen == (24 if address.version == 4 else 48)
