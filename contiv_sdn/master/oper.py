"""Operational views computed from stored state: address strings, endpoint opers.

Nothing here is stored: allocated/available strings and counts are derived
from the allocation bitmaps on every inspect, so they can never drift from
the allocations themselves (Contiv's stored counters did: issue #1165).
"""

from __future__ import annotations

from typing import Dict, List, Optional

from contiv_sdn.master.netutil import Subnet, subnet_from_state
from contiv_sdn.store import Store
from contiv_sdn.store import bitmap
from contiv_sdn.store import keys as K


def go_map_string(labels: Optional[dict]) -> str:
    """Go's ``fmt.Sprintf("%s", map[string]string)``: ``map[a:1 b:2]`` (keys sorted)."""
    items = sorted((labels or {}).items())
    return "map[" + " ".join(f"{k}:{v}" for k, v in items) + "]"


def dotted_net_id(network_key: str) -> str:
    """``tenant:net`` → Contiv's netID ``net.tenant``."""
    tenant, _, net = network_key.partition(":")
    return f"{net}.{tenant}"


def endpoint_oper(ep: dict, key: str = "", with_port: bool = False) -> dict:
    """An ``EndpointOper`` (model field names) from a ``state:endpoint`` record."""
    group = ep.get("group") or ""
    tenant, _, gname = group.partition(":")
    out = {
        "key": key,
        "containerID": ep.get("containerID", ""),
        "containerName": ep.get("containerName", ""),
        "endpointGroupId": ep.get("epgId", 0),
        "endpointGroupKey": f"{gname}:{tenant}" if group else "",
        "endpointID": ep.get("id", ""),
        "homingHost": ep.get("homingHost", ""),
        "intfName": ep.get("intfName", ""),
        "ipAddress": [ep.get("ipAddress", ""), ep.get("ipv6Address", "")],
        "labels": go_map_string(ep.get("labels")),
        "macAddress": ep.get("macAddress", ""),
        "network": dotted_net_id(ep.get("network", "")),
        "serviceName": gname,
        "vtepIP": ep.get("vtepIP", ""),
    }
    if with_port and ep.get("intfName"):
        out["virtualPort"] = "v" + ep["intfName"]
    return out


def network_subnet(state: dict) -> Subnet:
    return subnet_from_state(state["subnetIP"], int(state["subnetLen"]), state.get("ipRange", ""))


async def network_addresses(store: Store, state: dict, groups: Dict[str, dict]) -> dict:
    """allocatedIPAddresses / availableIPAddresses / allocatedAddressesCount of a network.

    The gateway and EPG pools show as allocated (they are taken in the
    network bitmap) but are not counted as allocations; addresses handed
    out from a pool are counted.
    """
    sub = network_subnet(state)
    lo, hi = sub.alloc_lo, sub.alloc_hi
    data = await store.get_bytes(K.ip_bitmap(state["key"]))
    used = bitmap.runs(data, lo, hi, 1)
    free = bitmap.runs(data, lo, hi, 0)
    count = sum(b - a + 1 for a, b in used)
    gw = state.get("gateway")
    if gw:
        try:
            idx = sub.index(gw)
            if lo <= idx <= hi and bitmap.bit(data, idx):
                count -= 1
        except Exception:
            pass
    for g in groups.values():
        if g.get("network") != state["key"] or not g.get("ipPool"):
            continue
        a, b = int(g["poolLo"]), int(g["poolHi"])
        count -= bitmap.count(data, a, b)
        gdata = await store.get_bytes(K.epg_ip_bitmap(g["key"]))
        count += bitmap.count(gdata, a, b)
    return {
        "allocatedAddressesCount": max(0, count),
        "allocatedIPAddresses": bitmap.range_string(used, sub.ip),
        "availableIPAddresses": bitmap.range_string(free, sub.ip),
    }


async def group_addresses(store: Store, group: dict, net_state: Optional[dict]) -> dict:
    """The EPG ip-pool's allocated/available strings ("" without a pool)."""
    if not group.get("ipPool") or not net_state:
        return {"allocatedIPAddresses": "", "availableIPAddresses": ""}
    sub = network_subnet(net_state)
    a, b = int(group["poolLo"]), int(group["poolHi"])
    data = await store.get_bytes(K.epg_ip_bitmap(group["key"]))
    return {
        "allocatedIPAddresses": bitmap.range_string(bitmap.runs(data, a, b, 1), sub.ip),
        "availableIPAddresses": bitmap.range_string(bitmap.runs(data, a, b, 0), sub.ip),
    }


def endpoints_where(endpoints: Dict[str, dict], **match) -> List[dict]:
    """Endpoint opers of the records whose fields equal ``match``, in id order."""
    out = []
    for key in sorted(endpoints):
        ep = endpoints[key]
        if all(ep.get(k) == v for k, v in match.items()):
            out.append(endpoint_oper(ep))
    return out


def tag_runs_string(data: bytes, lo: int, hi: int) -> tuple:
    """(count, ``"1-3, 5"``) of the tags in use in a tag bitmap."""
    used = bitmap.runs(data, lo, hi, 1)
    return sum(b - a + 1 for a, b in used), bitmap.range_string(used, str)
