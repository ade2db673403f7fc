"""Intent -> the MO tree the APIC should hold: a pure function of the Redis records.

:func:`desired` takes the store's kinds (``obj:tenant``, ``obj:network``,
``obj:endpointGroup``, ``obj:policy``, ``obj:rule``, ``obj:appProfile``,
``obj:extContractsGroup``, ``obj:aciGw`` and the ``network``/``endpointGroup``
state records) and returns ``{dn: Mo}``.  No I/O and no clock, so the
reconciler can recompute it on every change and the tests can check every
object kind on plain dicts.

The mapping follows what Contiv's aci-gw built (``contiv/aci-gw``
``apic/apicagent.py``), named so an operator recognises it:

* tenant ``T`` -> ``fvTenant T`` + VRF ``fvCtx T-Vrf`` (``pcEnfPref`` enforced when
  ``enforcePolicies`` is ``yes``, the default, else unenforced);
* network ``N`` -> ``fvBD N`` with ``fvRsCtx`` to the VRF and ``fvSubnet
  [gateway/len]`` when the network has a gateway.  With ``includeCommonTenant``
  ``yes`` no BD is made: the EPG's ``fvRsBd`` names ``N`` and the APIC resolves a
  name it does not find in the tenant in tenant ``common`` (aci-gw looked for
  ``uni/tn-common/BD-N`` the same way);
* endpoint group ``G`` -> ``fvAEPg G`` in ``fvAp <app-profile>`` (the Contiv
  app-profile listing ``G``, else ``DEFAULT_AP``), ``fvRsBd`` to its network,
  ``fvRsDomAtt uni/phys-<physicalDomain>``, and one static binding per
  ``pathBindings`` (``fvRsPathAtt``) and ``nodeBindings`` (``fvRsNodeAtt``)
  entry with ``encap vlan-<the EPG's VLAN>``;
* policies, when ``enforcePolicies`` is ``yes``: per (policy ``P``, direction,
  peer EPG or ``any``) one filter ``P-in-peer`` with one ``vzEntry rule-<id>`` per
  *allow* rule, and one contract (``vzBrCP`` + ``vzSubj subj`` +
  ``vzRsSubjFiltAtt``) of the same name.  ``in`` rules: the EPGs carrying ``P``
  provide it and the peer EPG consumes it (``any``: the VRF's ``vzAny`` does).
  ``out`` rules: the EPGs carrying ``P`` consume it and the peer provides it.
  ACI contracts are allow-lists, so *deny* rules need no object (what no
  contract permits is dropped); rules naming a network or an IP address have no
  EPG to attach to and are reported by :func:`skipped`, not mirrored;
* external contracts groups on an EPG -> ``fvRsCons``/``fvRsProv`` by contract
  name for contracts of the EPG's tenant or ``common``; a consumed contract of
  another tenant is imported as a contract interface ``vzCPIf <tn>-<name>``
  (``vzRsIf`` to its DN) consumed through ``fvRsConsIf``.

Every MO carries ``annotation = MARK``.  Where two sources want the same MO (an
EPG consuming one contract for two reasons) they agree, so the result is a set.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Tuple

from drivers.aci.mo import MARK, Mo, aci_name, rn_of, split_dn

DEFAULT_AP = "contiv-default-ap"
_PROTOS = {"tcp": "tcp", "udp": "udp", "icmp": "icmp"}

Kinds = Dict[str, Dict[str, dict]]


def gw_config(kinds: Kinds) -> dict:
    """The ``aciGw`` object's settings with Contiv's defaults (enforcement on)."""
    gw = (kinds.get("obj:aciGw") or {}).get("aciGw") or {}
    return {
        "enforce": (gw.get("enforcePolicies") or "yes") == "yes",
        "common": (gw.get("includeCommonTenant") or "no") == "yes",
        "domain": gw.get("physicalDomain") or "",
        "nodes": [n for n in (gw.get("nodeBindings") or "").split(",") if n],
        "paths": [p for p in (gw.get("pathBindings") or "").split(",") if p],
    }


def _add(out: Dict[str, Mo], parent: str, cls: str, **attrs: str) -> str:
    attrs["annotation"] = MARK
    dn = f"{parent}/{rn_of(cls, attrs)}"
    out[dn] = Mo(cls, attrs)
    return dn


def tenant_dn(tenant: str) -> str:
    return f"uni/tn-{tenant}"


def vrf_name(tenant: str) -> str:
    return aci_name(tenant, "Vrf")


def epg_dn(tenant: str, ap: str, group: str) -> str:
    return f"uni/tn-{tenant}/ap-{ap}/epg-{group}"


def app_profiles(kinds: Kinds) -> Dict[str, str]:
    """EPG key -> the app-profile name holding it (the first by key when several do)."""
    out: Dict[str, str] = {}
    for key in sorted(kinds.get("obj:appProfile") or {}):
        ap = kinds["obj:appProfile"][key]
        for g in ap.get("endpointGroups") or []:
            out.setdefault(f"{ap.get('tenantName', '')}:{g}", ap.get("appProfileName", ""))
    return out


def _rules_by_policy(kinds: Kinds) -> Dict[str, List[dict]]:
    out: Dict[str, List[dict]] = {}
    for rule in (kinds.get("obj:rule") or {}).values():
        out.setdefault(f"{rule.get('tenantName', '')}:{rule.get('policyName', '')}",
                       []).append(rule)
    for rules in out.values():
        rules.sort(key=lambda r: str(r.get("ruleId", "")))
    return out


def _mirrorable(rule: dict) -> bool:
    """An allow rule whose peer is an EPG or anything (not a network or an address)."""
    if rule.get("action") != "allow":
        return False
    if rule.get("direction") == "in":
        return not (rule.get("fromNetwork") or rule.get("fromIpAddress"))
    if rule.get("direction") == "out":
        return not (rule.get("toNetwork") or rule.get("toIpAddress"))
    return False


def skipped(kinds: Kinds) -> List[Tuple[str, str]]:
    """(rule key, why) for allow rules the mapping cannot express in ACI."""
    out = []
    for key, rule in sorted((kinds.get("obj:rule") or {}).items()):
        if rule.get("action") == "allow" and not _mirrorable(rule):
            out.append((key, "a rule naming a network or an IP address has no EPG in ACI; "
                             "use an external contracts group"))
    return out


def _peer(rule: dict) -> str:
    if rule.get("direction") == "in":
        return rule.get("fromEndpointGroup") or ""
    return rule.get("toEndpointGroup") or ""


def _entry(rule: dict) -> Dict[str, str]:
    proto = _PROTOS.get(str(rule.get("protocol") or "").lower(), "unspecified")
    port = int(rule.get("port") or 0)
    ports = str(port) if port and proto in ("tcp", "udp") else "unspecified"
    # every property we may ever set is always given, so a rule losing its port
    # sets the entry back to "unspecified" instead of leaving the old port behind
    return {"name": aci_name("rule", str(rule.get("ruleId", ""))), "etherT": "ip",
            "prot": proto, "dFromPort": ports, "dToPort": ports}


def contract_name(policy: str, direction: str, peer: str) -> str:
    return aci_name(policy, direction, peer or "any")


def desired(kinds: Kinds) -> Dict[str, Mo]:
    """The MOs (by DN) that mirror the intent in ``kinds``."""
    gw = gw_config(kinds)
    out: Dict[str, Mo] = {}
    tenants = kinds.get("obj:tenant") or {}
    networks = kinds.get("obj:network") or {}
    net_state = kinds.get("network") or {}
    groups = kinds.get("obj:endpointGroup") or {}
    group_state = kinds.get("endpointGroup") or {}
    aps = app_profiles(kinds)
    ext_groups = kinds.get("obj:extContractsGroup") or {}

    for tname in sorted(tenants):
        tdn = _add(out, "uni", "fvTenant", name=tname)
        ctx = _add(out, tdn, "fvCtx", name=vrf_name(tname),
                   pcEnfPref="enforced" if gw["enforce"] else "unenforced")
        if gw["enforce"]:
            _add(out, ctx, "vzAny")

    for nkey in sorted(networks):
        net = networks[nkey]
        tname = net.get("tenantName", "")
        if tname not in tenants or gw["common"]:
            continue
        bd = _add(out, tenant_dn(tname), "fvBD", name=net.get("networkName", ""))
        _add(out, bd, "fvRsCtx", tnFvCtxName=vrf_name(tname))
        gateway = net.get("gateway") or ""
        st = net_state.get(nkey) or {}
        length = st.get("subnetLen") or (net.get("subnet") or "").rpartition("/")[2]
        if gateway and str(length).isdigit():
            _add(out, bd, "fvSubnet", ip=f"{gateway}/{length}")

    # who carries which policy: (tenant, policy) -> [EPG DN]
    carriers: Dict[str, List[str]] = {}
    epg_dns: Dict[str, str] = {}
    for gkey in sorted(groups):
        g = groups[gkey]
        tname = g.get("tenantName", "")
        if tname not in tenants:
            continue
        ap = aps.get(gkey) or DEFAULT_AP
        apdn = _add(out, tenant_dn(tname), "fvAp", name=ap)
        edn = _add(out, apdn, "fvAEPg", name=g.get("groupName", ""))
        epg_dns[gkey] = edn
        _add(out, edn, "fvRsBd", tnFvBDName=g.get("networkName", ""))
        if gw["domain"]:
            _add(out, edn, "fvRsDomAtt", tDn=f"uni/phys-{gw['domain']}")
        vlan = int((group_state.get(gkey) or {}).get("pktTag") or 0)
        if vlan:
            for path in gw["paths"]:
                _add(out, edn, "fvRsPathAtt", tDn=path, encap=f"vlan-{vlan}")
            for node in gw["nodes"]:
                _add(out, edn, "fvRsNodeAtt", tDn=node, encap=f"vlan-{vlan}")
        for pname in g.get("policies") or []:
            carriers.setdefault(f"{tname}:{pname}", []).append(edn)
        for cg in g.get("extContractsGrps") or []:
            _ext_contracts(out, ext_groups.get(f"{tname}:{cg}"), tname, edn)

    if gw["enforce"]:
        rules = _rules_by_policy(kinds)
        for pkey in sorted(carriers):
            tname, _, pname = pkey.partition(":")
            _contracts(out, tname, pname, rules.get(pkey) or [], carriers[pkey], epg_dns)
    return out


def _contracts(out: Dict[str, Mo], tname: str, pname: str, rules: Iterable[dict],
               carriers: List[str], epg_dns: Dict[str, str]) -> None:
    by_contract: Dict[Tuple[str, str], List[dict]] = {}
    for rule in rules:
        if _mirrorable(rule):
            by_contract.setdefault((rule["direction"], _peer(rule)), []).append(rule)
    tdn = tenant_dn(tname)
    for (direction, peer), crules in sorted(by_contract.items()):
        name = contract_name(pname, direction, peer)
        flt = _add(out, tdn, "vzFilter", name=name)
        for rule in crules:
            _add(out, flt, "vzEntry", **_entry(rule))
        brc = _add(out, tdn, "vzBrCP", name=name, scope="context")
        subj = _add(out, brc, "vzSubj", name="subj", revFltPorts="yes")
        _add(out, subj, "vzRsSubjFiltAtt", tnVzFilterName=name)
        mine, theirs = ("fvRsProv", "fvRsCons") if direction == "in" else ("fvRsCons", "fvRsProv")
        for edn in carriers:
            _add(out, edn, mine, tnVzBrCPName=name)
        if peer:
            pdn = epg_dns.get(f"{tname}:{peer}")
            if pdn is not None:
                _add(out, pdn, theirs, tnVzBrCPName=name)
        else:
            anydn = f"{tdn}/ctx-{vrf_name(tname)}/any"
            _add(out, anydn, "vzRsAnyToCons" if direction == "in" else "vzRsAnyToProv",
                 tnVzBrCPName=name)


def _ext_contracts(out: Dict[str, Mo], group: Optional[dict], tname: str, edn: str) -> None:
    if not group:
        return
    consumed = group.get("contractsType") == "consumed"
    for cdn in group.get("contracts") or []:
        rns = split_dn(cdn)
        if len(rns) != 3 or rns[0] != "uni" or not rns[1].startswith("tn-") or \
                not rns[2].startswith("brc-"):
            continue  # not a contract DN: reported by skipped_ext
        ctn, cname = rns[1][3:], rns[2][4:]
        if ctn in (tname, "common"):
            _add(out, edn, "fvRsCons" if consumed else "fvRsProv", tnVzBrCPName=cname)
        elif consumed:
            ifname = aci_name(ctn, cname)
            cif = _add(out, tenant_dn(tname), "vzCPIf", name=ifname)
            _add(out, cif, "vzRsIf", tDn=cdn)
            _add(out, edn, "fvRsConsIf", tnVzCPIfName=ifname)


def skipped_ext(kinds: Kinds) -> List[Tuple[str, str]]:
    """(contracts group key, why) for contracts the mapping cannot attach."""
    out = []
    for key, group in sorted((kinds.get("obj:extContractsGroup") or {}).items()):
        tname = group.get("tenantName", "")
        for cdn in group.get("contracts") or []:
            rns = split_dn(cdn)
            if len(rns) != 3 or rns[0] != "uni" or not rns[1].startswith("tn-") or \
                    not rns[2].startswith("brc-"):
                out.append((key, f"{cdn!r} is not a contract DN (uni/tn-<tenant>/brc-<name>)"))
            elif group.get("contractsType") == "provided" and rns[1][3:] not in (tname, "common"):
                out.append((key, f"an EPG cannot provide {cdn} of another tenant"))
    return out
