"""Networks: subnet checks, pkt-tag/VNI/local-VLAN/netId allocation, IPAM set-up.

Everything a network create takes (tags, ids, the gateway address) is taken
in the same Redis script that stores the network, so two netmasters creating
networks at once can neither hand out one tag twice nor leak one.  Docker
networks are not created here (Contiv's netmaster called dockerd); the
host agent owns the docker side.
"""

from __future__ import annotations

import bisect
from typing import Dict, List, Optional, Tuple

from contiv_sdn.master import netutil
from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.global_cfg import vlan_bounds, vxlan_bounds
from contiv_sdn.master.handler import Handler, OperContext
from contiv_sdn.master.oper import endpoints_where, network_addresses
from contiv_sdn.master.work import Work, link_count
from contiv_sdn.store import keys as K
from contiv_sdn.store import placeholder
from contiv_sdn.store.keys import obj_kind


async def global_ready(w: Work, encap: str) -> dict:
    """``validateGlobalConfig``: the reasons a network cannot be created yet."""
    g = await w.obj("global", "global")
    if g is None:
        why = "global configuration is not ready"
    elif not g.get("fwdMode"):
        why = "global forwarding mode is not set"
    elif encap.lower() == "vlan" and not g.get("vlans"):
        why = "global vlan range is not set"
    elif encap.lower() == "vxlan" and not g.get("vxlans"):
        why = "global vxlan range is not set"
    else:
        return g
    raise MasterError(f"Global configuration is not ready: {why}")


class _SubnetIndex:
    """Every network's IPv4 bounds by tenant, sorted by first address, kept
    with the cached network kind and updated with each commit's networks
    (``View.derived``), so the overlap screen of a create looks at the few
    networks that can touch the new subnet instead of every network of the
    tenant.  ``span`` is the widest network seen (never shrunk: an upper
    bound is enough), so every overlapping network starts within
    ``[lo - span, hi]``."""

    __slots__ = ("by_key", "starts", "span")

    def __init__(self) -> None:
        self.by_key: Dict[str, Tuple[str, int, int]] = {}
        self.starts: Dict[str, List[Tuple[int, int, str]]] = {}
        self.span: Dict[str, int] = {}

    @classmethod
    def build(cls, networks: Dict[str, dict]) -> "_SubnetIndex":
        index = cls()
        index.update_keys(list(networks), networks)
        return index

    def update_keys(self, keys: List[str], networks: Dict[str, dict]) -> "_SubnetIndex":
        for key in keys:
            old = self.by_key.pop(key, None)
            if old is not None:
                tenant, b0, b1 = old
                starts = self.starts[tenant]
                at = bisect.bisect_left(starts, (b0, b1, key))
                if at < len(starts) and starts[at] == (b0, b1, key):
                    del starts[at]
            net = networks.get(key)
            subnet = net.get("subnet") if net else None
            if subnet:
                tenant = net.get("tenantName") or ""
                b0, b1 = netutil._overlap_bounds(subnet)
                self.by_key[key] = (tenant, b0, b1)
                bisect.insort(self.starts.setdefault(tenant, []), (b0, b1, key))
                self.span[tenant] = max(self.span.get(tenant, 0), b1 - b0)
        return self

    def may_overlap(self, tenant: str, a0: int, a1: int) -> bool:
        starts = self.starts.get(tenant) or []
        lo = bisect.bisect_left(starts, (a0 - self.span.get(tenant, 0), -1, ""))
        for b0, b1, _ in starts[lo:]:
            if b0 > a1:
                return False
            if b0 <= a0 <= b1 or b0 <= a1 <= b1 or a0 <= b0 <= a1 or a0 <= b1 <= a1:
                return True
        return False


def _tenant_networks(tenant_name: str, networks: dict) -> List[str]:
    return sorted(k for k, o in networks.items() if o.get("tenantName") == tenant_name)


