"""Turn what Redis holds (plus what switches reported) into a compiler snapshot.

Pure: the store's ``snapshot()`` result and the switches' port maps in, a
:class:`~contiv_sdn.pipeline.state.Snapshot` out.  Records that are incomplete
(an endpoint whose network is gone, a host without a VTEP) are left out rather
than guessed at: the next change notification brings the missing half, and a
flow compiled from half a record would be wrong on the wire.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Dict, Mapping

from twisted.logger import Logger

from contiv_sdn.pipeline.state import (
    Endpoint, GlobalCfg, Group, Host, Network, Snapshot, Tenant, _frozen,
)

log = Logger()

StoreData = Mapping[str, Mapping[str, Mapping[str, Any]]]

#: The store kinds :func:`build_snapshot` reads; a change to any other kind needs no run.
SNAPSHOT_KINDS = frozenset({"obj:global", "tenant", "obj:network", "network", "endpointGroup",
                            "host", "endpoint"})


def _network_address(subnet: str) -> str:
    """``20.1.1.5-20.1.1.9/24`` or ``20.1.1.0/24`` -> ``20.1.1.0/24``."""
    addr, _, plen = subnet.partition("/")
    addr = addr.split("-")[0]
    return str(ipaddress.IPv4Network(f"{addr}/{plen}", strict=False))


def build_snapshot(revision: int, data: StoreData,
                   ports_by_dpid: Mapping[int, Mapping[str, int]]) -> Snapshot:
    g = data.get("obj:global", {}).get("global", {})
    global_cfg = GlobalCfg(fwd_mode=g.get("fwdMode") or "bridge",
                           arp_mode=g.get("arpMode") or "proxy")

    tenants: Dict[str, Tenant] = {}
    for name, st in data.get("tenant", {}).items():
        if st.get("vrfId"):
            tenants[name] = Tenant(name=name, vrf_id=int(st["vrfId"]))

    networks: Dict[str, Network] = {}
    net_cfgs = data.get("obj:network", {})
    for key, st in data.get("network", {}).items():
        cfg = net_cfgs.get(key)
        tenant = key.split(":", 1)[0]
        if cfg is None or tenant not in tenants or not st.get("netId"):
            continue
        encap = st.get("encap") or cfg.get("encap") or "vxlan"
        tag = int(st.get("vni") or 0) if encap == "vxlan" else int(st.get("vlan") or 0)
        try:
            subnet = _network_address(st.get("subnet") or cfg.get("subnet", ""))
        except ValueError:
            log.warn("network {key} has an unusable subnet; no flows for it", key=key)
            continue
        networks[key] = Network(
            key=key, tenant=tenant, name=key.split(":", 1)[1], encap=encap, pkt_tag=tag,
            net_id=int(st["netId"]), subnet=subnet,
            gateway=st.get("gateway") or cfg.get("gateway") or "",
        )

    groups: Dict[str, Group] = {}
    for key, st in data.get("endpointGroup", {}).items():
        net = st.get("network")
        if net in networks and st.get("epgId"):
            groups[key] = Group(key=key, tenant=key.split(":", 1)[0], network=net,
                                epg_id=int(st["epgId"]))

    hosts: Dict[str, Host] = {}
    for name, st in data.get("host", {}).items():
        if not st.get("vtepIP") or not st.get("dpid"):
            continue
        dpid = int(st["dpid"])
        hosts[name] = Host(
            name=name, dpid=dpid, vtep_ip=st["vtepIP"],
            ports=_frozen(ports_by_dpid.get(dpid, {})),
            tunnel_port=st.get("tunnelPort") or "vxlan0",
            uplink_port=st.get("uplinkPort") or None,
        )

    endpoints: Dict[str, Endpoint] = {}
    for eid, st in data.get("endpoint", {}).items():
        net = st.get("network")
        if net not in networks or not st.get("ipAddress") or not st.get("macAddress"):
            continue
        group = st.get("group") or None
        epg_id = groups[group].epg_id if group in groups else 0
        endpoints[eid] = Endpoint(
            id=eid, host=st.get("homingHost", ""), network=net,
            ip=st["ipAddress"].split("/")[0], mac=st["macAddress"].lower(),
            port=st.get("intfName", ""), group=group if group in groups else None,
            epg_id=epg_id,
        )

    return Snapshot(
        revision=revision, global_cfg=global_cfg, tenants=_frozen(tenants),
        networks=_frozen(networks), groups=_frozen(groups), hosts=_frozen(hosts),
        endpoints=_frozen(endpoints),
    )
