"""Grouping objects: netprofile, appProfile, extContractsGroup, aciGw.

ACI itself (pushing app profiles to an aci-gw) is out of scope: these objects
are stored and linked with Contiv's checks so that clients and the
bandwidth limits (netprofile, applied by the agents) work.
"""

from __future__ import annotations

from typing import Optional

from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.handler import Handler, OperContext, require_tenant_name
from contiv_sdn.master.work import Work, link_count, link_keys


class NetprofileHandler(Handler):
    modeltype = "netprofile"

    async def create(self, w: Work, obj: dict) -> dict:
        tenant_name = require_tenant_name(obj)
        burst = int(obj.get("burst") or 0)
        if 0 < burst < 2:
            raise MasterError("Invalid Burst size. burst size > 1500 bytes")
        if not await w.exists("tenant", tenant_name):
            raise MasterError("Tenant not found")
        obj = dict(obj)
        obj["link-sets"] = {s: {} for s in (obj.get("link-sets") or {})}
        w.set_link(obj, "Tenant", "tenant", tenant_name)
        await w.add_to_set("tenant", tenant_name, "NetProfiles", "netprofile", obj["key"])
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        burst = int(new.get("burst") or 0)
        if 0 < burst < 2:
            raise MasterError("Invalid Burst size. burst size must be > 1500 bytes")
        for gkey in link_keys(old, "EndpointGroups"):
            if not await w.exists("endpointGroup", gkey):
                raise MasterError("EndpointGroups not found")
        stored = dict(old)
        for f in ("bandwidth", "DSCP", "burst"):
            stored[f] = new.get(f)
        return stored

    async def delete(self, w: Work, obj: dict) -> None:
        tenant_name = obj["tenantName"]
        if not await w.exists("tenant", tenant_name):
            raise MasterError(f"Tenant {tenant_name} not found")
        if link_count(obj, "EndpointGroups"):
            raise MasterError("NetProfile is being used")
        # Contiv removed the link but never wrote the tenant back; we do
        await w.remove_from_set("tenant", tenant_name, "NetProfiles", obj["key"])


class AppProfileHandler(Handler):
    modeltype = "appProfile"

    async def create(self, w: Work, obj: dict) -> dict:
        tenant_name = require_tenant_name(obj)
        if not await w.exists("tenant", tenant_name):
            raise MasterError(f"Tenant {tenant_name} not found")
        obj = dict(obj)
        obj["link-sets"] = {s: {} for s in (obj.get("link-sets") or {})}
        for epg in obj.get("endpointGroups") or []:
            gkey = f"{tenant_name}:{epg}"
            g = await w.obj("endpointGroup", gkey)
            if g is None:
                raise MasterError(f"EndpointGroup {gkey} not found")
            obj["link-sets"].setdefault("EndpointGroups", {})[gkey] = \
                {"type": "endpointGroup", "key": gkey}
            w.set_link(g, "AppProfile", "appProfile", obj["key"])
            w.save("endpointGroup", gkey, g)
        w.set_link(obj, "Tenant", "tenant", tenant_name)
        await w.add_to_set("tenant", tenant_name, "AppProfiles", "appProfile", obj["key"])
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        tenant_name = old["tenantName"]
        stored = dict(old)
        sets = {k: dict(v) for k, v in (old.get("link-sets") or {}).items()}
        stored["link-sets"] = sets
        for epg in new.get("endpointGroups") or []:
            gkey = f"{tenant_name}:{epg}"
            g = await w.obj("endpointGroup", gkey)
            if g is None:
                raise MasterError(f"EndpointGroup {gkey} not found")
            sets.setdefault("EndpointGroups", {})[gkey] = {"type": "endpointGroup", "key": gkey}
            w.set_link(g, "AppProfile", "appProfile", old["key"])
            w.save("endpointGroup", gkey, g)
        for epg in old.get("endpointGroups") or []:
            if epg in (new.get("endpointGroups") or []):
                continue
            gkey = f"{tenant_name}:{epg}"
            g = await w.obj("endpointGroup", gkey)
            if g is None:
                raise MasterError(f"EndpointGroup {gkey} not found")
            w.clear_link(g, "AppProfile")
            w.save("endpointGroup", gkey, g)
            sets.get("EndpointGroups", {}).pop(gkey, None)
        stored["endpointGroups"] = list(new.get("endpointGroups") or [])
        return stored

    async def delete(self, w: Work, obj: dict) -> None:
        tenant_name = obj["tenantName"]
        if not await w.exists("tenant", tenant_name):
            raise MasterError(f"Tenant {tenant_name} not found")
        for epg in obj.get("endpointGroups") or []:
            gkey = f"{tenant_name}:{epg}"
            g = await w.obj("endpointGroup", gkey)
            if g is not None:
                w.clear_link(g, "AppProfile")
                w.save("endpointGroup", gkey, g)
        await w.remove_from_set("tenant", tenant_name, "AppProfiles", obj["key"])


class ExtContractsGroupHandler(Handler):
    modeltype = "extContractsGroup"

    async def create(self, w: Work, obj: dict) -> dict:
        if obj.get("contractsType") not in ("provided", "consumed"):
            raise MasterError("Contracts group need to be either 'provided' or 'consumed'")
        if not await w.exists("tenant", obj.get("tenantName") or ""):
            raise MasterError(f"Tenant {obj.get('tenantName', '')} not found")
        obj = dict(obj)
        obj["link-sets"] = {s: {} for s in (obj.get("link-sets") or {})}
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        raise MasterError("external contracts update not supported")

    async def delete(self, w: Work, obj: dict) -> None:
        if link_count(obj, "EndpointGroups"):
            raise MasterError("External contracts group is in-use")


class AciGwHandler(Handler):
    modeltype = "aciGw"

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        stored = dict(old)
        for f in ("enforcePolicies", "includeCommonTenant", "nodeBindings", "pathBindings",
                  "physicalDomain"):
            stored[f] = new.get(f, "")
        return stored

    async def delete(self, w: Work, obj: dict) -> None:
        n = len(await w.objs("appProfile"))
        if n:
            raise MasterError(f"{n} App-Profiles found. Delete them first")

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        return {"numAppProfiles": len(await ctx.objs("appProfile"))}