async def _overlap_suspects(w: Work, tenant_name: str, subnet: str,
                            subnet6: str) -> Tuple[List[str], Dict[str, dict]]:
    """The tenant's network keys to check against a new network, in the
    order Contiv checks them (sorted), so its first refusal is ours too;
    and the networks as the attempt sees them.

    Contiv walks the tenant's ``Networks`` link-set; those are exactly the
    networks whose ``tenantName`` is the tenant (a network create links it,
    its delete unlinks it, in the same transaction), read here from the
    network kind (guarded as a whole), so the tenant record itself is not
    read (see contiv_sdn.master.work: it is linked server-side).  An IPv4
    subnet is first screened against the subnet index; only when some
    network may clash are all of them returned, sorted.
    """
    kind = obj_kind("network")
    if subnet6 or not subnet:
        networks = await w.objs("network")
        return _tenant_networks(tenant_name, networks), networks
    index = await w.view.derived(kind, "subnets", _SubnetIndex.build,
                                 lambda idx, keys, nets: idx.update_keys(keys, nets))
    a0, a1 = netutil._overlap_bounds(subnet)
    if not index.may_overlap(tenant_name, a0, a1) and not w.edited("network"):
        return [], {}
    networks = await w.objs("network")
    return _tenant_networks(tenant_name, networks), networks


async def docknet_oper(ctx: OperContext, key: str) -> dict:
    """``{"docknetUUID": id}`` when a swarm docker network maps to the object (``oper/docknet``
    key ``tenant.network.group``), else nothing: Contiv's oper has no such field, so it is
    left out rather than shown empty."""
    dnet = await ctx.state("docknet", key)
    if dnet is None or not dnet.get("docknetUUID"):
        return {}
    return {"docknetUUID": dnet["docknetUUID"]}


