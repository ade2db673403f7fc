"""Cross-checks of what Redis holds: records, indexes and allocations agree.

Every mutation is one atomic transaction, so these invariants hold after any
sequence of requests, accepted or refused; a violation means a transaction
wrote half of what it should (the failure the hardening work rules out).  The
fuzz tests run :func:`check` after hostile batches, and an operator can run it
against a live store (``python -m contiv_sdn.store.consistency REDIS_URL``).

Invariants:

* every endpoint's network exists; its IPv4 address is set in the right
  bitmap (its group's ip-pool, else the network's) and the address index
  names it;
* every address-index entry belongs to an endpoint with that address or to
  the service whose VIP it is;
* ``epCount`` of each network and group equals its endpoints;
* config objects and state records of tenants, networks and groups pair up;
* every set bit of the tag and id bitmaps (VLAN, VNI, local VLAN, network,
  VRF and EPG ids) has exactly the owner that set it, and every owner's bit is
  set; every set bit of a network's address bitmap is its gateway, an
  endpoint's, a VIP, inside a group's pool, or in ``reserved`` (addresses
  handed out by ``allocAddress`` and not yet bound to an endpoint).
"""

from __future__ import annotations

import ipaddress
import sys
from typing import Dict, Iterable, List, Mapping, Optional, Set, Tuple

from contiv_sdn.store import keys as K
from contiv_sdn.store.bitmap import runs

Data = Mapping[str, Mapping[str, dict]]


def set_bits(data: bytes) -> Set[int]:
    """Positions of the set bits of a Redis bit string."""
    return {p for a, b in runs(data, 0, len(data) * 8 - 1) for p in range(a, b + 1)}


def _ip_index(state: dict, ip: str) -> Optional[int]:
    """Host index of ``ip`` in the network's subnet (bit numbering of the bitmap)."""
    try:
        net = ipaddress.IPv4Network(f"{state['subnetIP']}/{state['subnetLen']}", strict=False)
        return int(ipaddress.IPv4Address(ip)) - int(net.network_address)
    except (KeyError, ValueError):
        return None


