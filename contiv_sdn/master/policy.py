"""Policies and rules: existence checks, direction rules, links.

Flows are not computed here: the controller derives them from the stored
objects (rules, EPG policy attachments) whenever they change.
"""

from __future__ import annotations

from typing import Optional

from contiv_sdn.master.errors import MasterError
from contiv_sdn.master.handler import Handler, OperContext, require_tenant_name
from contiv_sdn.master.oper import endpoints_where
from contiv_sdn.master.work import Work, link_count, link_keys, link_target


class PolicyHandler(Handler):
    modeltype = "policy"

    async def create(self, w: Work, obj: dict) -> dict:
        tenant_name = require_tenant_name(obj)
        if not await w.exists("tenant", tenant_name):
            raise MasterError("Tenant not found")
        obj = dict(obj)
        obj["link-sets"] = {s: {} for s in (obj.get("link-sets") or {})}
        w.set_link(obj, "Tenant", "tenant", tenant_name)
        await w.add_to_set("tenant", tenant_name, "Policies", "policy", obj["key"])
        return obj

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        return old  # Contiv: a no-op success

    async def delete(self, w: Work, obj: dict) -> None:
        tenant_name = obj["tenantName"]
        if not await w.exists("tenant", tenant_name):
            raise MasterError(f"Tenant {tenant_name} not found")
        if link_count(obj, "EndpointGroups"):
            raise MasterError("Policy is being used")
        for rkey in link_keys(obj, "Rules"):
            rule = await w.obj("rule", rkey)
            if rule is None:
                continue
            epg = link_target(rule, "MatchEndpointGroup")
            if epg:
                await w.remove_from_set("endpointGroup", epg, "MatchRules", rkey)
            w.remove("rule", rkey)
        await w.remove_from_set("tenant", tenant_name, "Policies", obj["key"])

    async def oper(self, ctx: OperContext, obj: dict) -> Optional[dict]:
        groups = await ctx.states("endpointGroup")
        endpoints = await ctx.states("endpoint")
        count, eps = 0, []
        for gkey in link_keys(obj, "EndpointGroups"):
            g = groups.get(gkey)
            if g is None:
                continue
            count += int(g.get("epCount", 0))
            eps.extend(endpoints_where(endpoints, group=gkey))
        return {"endpoints": eps, "numEndpoints": count, "policyViolations": 0}


class RuleHandler(Handler):
    modeltype = "rule"

    async def create(self, w: Work, rule: dict) -> dict:
        d = rule.get("direction")
        if d == "in":
            if rule.get("toNetwork") or rule.get("toEndpointGroup"):
                raise MasterError("can not specify 'to' parameters in incoming rule")
            if rule.get("fromNetwork") and rule.get("fromIpAddress"):
                raise MasterError("can not specify both from network and from ip address")
            if rule.get("fromNetwork") and rule.get("fromEndpointGroup"):
                raise MasterError("can not specify both from network and from EndpointGroup")
        elif d == "out":
            if rule.get("fromNetwork") or rule.get("fromEndpointGroup") or rule.get("fromIpAddress"):
                raise MasterError("can not specify 'from' parameters in outgoing rule")
            if rule.get("toNetwork") and rule.get("toIpAddress"):
                raise MasterError("can not specify both to-network and to-ip address")
            if rule.get("toNetwork") and rule.get("toEndpointGroup"):
                raise MasterError("can not specify both to-network and to-EndpointGroup")
        else:
            raise MasterError("invalid direction for the rule")

        tenant_name = rule["tenantName"]
        epg_key = ""
        if rule.get("fromEndpointGroup") or rule.get("toEndpointGroup"):
            epg_key = f"{tenant_name}:{rule.get('fromEndpointGroup') or rule.get('toEndpointGroup')}"
            if not await w.exists("endpointGroup", epg_key):
                raise MasterError("endpoint group not found")
        elif rule.get("fromNetwork"):
            if not await w.exists("network", f"{tenant_name}:{rule['fromNetwork']}"):
                raise MasterError("from Network not found")
        elif rule.get("toNetwork"):
            if not await w.exists("network", f"{tenant_name}:{rule['toNetwork']}"):
                raise MasterError("to Network not found")

        pkey = f"{tenant_name}:{rule['policyName']}"
        policy = await w.obj("policy", pkey)
        if policy is None:
            raise MasterError("Policy not found")

        if d == "in" and rule.get("toIpAddress"):
            # the k8s network-policy case: the address must be an endpoint of the one EPG
            attached = link_keys(policy, "EndpointGroups")
            ip = rule["toIpAddress"]
            if len(attached) != 1:
                raise MasterError(f"failed to configure {ip}, {len(attached)} endpoint groups "
                                  f"linked to policy {rule['policyName']} ")
            t, _, g = attached[0].partition(":")
            endpoints = await w.states("endpoint")
            if not any(ep.get("ipAddress") == ip and ep.get("group") == attached[0]
                       for ep in endpoints.values()):
                raise MasterError(f"failed to configure {ip}, ip address is not in epg {g}:{t}")

        rule = dict(rule)
        rule["link-sets"] = {s: {} for s in (rule.get("link-sets") or {})}
        rule["links"] = {n: {"type": "", "key": ""} for n in (rule.get("links") or {})}
        rule["link-sets"].setdefault("Policies", {})[pkey] = {"type": "policy", "key": pkey}
        await w.add_to_set("policy", pkey, "Rules", "rule", rule["key"])
        if epg_key:
            await w.add_to_set("endpointGroup", epg_key, "MatchRules", "rule", rule["key"])
            w.set_link(rule, "MatchEndpointGroup", "endpointGroup", epg_key)
        return rule

    async def update(self, w: Work, old: dict, new: dict) -> dict:
        raise MasterError("can not update a rule after its created")

    async def delete(self, w: Work, rule: dict) -> None:
        pkey = f"{rule['tenantName']}:{rule['policyName']}"
        if not await w.exists("policy", pkey):
            raise MasterError("Policy not found")
        await w.remove_from_set("policy", pkey, "Rules", rule["key"])
        epg = link_target(rule, "MatchEndpointGroup")
        if epg:
            await w.remove_from_set("endpointGroup", epg, "MatchRules", rule["key"])