class NetworkHandler(Handler):
    modeltype = "network"

    async def create(self, w: Work, obj: dict) -> dict:
        key = obj["key"]
        tenant_name, name = obj.get("tenantName") or "", obj["networkName"]
        g = await global_ready(w, obj.get("encap", ""))
        if not tenant_name:
            raise MasterError("Invalid tenant name")
        if not await w.exists("tenant", tenant_name):
            raise MasterError("Tenant not found")
        subnet, subnet6 = obj.get("subnet"), obj.get("ipv6Subnet")
        suspects, networks = await _overlap_suspects(w, tenant_name, subnet, subnet6)
        for other_key in suspects:
            other = networks.get(other_key)
            if other is None:
                raise MasterError(f"network key {other_key} not found")
            if subnet6 and other.get("ipv6Subnet") and \
                    netutil.overlapping_v6(subnet6, other["ipv6Subnet"]):
                raise MasterError(f"network {other['networkName']} conflicts with subnetv6  "
                                  f"{subnet6}")
            if subnet and other["subnet"] and netutil.overlapping(subnet, other["subnet"]):
                raise MasterError(f"network {other['networkName']} conflicts with subnet "
                                  f"{subnet}")
        clash = await w.obj("endpointGroup", key)
        if clash is not None:
            raise MasterError(f"EndpointGroup {clash['groupName']} conflicts with the network name")
        if g.get("networkInfraType") == "aci" and obj.get("encap") != "vlan":
            # the fabric tells groups apart by VLAN: each group gets its own (group.py)
            raise MasterError("network type must be VLAN for ACI mode")

        sub = netutil.parse_subnet(obj["subnet"])
        gw_index = sub.index(obj["gateway"]) if obj.get("gateway") else None
        v6 = netutil.parse_v6(obj.get("ipv6Subnet", ""))
        v6_gw = v6.host_id(obj["ipv6Gateway"]) if v6 and obj.get("ipv6Gateway") else None

        txn = w.txn
        encap = obj["encap"]
        want = int(obj.get("pktTag") or 0) or None
        if encap == "vlan":
            lo, hi = vlan_bounds(g)
            txn.alloc("vlan", K.ALLOC_VLAN, lo, hi, want=want, full="no vlans available",
                      taken="requested vlan not available - vlan:{}")
            vlan, vni, local = placeholder("vlan"), 0, placeholder("vlan")
        else:
            lo, hi = vxlan_bounds(g)
            if want is not None and want <= lo - 1:
                raise MasterError("requested vxlan is out of range")
            txn.alloc("vni", K.ALLOC_VXLAN, lo, hi, want=want, full="no vxlans available",
                      taken="requested vxlan not available")
            txn.alloc("lvlan", K.ALLOC_LOCAL_VLAN, 1, 4094, full="no local vlans available")
            vlan, vni, local = 0, placeholder("vni"), placeholder("lvlan")
        txn.alloc("netid", K.ALLOC_NET_ID, 1, 65535, full="no network ids available")

        # fresh IPAM state (a network of the same key may have existed before)
        txn.delete_key(K.ip_bitmap(key))
        txn.delete_key(K.ip6_hash(key))
        txn.delete_key(K.ip_owner_hash(key))
        if gw_index is not None:
            txn.setbit(K.ip_bitmap(key), gw_index, 1)
        if v6_gw is not None:
            txn.raw_set(K.ip6_hash(key), str(v6_gw), "1")

        state = {
            "key": key, "tenant": tenant_name, "networkName": name,
            "netId": placeholder("netid"), "encap": encap, "nwType": obj.get("nwType", "data"),
            "vlan": vlan, "vni": vni, "localVlan": local, "pktTag": local, "extPktTag": vni,
            "subnet": sub.cidr, "subnetIP": sub.address, "subnetLen": sub.length,
            "ipRange": (f"{netutil.int2ip(sub.range_lo)}-{netutil.int2ip(sub.range_hi)}"
                        if sub.is_range else ""),
            "gateway": obj.get("gateway", ""),
            "ipv6Subnet": str(v6.network) if v6 else "", "ipv6Gateway": obj.get("ipv6Gateway", ""),
            "networkTag": obj.get("cfgdTag") or f"{name}.{tenant_name}",
            "epCount": 0,
        }
        txn.put("network", key, state, subs=True)

        obj = dict(obj)
        obj["link-sets"] = {s: {} for s in (obj.get("link-sets") or {})}
        w.set_link(obj, "Tenant", "tenant", tenant_name)
        await w.add_to_set("tenant", tenant_name, "Networks", "network", key)
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        raise MasterError("Cant change network parameters after its created")

    async def delete(self, w: Work, obj: dict) -> None:
        key = obj["key"]
        tenant_name = obj["tenantName"]
        if not await w.exists("tenant", tenant_name):
            raise MasterError("Tenant not found")
        n = link_count(obj, "EndpointGroups")
        if n:
            raise MasterError(f"cannot delete {obj['networkName']} has {n} endpoint groups")
        n = link_count(obj, "Servicelbs")
        if n:
            raise MasterError(f"cannot delete {obj['networkName']} has {n} services ")
        if self.config.cluster_mode == "swarm-mode":
            # Contiv's text (objApi NetworkDelete); the docker network's FreeNetwork drops it
            dnet = await w.state("docknet", f"{tenant_name}.{obj['networkName']}.")
            if dnet is not None:
                raise MasterError(f"cannot delete network {obj['networkName']} mapped to "
                                  f"docker network {dnet.get('docknetUUID', '')}")
        elif await w.state("docknet", f"{tenant_name}.{obj['networkName']}.") is not None:
            w.txn.delete("docknet", f"{tenant_name}.{obj['networkName']}.")
        state = await w.state("network", key)
        if state is not None:
            if state.get("nwType") != "infra" and int(state.get("epCount", 0)) > 0:
                raise MasterError("Error: Network has active endpoints")
            txn = w.txn
            if state["encap"] == "vlan":
                txn.setbit(K.ALLOC_VLAN, int(state["vlan"]), 0)
            else:
                txn.setbit(K.ALLOC_VXLAN, int(state["vni"]), 0)
                txn.setbit(K.ALLOC_LOCAL_VLAN, int(state["localVlan"]), 0)
            txn.setbit(K.ALLOC_NET_ID, int(state["netId"]), 0)
            txn.delete_key(K.ip_bitmap(key))
            txn.delete_key(K.ip6_hash(key))
            txn.delete_key(K.ip_owner_hash(key))
            txn.delete("network", key)
        await w.remove_from_set("tenant", tenant_name, "Networks", key)

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        state = await ctx.state("network", obj["key"])
        if state is None:
            raise MasterError("network state not found")
        groups = await ctx.states("endpointGroup")
        addrs = await network_addresses(ctx.store, state, groups)
        endpoints = await ctx.states("endpoint")
        return {
            **addrs,
            "endpoints": endpoints_where(endpoints, network=obj["key"]),
            "externalPktTag": state.get("extPktTag", 0),
            "networkTag": state.get("networkTag", ""),
            # ours (swarm mode): the docker network that maps to this one, if any
            **(await docknet_oper(ctx, f"{obj['tenantName']}.{obj['networkName']}.")),
            "numEndpoints": state.get("epCount", 0),
            "pktTag": state.get("pktTag", 0),
        }
