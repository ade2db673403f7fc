"""Endpoint groups: persistent EPG ids, ip-pools, policy/netprofile/contract links.

EPG ids come from a Redis bitmap with a next-fit cursor, so they are handed
out in sequence as in Contiv but survive a netmaster restart and are never
given to a second live group (Contiv's process-local counter restarted at 1
and could collide with existing groups).

In ACI mode (global ``networkInfraType`` "aci") each group also takes its own
VLAN from the global VLAN pool, in the same transaction as the rest of the
create (Contiv's per-EPG ``pktTag``): the fabric tells groups apart by VLAN and
enforces their contracts.  The state's ``vlan`` records that the group owns it,
so delete releases it even if the infra type changed in between.
"""

from __future__ import annotations

from typing import Optional

from contiv_sdn.master import netutil
from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.global_cfg import vlan_bounds
from contiv_sdn.master.handler import Handler, OperContext
from contiv_sdn.master.network import docknet_oper
from contiv_sdn.master.oper import endpoints_where, group_addresses, network_subnet
from contiv_sdn.master.work import Work, link_target
from contiv_sdn.store import keys as K
from contiv_sdn.store import placeholder


class EndpointGroupHandler(Handler):
    modeltype = "endpointGroup"

    async def create(self, w: Work, obj: dict) -> dict:
        key = obj["key"]
        tenant_name, gname = obj["tenantName"], obj["groupName"]
        tenant = await w.obj("tenant", tenant_name)
        if tenant is None:
            raise MasterError("Tenant not found")
        net_key = f"{tenant_name}:{obj['networkName']}"
        network = await w.obj("network", net_key)
        if network is None:
            raise MasterError(f"Network {obj['networkName']} not found")
        clash = await w.obj("network", key)
        if clash is not None:
            raise MasterError(f"Network {clash['networkName']} conflicts with the endpointGroup name")
        net_state = await w.peek_state("network", net_key)
        if net_state is None:
            raise MasterError(f"network {net_key} state not found")

        txn = w.txn
        pool = obj.get("ipPool") or ""
        pool_lo = pool_hi = 0
        if pool:
            if ":" in pool:
                raise MasterError("ipv6 address pool is not supported for Endpoint Groups")
            sub = network_subnet(net_state)
            try:
                netutil.validate_range(pool, sub.length)
            except MasterError:
                raise MasterError(f"invalid ip-pool {pool}")
            first, last = pool.split("-") if "-" in pool else (pool, pool)
            try:
                pool_lo, pool_hi = sub.index(first), sub.index(last)
            except MasterError:
                raise MasterError(f"bad ip-pool {pool}, EPG ip-pool must be a subset of network "
                                  f"{sub.address}/{sub.length}")
            # Contiv's bitmap has the network address, the broadcast and everything
            # outside a range subnet taken; ours keeps those implicit
            lo, hi = sub.alloc_lo, sub.alloc_hi
            not_available = "ip address {} is not available"
            if pool_lo < lo:
                raise MasterError(not_available.format(sub.ip(pool_lo)))
            txn.check_clear(K.ip_bitmap(net_key), pool_lo, min(pool_hi, hi), not_available,
                            fmt="ip", base=sub.network)
            if pool_hi > hi:
                txn.check_fail(not_available.format(sub.ip(hi + 1)))
            txn.setrange(K.ip_bitmap(net_key), pool_lo, pool_hi, 1)
        txn.delete_key(K.epg_ip_bitmap(key))
        txn.alloc("epg", K.ALLOC_EPG_ID, 1, 65535, cursor=K.CURSOR_EPG_ID,
                  full="no endpoint group ids available")
        tags = {"pktTag": net_state.get("pktTag", 0), "extPktTag": net_state.get("extPktTag", 0)}
        g = await w.obj("global", "global")
        if g is not None and g.get("networkInfraType") == "aci":
            if net_state.get("encap") != "vlan":  # made before ACI mode was set
                raise MasterError("network type must be VLAN for ACI mode")
            lo, hi = vlan_bounds(g)
            txn.alloc("gvlan", K.ALLOC_VLAN, lo, hi, full="no vlans available")
            tags = {"pktTag": placeholder("gvlan"), "extPktTag": 0, "vlan": placeholder("gvlan")}
        txn.put("endpointGroup", key, {
            "key": key, "tenant": tenant_name, "groupName": gname,
            "networkName": obj["networkName"], "network": net_key,
            "epgId": placeholder("epg"), "groupTag": obj.get("cfgdTag") or f"{gname}.{tenant_name}",
            "ipPool": pool, "poolLo": pool_lo, "poolHi": pool_hi,
            **tags, "epCount": 0,
        }, subs=True)

        obj = dict(obj)
        obj["link-sets"] = {s: {} for s in (obj.get("link-sets") or {})}
        obj["links"] = {n: {"type": "", "key": ""} for n in (obj.get("links") or {})}
        for pname in obj.get("policies") or []:
            pkey = f"{tenant_name}:{pname}"
            if not await w.exists("policy", pkey):
                raise MasterError("Policy not found")
            await w.add_to_set("policy", pkey, "EndpointGroups", "endpointGroup", key)
            obj["link-sets"].setdefault("Policies", {})[pkey] = {"type": "policy", "key": pkey}
        if obj.get("netProfile"):
            npkey = f"{tenant_name}:{obj['netProfile']}"
            if not await w.exists("netprofile", npkey):
                raise MasterError("netprofile not found")
            w.set_link(obj, "NetProfile", "netprofile", npkey)
            await w.add_to_set("netprofile", npkey, "EndpointGroups", "endpointGroup", key)
        await self._setup_contracts(w, obj, obj.get("extContractsGrps") or [])
        w.set_link(obj, "Network", "network", net_key)
        w.set_link(obj, "Tenant", "tenant", tenant_name)
        await w.add_to_set("network", net_key, "EndpointGroups", "endpointGroup", key)
        await w.add_to_set("tenant", tenant_name, "EndpointGroups", "endpointGroup", key)
        return obj

    async def _setup_contracts(self, w: Work, obj: dict, names) -> None:
        for name in names:
            ckey = f"{obj['tenantName']}:{name}"
            if not await w.exists("extContractsGroup", ckey):
                raise MasterError(f"External contracts group {name} not found")
            await w.add_to_set("extContractsGroup", ckey, "EndpointGroups", "endpointGroup",
                               obj["key"])
            obj["link-sets"].setdefault("ExtContractsGrps", {})[ckey] = \
                {"type": "extContractsGroup", "key": ckey}

    async def _cleanup_contracts(self, w: Work, obj: dict) -> None:
        for name in obj.get("extContractsGrps") or []:
            ckey = f"{obj['tenantName']}:{name}"
            await w.remove_from_set("extContractsGroup", ckey, "EndpointGroups", obj["key"])
            (obj.get("link-sets") or {}).get("ExtContractsGrps", {}).pop(ckey, None)

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        if old.get("networkName") != new.get("networkName"):
            raise MasterError("Cannot change network association after epg is created.")
        if old.get("ipPool") != new.get("ipPool"):
            raise MasterError("Cannot change IP pool after epg is created.")
        key, tenant_name = old["key"], old["tenantName"]
        stored = dict(old)
        stored["link-sets"] = {k: dict(v) for k, v in (old.get("link-sets") or {}).items()}
        stored["links"] = dict(old.get("links") or {})
        old_policies = old.get("policies") or []
        new_policies = new.get("policies") or []
        for pname in new_policies:
            if pname not in old_policies:
                pkey = f"{tenant_name}:{pname}"
                if not await w.exists("policy", pkey):
                    raise MasterError("Policy not found")
                await w.add_to_set("policy", pkey, "EndpointGroups", "endpointGroup", key)
                stored["link-sets"].setdefault("Policies", {})[pkey] = \
                    {"type": "policy", "key": pkey}
        if old.get("netProfile") and not new.get("netProfile"):
            npkey = f"{tenant_name}:{old['netProfile']}"
            if not await w.exists("netprofile", npkey):
                raise MasterError("netprofile not found")
            w.clear_link(stored, "NetProfile")
            await w.remove_from_set("netprofile", npkey, "EndpointGroups", key)
            stored["netProfile"] = ""
        elif new.get("netProfile"):
            npkey = f"{tenant_name}:{new['netProfile']}"
            if not await w.exists("netprofile", npkey):
                raise MasterError("netprofile not found")
            if old.get("netProfile") and old["netProfile"] != new["netProfile"]:
                oldkey = f"{tenant_name}:{old['netProfile']}"
                if not await w.exists("netprofile", oldkey):
                    raise MasterError("netprofile not found")
                await w.remove_from_set("netprofile", oldkey, "EndpointGroups", key)
            w.set_link(stored, "NetProfile", "netprofile", npkey)
            await w.add_to_set("netprofile", npkey, "EndpointGroups", "endpointGroup", key)
            stored["netProfile"] = new["netProfile"]
        for pname in old_policies:
            if pname not in new_policies:
                pkey = f"{tenant_name}:{pname}"
                if not await w.exists("policy", pkey):
                    raise MasterError("Policy not found")
                await w.remove_from_set("policy", pkey, "EndpointGroups", key)
                stored["link-sets"].get("Policies", {}).pop(pkey, None)
        stored["policies"] = list(new_policies)
        await self._cleanup_contracts(w, stored)
        await self._setup_contracts(w, stored, new.get("extContractsGrps") or [])
        stored["extContractsGrps"] = list(new.get("extContractsGrps") or [])
        return stored

    async def delete(self, w: Work, obj: dict) -> None:
        key, tenant_name = obj["key"], obj["tenantName"]
        app = link_target(obj, "AppProfile")
        if app:
            raise MasterError(f"Cannot delete {obj['groupName']}, associated to appProfile {app}")
        if self.config.cluster_mode == "swarm-mode":
            # Contiv's text (objApi EndpointGroupDelete)
            dnet = await w.state("docknet",
                                 f"{tenant_name}.{obj['networkName']}.{obj['groupName']}")
            if dnet is not None:
                raise MasterError(f"cannot delete group {obj['groupName']} mapped to docker "
                                  f"network {dnet.get('docknetUUID', '')}")
        elif await w.state("docknet", f"{tenant_name}.{obj['networkName']}.{obj['groupName']}"):
            # outside swarm mode the object goes and its stale mapping with it
            w.txn.delete("docknet", f"{tenant_name}.{obj['networkName']}.{obj['groupName']}")
        state = await w.state("endpointGroup", key)
        if state is not None:
            if int(state.get("epCount", 0)) != 0:
                raise MasterError(f"Error: EPG {obj['groupName']} has active endpoints")
            w.txn.setbit(K.ALLOC_EPG_ID, int(state["epgId"]), 0)
            if int(state.get("vlan") or 0):  # its own VLAN (ACI mode)
                w.txn.setbit(K.ALLOC_VLAN, int(state["vlan"]), 0)
            if state.get("ipPool"):
                w.txn.setrange(K.ip_bitmap(state["network"]), int(state["poolLo"]),
                               int(state["poolHi"]), 0)
            w.txn.delete_key(K.epg_ip_bitmap(key))
            w.txn.delete("endpointGroup", key)
        if obj.get("netProfile"):
            await w.remove_from_set("netprofile", f"{tenant_name}:{obj['netProfile']}",
                                    "EndpointGroups", key)
        for pname in obj.get("policies") or []:
            await w.remove_from_set("policy", f"{tenant_name}:{pname}", "EndpointGroups", key)
        await self._cleanup_contracts(w, dict(obj, **{"link-sets": dict(obj.get("link-sets") or {})}))
        await w.remove_from_set("network", f"{tenant_name}:{obj['networkName']}",
                                "EndpointGroups", key)
        await w.remove_from_set("tenant", tenant_name, "EndpointGroups", key)

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        state = await ctx.state("endpointGroup", obj["key"])
        if state is None:
            raise MasterError("endpoint group state not found")
        net_state = await ctx.state("network", state["network"])
        addrs = await group_addresses(ctx.store, state, net_state)
        endpoints = await ctx.states("endpoint")
        return {
            **addrs,
            "endpoints": endpoints_where(endpoints, group=obj["key"]),
            "externalPktTag": state.get("extPktTag", 0),
            "groupTag": state.get("groupTag", ""),
            **(await docknet_oper(ctx, f"{obj['tenantName']}.{obj['networkName']}."
                                       f"{obj['groupName']}")),
            "numEndpoints": state.get("epCount", 0),
            "pktTag": state.get("pktTag", 0),
        }
