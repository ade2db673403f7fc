"""Contiv's addressing rules that more than one process must agree on.

An endpoint's MAC is derived from its IPv4 address (spec §3.1): ``02:02`` followed
by the address's four bytes (``10.37.1.5`` → ``02:02:0a:25:01:05``).  The netmaster
writes it into the endpoint's record inside a Redis script (the ``mac()`` renderer
of :data:`contiv_sdn.store.lua.APPLY`, whose prefix is formatted in from
:data:`MAC_PREFIX` at import), and the Docker driver predicts it from the address
Docker's IPAM handed out, so that the veth can be made while the netmaster is still
allocating.  Both read the rule here, so they cannot drift apart; a test runs the
Lua renderer in a real redis-server against :func:`endpoint_mac`.
"""

from __future__ import annotations

import ipaddress

#: The first two bytes of every endpoint MAC (locally administered, unicast).
MAC_PREFIX = "02:02"


def endpoint_mac(ip: str) -> str:
    """The MAC of the endpoint holding IPv4 address ``ip``: :data:`MAC_PREFIX` + its bytes.

    Raises ValueError when ``ip`` is not a dotted-quad IPv4 address.
    """
    a, b, c, d = ipaddress.IPv4Address(ip).packed
    return f"{MAC_PREFIX}:{a:02x}:{b:02x}:{c:02x}:{d:02x}"


__all__ = ["MAC_PREFIX", "endpoint_mac"]
