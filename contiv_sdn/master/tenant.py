"""Tenants: a name, a persistent VRF id, and refusal to delete while in use."""

from __future__ import annotations

from typing import Optional

from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.handler import Handler, OperContext
from contiv_sdn.master.oper import endpoints_where, network_addresses
from contiv_sdn.master.work import Work, link_count, link_keys
from contiv_sdn.store import keys as K
from contiv_sdn.store import placeholder


class TenantHandler(Handler):
    modeltype = "tenant"

    async def create(self, w: Work, obj: dict) -> dict:
        name = obj.get("tenantName") or ""
        if not name:
            raise MasterError("Invalid tenant name")
        old = await w.state("tenant", name)
        if old is not None:  # left by an interrupted delete: keep its id
            return obj
        w.txn.alloc("vrf", K.ALLOC_VRF_ID, 1, 65535, full="no vrf ids available")
        w.txn.put("tenant", name, {"name": name, "vrfId": placeholder("vrf")}, subs=True)
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        raise MasterError("Cant change tenant parameters after its created")

    async def delete(self, w: Work, obj: dict) -> None:
        name = obj["tenantName"]
        checks = [
            ("AppProfiles", "cannot delete {t}, has {n} app profiles"),
            ("EndpointGroups", "cannot delete {t} has {n} endpoint groups"),
            ("Policies", "cannot delete {t} has {n} policies"),
            ("NetProfiles", "Cannot delete {t} has {n} netprofiles"),
            ("Networks", "cannot delete {t} has {n} networks"),
        ]
        for set_name, msg in checks:
            n = link_count(obj, set_name)
            if n:
                raise MasterError(msg.format(t=name, n=n))
        state = await w.state("tenant", name)
        if state is not None:
            w.txn.setbit(K.ALLOC_VRF_ID, int(state["vrfId"]), 0)
            w.txn.delete("tenant", name)

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        name = obj["tenantName"]
        endpoints = await ctx.states("endpoint")
        groups = await ctx.states("endpointGroup")
        networks = []
        total_eps = 0
        for key in link_keys(obj, "Networks"):
            st = await ctx.state("network", key)
            if not st or st.get("tenant") != name:
                continue
            total_eps += int(st.get("epCount", 0))
            addrs = await network_addresses(ctx.store, st, groups)
            networks.append({
                **addrs,
                "endpoints": endpoints_where(endpoints, network=key),
                "externalPktTag": st.get("extPktTag", 0),
                "numEndpoints": st.get("epCount", 0),
                "pktTag": st.get("pktTag", 0),
            })
        epgs = []
        for key in link_keys(obj, "EndpointGroups"):
            g = groups.get(key)
            if not g or g.get("tenant") != name:
                continue
            epgs.append({
                "endpoints": endpoints_where(endpoints, group=key),
                "externalPktTag": g.get("extPktTag", 0),
                "numEndpoints": g.get("epCount", 0),
                "pktTag": g.get("pktTag", 0),
            })
        return {
            "endpointGroups": epgs,
            "networks": networks,
            "totalAppProfiles": link_count(obj, "AppProfiles"),
            "totalEPGs": link_count(obj, "EndpointGroups"),
            "totalEndpoints": total_eps,
            "totalNetprofiles": link_count(obj, "NetProfiles"),
            "totalNetworks": link_count(obj, "Networks"),
            "totalPolicies": link_count(obj, "Policies"),
            "totalServicelbs": link_count(obj, "Servicelbs"),
        }
