"""Container MTU for each encapsulation, so encapsulated frames still fit the underlay.

The agent sets this MTU on the container's interface; the compiler does not
fragment, so a container MTU that ignores the tunnel overhead would make large
packets vanish silently between hosts.
"""

from __future__ import annotations

#: Outer Ethernet (14) + outer IPv4 (20) + UDP (8) + VXLAN header (8).
VXLAN_OVERHEAD = 50
#: The 802.1Q tag is added to the frame header on the uplink, not taken from the IP payload
#: (every Ethernet NIC accepts the 4 extra bytes), so VLAN costs the container nothing.
VLAN_OVERHEAD = 0

_OVERHEAD = {"vxlan": VXLAN_OVERHEAD, "vlan": VLAN_OVERHEAD}
_MIN_IPV4_MTU = 68


def container_mtu(encap: str, underlay_mtu: int = 1500) -> int:
    """The MTU for a container interface on a network with ``encap`` over ``underlay_mtu``."""
    try:
        overhead = _OVERHEAD[encap]
    except KeyError:
        raise ValueError(f"unknown encapsulation {encap!r} (expected vxlan or vlan)") from None
    mtu = underlay_mtu - overhead
    if mtu < _MIN_IPV4_MTU:
        raise ValueError(f"underlay MTU {underlay_mtu} leaves {mtu} for {encap}, below IPv4's {_MIN_IPV4_MTU}")
    return mtu
