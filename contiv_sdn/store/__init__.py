"""Redis access: the single source of truth for intent, allocations and endpoints.

Key layout (every name built in :mod:`contiv_sdn.store.keys`):

``contiv:rev``
    STRING integer, INCRed once by every mutation (the revision).
``contiv:ver``
    HASH kind → integer, bumped once per mutation that changes the kind; the
    optimistic-concurrency check of "nothing in this kind changed".
``contiv:kinds``
    SET of every kind ever written (what a snapshot reads).
``contiv:obj:<modeltype>``
    HASH key → config JSON of a model object (``obj:network``,
    ``obj:endpointGroup``, ``obj:Bgp``...), as the REST API returns it
    (including ``link-sets``/``links``).  Kind name ``"obj:<modeltype>"``.
``contiv:state:<kind>``
    HASH key → JSON of server-side state: ``network`` (netId, encap, vlan,
    vni, localVlan, subnet, gateway, networkTag, epCount...), ``tenant``
    (vrfId), ``endpointGroup`` (epgId, network, groupTag...), ``endpoint``,
    ``host`` (written by the netmaster for the agents, ``/plugin/registerHost``), ``serviceLB`` (the VIP), ``netmaster``
    (live netmaster instances).  Kind name = the plain ``<kind>``.
``contiv:alloc:vlan`` / ``:vxlan`` / ``:localvlan`` / ``:netid`` / ``:vrfid`` / ``:epgid``
    Bit strings, bit N set = N in use.  VLANs and VNIs are bounded by the
    global ranges at allocation time; local VLANs (for vxlan networks) come
    from 1–4094; netId/vrfId/epgId from 1–65535.  ``contiv:alloc:epgid:next``
    is the next-fit cursor of EPG ids (ids are handed out in sequence, like
    Contiv, but persistently — Contiv reset its counter to 1 on restart).
``contiv:alloc:ip:<tenant:net>``
    Bit string of IPv4 host indexes (bit 0 = network address): the gateway,
    EPG ip-pools and allocated addresses are set.  Allocation is lowest-free
    within the network's range, excluding index 0 and the broadcast.
``contiv:alloc:epgip:<tenant:group>``
    Bit string of the EPG ip-pool, same numbering as the network's.
``contiv:alloc:ip6:<tenant:net>``
    HASH of IPv6 host ids in use (decimal) plus ``last``.
``contiv:idx:epip:<tenant:net>``
    HASH IPv4 address → endpoint id (one address, one endpoint).
``contiv:changes``
    pub/sub channel; each changed record publishes
    ``{"kind","key","op":"set"|"del","rev"}``.  A subscriber that
    (re)connects must re-read everything with :meth:`Store.snapshot`.

Every mutation is one run of the ``APPLY`` Lua script (see
:mod:`contiv_sdn.store.txn`): guards, checks, allocations and writes, then
INCR of the revision and PUBLISH — so two netmasters on one Redis never hand
out the same tag, id or address.
"""

from contiv_sdn.store.store import RedisURL, Store, Subscription, connect
from contiv_sdn.store.txn import (
    Conflict, Finish, StoreError, StoreUnavailable, Txn, TxnResult, View, placeholder, transact,
)

__all__ = [
    "Store", "RedisURL", "Subscription", "connect", "Conflict", "StoreError", "StoreUnavailable",
    "Txn",
    "TxnResult", "View", "placeholder", "transact", "Finish",
]
