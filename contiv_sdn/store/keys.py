"""Redis key names (the layout is documented in ``contiv_sdn/store/__init__.py``).

One place builds every key the Python side uses, so that the semantics, the
checker and the tests agree on the layout.  The Lua scripts in
:mod:`contiv_sdn.store.lua` spell their own bookkeeping keys (``contiv:rev``,
``contiv:ver``, ``contiv:kinds``, ``contiv:changes``) and get every other key
from the transaction program.
"""

from __future__ import annotations

PREFIX = "contiv:"
REV = "contiv:rev"
CHANGES = "contiv:changes"

# allocation bitmaps (bit N set = N in use)
ALLOC_VLAN = "contiv:alloc:vlan"
ALLOC_VXLAN = "contiv:alloc:vxlan"
ALLOC_LOCAL_VLAN = "contiv:alloc:localvlan"
ALLOC_NET_ID = "contiv:alloc:netid"
ALLOC_VRF_ID = "contiv:alloc:vrfid"
ALLOC_EPG_ID = "contiv:alloc:epgid"
CURSOR_EPG_ID = "contiv:alloc:epgid:next"


def hash_of(kind: str) -> str:
    """The Redis hash holding a kind: ``obj:<type>`` → ``contiv:obj:<type>``, else state."""
    if kind.startswith("obj:"):
        return PREFIX + kind
    return PREFIX + "state:" + kind


def obj_kind(modeltype: str) -> str:
    return "obj:" + modeltype


def ip_bitmap(network: str) -> str:
    """IPv4 host indexes of a network (``tenant:net``), bit 0 = the network address."""
    return f"contiv:alloc:ip:{network}"


def epg_ip_bitmap(group: str) -> str:
    """IPv4 host indexes (same numbering as the network's) of an EPG ip-pool."""
    return f"contiv:alloc:epgip:{group}"


def ip6_hash(network: str) -> str:
    """IPv6 host ids of a network: field = decimal host id, plus ``last``."""
    return f"contiv:alloc:ip6:{network}"


def ip_owner_hash(network: str) -> str:
    """IPv4 address → endpoint id, so one address never serves two endpoints."""
    return f"contiv:idx:epip:{network}"
