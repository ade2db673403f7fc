"""Service load-balancers (docker <= 1.12 style).

A service's VIP is allocated from its network's IPAM in the same transaction
that stores the service.  Providers are the endpoints of the tenant whose
labels carry every selector; Contiv matched existing providers by exact map
equality but new ones by superset, and we use the superset rule for both.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.handler import Handler, OperContext
from contiv_sdn.master.oper import endpoint_oper, network_subnet
from contiv_sdn.master.work import Work
from contiv_sdn.pipeline.servicelb import match_providers
from contiv_sdn.store import keys as K
from contiv_sdn.store import placeholder


def valid_ports(ports: List[str]) -> bool:
    """``validatePorts``; like the original it decides on the first entry only,
    but a short entry is refused instead of crashing the request."""
    if not ports:
        return False
    for p in ports:
        parts = p.split(":")
        if len(parts) < 3:
            return False
        svc, prov, proto = parts[0], parts[1], parts[2]
        if not svc or not prov or not proto:
            return False
        try:
            int(prov)
            int(svc)
        except ValueError:
            return False
        return proto in ("TCP", "tcp", "Tcp", "UDP", "udp", "Udp")
    return True


def selector_map(selectors: List[str]) -> Dict[str, str]:
    out = {}
    for s in selectors:
        if s.count("=") != 1:
            raise MasterError(f"Invalid selector {s}. selector format is key1=value1")
        k, v = s.split("=")
        out[k] = v
    return out


def providers(endpoints: Dict[str, dict], tenant: str, selectors: Dict[str, str]) -> List[dict]:
    """Endpoints of ``tenant`` whose labels include every selector: the datapath's rule
    (``pipeline.servicelb.match_providers``, which the controller's snapshot uses too),
    so ``netctl service inspect`` shows the providers the VIP balances over."""
    cands = []
    for key, ep in endpoints.items():
        labels = ep.get("labels") if isinstance(ep, dict) else None
        if isinstance(labels, dict) and all(isinstance(v, str) for v in labels.values()):
            cands.append((key, ep.get("tenant"), labels))
    return [endpoints[key] for key in match_providers(selectors, tenant, cands)]


class ServiceLBHandler(Handler):
    modeltype = "serviceLB"

    async def _check(self, w: Work, obj: dict) -> Dict[str, str]:
        if not obj.get("serviceName"):
            raise MasterError("Invalid service name")
        if not obj.get("selectors"):
            raise MasterError("Invalid selector options")
        if not valid_ports(obj.get("ports") or []):
            raise MasterError("Invalid Port maping . Port format is - Port:TargetPort:Protocol")
        if not obj.get("tenantName"):
            raise MasterError("Invalid tenant name")
        if not await w.exists("tenant", obj["tenantName"]):
            raise MasterError(f"Tenant {obj['tenantName']} not found")
        if not await w.exists("network", f"{obj['tenantName']}:{obj.get('networkName', '')}"):
            raise MasterError(f"Network {obj.get('networkName', '')} not found")
        return selector_map(obj["selectors"])

    async def _allocate_vip(self, w: Work, obj: dict, net_key: str) -> None:
        st = await w.peek_state("network", net_key)
        if st is None:
            raise MasterError(f"network {net_key} state not found")
        sub = network_subnet(st)
        want = sub.index(obj["ipAddress"]) if obj.get("ipAddress") else None
        w.txn.alloc("vip", K.ip_bitmap(net_key), sub.alloc_lo, sub.alloc_hi, want=want,
                    fmt="ip", base=sub.network,
                    full=f"auto allocation failed - address exhaustion in subnet "
                         f"{sub.address}/{sub.length}",
                    taken="ip address {} is not available")
        w.txn.raw_set(K.ip_owner_hash(net_key), placeholder("vip", "ip"),
                      "service:" + obj["key"], subs=True)

    def _state(self, obj: dict, net_key: str, selectors: Dict[str, str], vip: str) -> dict:
        return {"key": obj["key"], "tenant": obj["tenantName"], "serviceName": obj["serviceName"],
                "networkName": obj["networkName"], "network": net_key, "ipAddress": vip,
                "ports": list(obj.get("ports") or []), "selectors": selectors}

    async def create(self, w: Work, obj: dict) -> dict:
        selectors = await self._check(w, obj)
        tenant_name = obj["tenantName"]
        net_key = f"{tenant_name}:{obj['networkName']}"
        await self._allocate_vip(w, obj, net_key)
        w.txn.put("serviceLB", obj["key"],
                  self._state(obj, net_key, selectors, placeholder("vip", "ip")), subs=True)
        obj = dict(obj)
        w.set_link(obj, "Tenant", "tenant", tenant_name)
        w.set_link(obj, "Network", "network", net_key)
        await w.add_to_set("tenant", tenant_name, "Servicelbs", "serviceLB", obj["key"])
        await w.add_to_set("network", net_key, "Servicelbs", "serviceLB", obj["key"])
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        selectors = await self._check(w, new)
        tenant_name = new["tenantName"]
        net_key = f"{tenant_name}:{new['networkName']}"
        st = await w.state("serviceLB", old["key"])
        if st is not None and st["network"] == net_key:
            vip = st["ipAddress"]
            w.txn.put("serviceLB", old["key"], self._state(new, net_key, selectors, vip))
        else:
            if st is not None:
                await self._free_vip(w, st)
                await w.remove_from_set("network", st["network"], "Servicelbs", old["key"])
            await self._allocate_vip(w, new, net_key)
            w.txn.put("serviceLB", old["key"],
                      self._state(new, net_key, selectors, placeholder("vip", "ip")), subs=True)
            await w.add_to_set("network", net_key, "Servicelbs", "serviceLB", old["key"])
        stored = dict(old)
        for f in ("serviceName", "tenantName", "networkName", "ipAddress"):
            stored[f] = new.get(f, "")
        stored["selectors"] = list(new.get("selectors") or [])
        stored["ports"] = list(new.get("ports") or [])
        w.set_link(stored, "Network", "network", net_key)
        return stored

    async def delete(self, w: Work, obj: dict) -> None:
        if not obj.get("serviceName"):
            raise MasterError("Invalid service name")
        st = await w.state("serviceLB", obj["key"])
        if st is not None:
            await self._free_vip(w, st)
            w.txn.delete("serviceLB", obj["key"])
        tenant_name = obj["tenantName"]
        if not await w.exists("tenant", tenant_name):
            raise MasterError(f"Tenant {tenant_name} not found")
        await w.remove_from_set("tenant", tenant_name, "Servicelbs", obj["key"])
        net_key = f"{tenant_name}:{obj['networkName']}"
        if not await w.exists("network", net_key):
            raise MasterError(f"Network {obj['networkName']} not found in tenant {tenant_name}")
        await w.remove_from_set("network", net_key, "Servicelbs", obj["key"])

    async def _free_vip(self, w: Work, st: dict) -> None:
        net_state = await w.peek_state("network", st["network"])
        if net_state is None or not st.get("ipAddress"):
            return
        sub = network_subnet(net_state)
        w.txn.setbit(K.ip_bitmap(st["network"]), sub.index(st["ipAddress"]), 0)
        w.txn.raw_del(K.ip_owner_hash(st["network"]), st["ipAddress"])

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        st = await ctx.state("serviceLB", obj["key"])
        if st is None:
            raise MasterError("invalid Service name. Oper state does not exist")
        provs = providers(await ctx.states("endpoint"), st["tenant"], st.get("selectors") or {})
        eps = []
        for ep in provs:
            e = endpoint_oper(ep)
            e["serviceName"] = st["serviceName"]
            eps.append(e)
        return {"numProviders": len(eps), "providers": eps, "serviceVip": st.get("ipAddress", "")}