def problems(data: Data, owners: Mapping[str, Mapping[str, str]],
             ip_bits: Mapping[str, Set[int]], pool_bits: Mapping[str, Set[int]],
             tag_bits: Mapping[str, Set[int]],
             reserved: Iterable[Tuple[str, str]] = ()) -> List[str]:
    """The invariants above over plain data (pure).

    ``owners``: network key → {address: owner} (the ``idx:epip`` hashes);
    ``ip_bits``/``pool_bits``: network / group key → set bit positions;
    ``tag_bits``: bitmap key (``K.ALLOC_*``) → set bit positions;
    ``reserved``: (network key, address) pairs a client holds from ``allocAddress``.
    """
    out: List[str] = []
    nets = data.get("network", {})
    groups = data.get("endpointGroup", {})
    endpoints = data.get("endpoint", {})
    services = data.get("serviceLB", {})
    reserved_by_net: Dict[str, Set[str]] = {}
    for net, ip in reserved:
        reserved_by_net.setdefault(net, set()).add(ip)

    ep_count: Dict[str, int] = {}
    grp_count: Dict[str, int] = {}
    for eid, ep in endpoints.items():
        net = ep.get("network")
        if net not in nets:
            out.append(f"endpoint {eid}: network {net} has no state")
            continue
        ep_count[net] = ep_count.get(net, 0) + 1
        if ep.get("group"):
            grp_count[ep["group"]] = grp_count.get(ep["group"], 0) + 1
        ip = ep.get("ipAddress") or ""
        if not ip:
            continue
        if owners.get(net, {}).get(ip) != eid:
            out.append(f"endpoint {eid}: address index of {net} has {ip} -> "
                       f"{owners.get(net, {}).get(ip)!s}")
        idx = _ip_index(nets[net], ip)
        grp = groups.get(ep.get("group") or "")
        bits = pool_bits.get(grp["key"], set()) if grp and grp.get("ipPool") else \
            ip_bits.get(net, set())
        if idx is None or idx not in bits:
            out.append(f"endpoint {eid}: address {ip} not allocated")

    vips = {(s.get("network"), s.get("ipAddress")): key for key, s in services.items()}
    for net, index in owners.items():
        for ip, owner in index.items():
            if owner.startswith("service:"):
                if vips.get((net, ip)) != owner[len("service:"):]:
                    out.append(f"address index {net} {ip}: service {owner[8:]} has no such VIP")
            elif (endpoints.get(owner) or {}).get("ipAddress") != ip:
                out.append(f"address index {net} {ip}: endpoint {owner} does not hold it")

    for key, st in nets.items():
        if int(st.get("epCount", 0)) != ep_count.get(key, 0):
            out.append(f"network {key}: epCount {st.get('epCount')} but "
                       f"{ep_count.get(key, 0)} endpoints")
    for key, st in groups.items():
        if int(st.get("epCount", 0)) != grp_count.get(key, 0):
            out.append(f"group {key}: epCount {st.get('epCount')} but "
                       f"{grp_count.get(key, 0)} endpoints")

    for kind, obj_kind in (("tenant", "obj:tenant"), ("network", "obj:network"),
                           ("endpointGroup", "obj:endpointGroup")):
        states, objs = set(data.get(kind, {})), set(data.get(obj_kind, {}))
        for key in sorted(states - objs):
            out.append(f"{kind} {key}: state without config")
        for key in sorted(objs - states):
            out.append(f"{kind} {key}: config without state")

    want: Dict[str, Dict[int, str]] = {k: {} for k in (
        K.ALLOC_VLAN, K.ALLOC_VXLAN, K.ALLOC_LOCAL_VLAN, K.ALLOC_NET_ID, K.ALLOC_VRF_ID,
        K.ALLOC_EPG_ID)}

    def owns(bitmap: str, value, who: str) -> None:
        v = int(value or 0)
        if v <= 0:
            return
        if v in want[bitmap]:
            out.append(f"{bitmap} bit {v}: held by {want[bitmap][v]} and {who}")
        want[bitmap][v] = who

    for key, st in nets.items():
        if st.get("encap") == "vlan":
            owns(K.ALLOC_VLAN, st.get("vlan"), f"network {key}")
        else:
            owns(K.ALLOC_VXLAN, st.get("vni"), f"network {key}")
            owns(K.ALLOC_LOCAL_VLAN, st.get("localVlan"), f"network {key}")
        owns(K.ALLOC_NET_ID, st.get("netId"), f"network {key}")
    for key, st in data.get("tenant", {}).items():
        owns(K.ALLOC_VRF_ID, st.get("vrfId"), f"tenant {key}")
    for key, st in groups.items():
        owns(K.ALLOC_EPG_ID, st.get("epgId"), f"group {key}")
    for bitmap, expect in want.items():
        have = tag_bits.get(bitmap, set())
        for v in sorted(have - set(expect)):
            out.append(f"{bitmap} bit {v} set without an owner")
        for v in sorted(set(expect) - have):
            out.append(f"{bitmap} bit {v} of {expect[v]} not set")

    for key, st in nets.items():
        legit: Set[Optional[int]] = {_ip_index(st, st["gateway"])} if st.get("gateway") else set()
        legit |= {_ip_index(st, ip) for ip in owners.get(key, {})}
        legit |= {_ip_index(st, ip) for ip in reserved_by_net.get(key, ())}
        for g in groups.values():
            if g.get("network") == key and g.get("ipPool"):
                legit |= set(range(int(g["poolLo"]), int(g["poolHi"]) + 1))
        for bit in sorted(ip_bits.get(key, set()) - legit):
            out.append(f"network {key}: address bit {bit} set without an owner")
    return out


async def read(store) -> Tuple[dict, dict, dict, dict, dict]:
    """What :func:`problems` needs, read from a live store."""
    _, data = await store.snapshot()
    owners, ip_bits, pool_bits = {}, {}, {}
    for key in data.get("network", {}):
        owners[key] = await store.hgetall_raw(K.ip_owner_hash(key))
        ip_bits[key] = set_bits(await store.get_bytes(K.ip_bitmap(key)))
    for key in data.get("endpointGroup", {}):
        pool_bits[key] = set_bits(await store.get_bytes(K.epg_ip_bitmap(key)))
    tag_bits = {}
    for bitmap in (K.ALLOC_VLAN, K.ALLOC_VXLAN, K.ALLOC_LOCAL_VLAN, K.ALLOC_NET_ID,
                   K.ALLOC_VRF_ID, K.ALLOC_EPG_ID):
        tag_bits[bitmap] = set_bits(await store.get_bytes(bitmap))
    return data, owners, ip_bits, pool_bits, tag_bits


async def check(store, reserved: Iterable[Tuple[str, str]] = ()) -> List[str]:
    """Every invariant violation in ``store`` (empty when consistent)."""
    data, owners, ip_bits, pool_bits, tag_bits = await read(store)
    return problems(data, owners, ip_bits, pool_bits, tag_bits, reserved)


def main(argv: List[str]) -> int:  # pragma: no cover - operator tool
    from twisted.internet import defer, task

    from contiv_sdn.store.store import Store

    if len(argv) != 2:
        sys.stderr.write("usage: python -m contiv_sdn.store.consistency REDIS_URL\n")
        return 2

    async def run(reactor) -> None:
        store = await Store.connect(argv[1])
        try:
            found = await check(store)
        finally:
            await store.close()
        for line in found:
            sys.stdout.write(line + "\n")
        sys.stdout.write(f"{len(found)} problem(s)\n")
        if found:
            raise SystemExit(1)

    task.react(lambda r: defer.ensureDeferred(run(r)))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv))
