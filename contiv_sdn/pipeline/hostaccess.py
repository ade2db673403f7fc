"""Host access: a host reaches its containers and the VIPs, a container reaches its host.

Contiv's weak spot #2 (host <-> pod, kube-dns in vxlan mode): its ``contivh0``
held one private address per host and relied on host NAT.  Here the host is
treated as one more *local endpoint* of its own switch, in the default tenant's
VRF, so the ordinary stages (service NAT, policy, conntrack, tunnels) apply to it:

* **The port**: the agent puts an OVS internal port :data:`PORT` (``contivh0``)
  on ``br-int`` in the host's own network namespace (``agent/hostport.py``), with
  the address :func:`host_address` (from the host-access range
  :data:`SUBNET`, Contiv's ``pvtSubnet`` default ``172.19.0.0/16``: the VTEP's two
  low bytes, so every host's is unique and derived without a new allocation)
  and the MAC :func:`host_mac` (``02:02`` + the address, as Contiv's
  ``PortToHostIPMAC``).  Routes: every VXLAN subnet of the default tenant via
  :data:`GATEWAY`, whose ARP br-int answers with ``ROUTER_MAC``.  The flows below
  exist on a switch only while it reports that port (``Host.ports``).
* **What a host reaches**: the endpoints of the **default tenant**'s VXLAN
  networks, on any host, and that tenant's VIPs; nothing of other tenants (their
  subnets may overlap the default tenant's, and one kernel routing table cannot
  tell two tenants apart; a host in several VRFs is what Contiv's infra networks
  were, and is not done here).  VLAN networks are left out: their gateway may be
  a real router on the uplink, which br-int must not impersonate.
* **Host -> container** (L3, per default-tenant endpoint, on every switch with
  the port): ``ROUTER_MAC`` + the endpoint's address -> its MAC and network, then
  L2.  L2 and the network's conntrack entry are added here at a priority one below
  the endpoint's and network's own (identical actions), because the endpoint's
  network need not be present on the host (bridge mode compiles nothing of a
  network without a local endpoint).  The packet then goes exactly where a local
  container's would: tunnel to the endpoint's host, judged there by its ``in``
  rules; the host is in no group (``REG_SRC_EPG`` 0), so rules name it by
  address (``172.19.0.0/16``).
* **Container -> host** (and every reply to the host): containers route to the
  host-access range through their network's gateway, which br-int answers here
  for the default tenant's VXLAN networks (with ``ROUTER_MAC``, one priority below
  the gateway answer of routing mode / the DNS path, which is the same).  L3
  turns ``ROUTER_MAC`` + a host's address into that host's MAC in the pseudo
  network :data:`NET_ID`; L2 outputs it to the local port, or to the tunnel with
  the reserved VNI :data:`VNI` towards that host's VTEP, where CLASSIFY maps
  the VNI back to :data:`NET_ID`.
* **Host -> VIP**: the host's IPv4 enters the service stage (ARP -> SVC, like a
  network of a tenant with services), so a VIP is DNAT'ed on the host's own
  switch by the service's select group and un-NAT'ed there on the way back;
  the service owner is present on a switch with the port even when the
  default tenant has no endpoint there (``compiler``/``incremental``).

Flows per switch with the port, for E default-tenant endpoints this switch can
send to, N of its VXLAN networks (G of them with a gateway) and K other hosts with
the port: ``9 + 2·E + 2·N + G + 2·K + (1 if the tenant has a service) + (1 with a
tunnel port)`` (:func:`formula`).

Reserved values: :data:`NET_ID` is outside network ids (1..65535: ``REG_NET`` is
32 bits); :data:`VNI` must not be a network's VXLAN tag (the default VXLAN range
is 1-10000).
"""

from __future__ import annotations

import ipaddress
import zlib
from typing import Any, Iterable, List, Mapping, Optional, Tuple

from . import policy as PL
from . import tables as T
from .flow import COOKIE_MARK, OFPP_IN_PORT, Action, Flow, make_match
from .state import ROUTER_MAC

#: the host-access port's name on br-int (Contiv's)
PORT = "contivh0"
#: the host-access range (Contiv's ``pvtSubnet`` default)
SUBNET = ipaddress.IPv4Network("172.19.0.0/16")
#: the next hop of the hosts' container routes (answered by br-int, never a host)
GATEWAY = "172.19.0.1"
#: the tenant whose networks the hosts reach
TENANT = "default"
#: ``REG_NET`` of traffic to or from a host's port (not a network id: those are 16 bits)
NET_ID = 0x10000
#: the VXLAN tag of traffic to another host's port
VNI = 0xFFFFFF

P_CLASSIFY = 100
P_SOURCE = 100
P_GW = 199  # below the gateway ARP of routing mode / the DNS path (200), same answer
P_L3 = 101  # above routing mode's (100): same rewrite, keeps the host's flag visible
P_L2 = 99  # below the endpoint's own (100): same decision where both exist
P_POLICY_CT, P_POLICY_COMMIT = 19, 9  # below the network's own (20, 10)

#: cookie kind 7 = host access (compiler.py's kinds stop at 5, services are 6)
_COOKIE_KIND = 7
COOKIE = COOKIE_MARK | (_COOKIE_KIND << 32) | (zlib.crc32(b"host-access") & 0xFFFFFFFF)

_LOCAL = (0, T.FLAG_REMOTE)
_RESERVED = {int(SUBNET.network_address), int(SUBNET.broadcast_address), int(ipaddress.IPv4Address(GATEWAY))}


def host_address(vtep_ip: str) -> Optional[str]:
    """A host's address on its port: the host-access range + the VTEP's two low bytes
    (``192.168.50.3`` -> ``172.19.50.3``); None when that lands on the range's
    network, broadcast or gateway address (such a host has no host access)."""
    try:
        low = int(ipaddress.IPv4Address(vtep_ip)) & 0xFFFF
    except (ValueError, TypeError):
        return None
    addr = int(SUBNET.network_address) | low
    return None if addr in _RESERVED else str(ipaddress.IPv4Address(addr))


def host_mac(address: str) -> str:
    """The port's MAC: ``02:02`` + the address's four bytes (Contiv's host-port MACs)."""
    return "02:02:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(address).packed)


def peers(hosts: Mapping[str, Any], vteps: Mapping[str, str]) -> Tuple[Tuple[str, str, str], ...]:
    """``(host, address, VTEP)`` of every host whose switch reports the port and whose
    VTEP is valid and maps to an address, sorted; a second host mapping to the same
    address is left out (the first by name keeps it: the VTEPs differ beyond their
    two low bytes, which the range cannot tell apart)."""
    out, seen = [], set()
    for name in sorted(vteps):
        h = hosts.get(name)
        try:
            has = h is not None and PORT in h.ports
        except Exception:  # a hostile ports mapping: that host has no host access
            has = False
        if not has:
            continue
        addr = host_address(vteps[name])
        if addr is None or addr in seen:
            continue
        seen.add(addr)
        out.append((name, addr, vteps[name]))
    return tuple(out)


def tenant_view(tenants: Mapping[str, Any], nets: Iterable[Any], eps: Iterable[Any]) -> Optional[Tuple]:
    """What every switch's host access reads of the default tenant, or None when it
    does not exist: ``(vrf, networks, endpoints)`` with networks ``(net_id, tag,
    gateway)`` and endpoints ``(ip, mac, net_id, tag, epg, host, port)`` of its VXLAN
    networks, sorted (``nets``/``eps``: the compilers' resolved ``_Net``/``_Ep``)."""
    t = tenants.get(TENANT)
    vrf = getattr(t, "vrf_id", None)
    if type(vrf) is not int:
        return None
    mine = [n for n in nets if n.tenant == TENANT and n.encap == "vxlan"]
    keys = {n.key for n in mine}
    net_t = tuple(sorted((n.net_id, n.tag, n.gateway or "") for n in mine))
    ep_t = tuple(sorted((e.ip, e.mac, e.net.net_id, e.net.tag, e.epg, e.host, e.port)
                        for e in eps if e.net.key in keys))
    return (vrf, net_t, ep_t)


def host_args(view: Optional[Tuple], peer_list: Tuple[Tuple[str, str, str], ...], vteps: Mapping[str, str],
              host: str,
              ports: Mapping[str, int], tun: Optional[int], has_svc: bool, k8s: bool) -> Optional[Tuple]:
    """The inputs of one switch's host-access flows (None: it has none: no port, no
    default tenant, or its host has no address).  Endpoints are reduced to what
    this switch does with them: a local ofport or a remote VTEP (``vteps``: every
    host's valid VTEP, whether or not it has the port)."""
    ofport = ports.get(PORT)
    if view is None or ofport is None:
        return None
    me = next((p for p in peer_list if p[0] == host), None)
    if me is None:
        return None
    vrf, nets, eps = view
    out_eps = []
    for ip, mac, net_id, tag, epg, ep_host, port in eps:
        if ep_host == host:
            where: Any = ports.get(port)
            if where is None:
                continue
        else:
            where = vteps.get(ep_host)
            if where is None or tun is None:
                continue
        out_eps.append((ip, mac, net_id, tag, epg, where))
    others = tuple((addr, vtep) for name, addr, vtep in peer_list if name != host) if tun is not None else ()
    return (ofport, tun, me[1], vrf, nets, tuple(out_eps), others, bool(has_svc), bool(k8s))


def _flow(table: int, prio: int, match: Mapping, actions: Iterable[Action] = (), goto: Optional[int] = None,
          note: str = "") -> Flow:
    return Flow(table, prio, make_match(**match), tuple(actions), goto, COOKIE, note)


def _responder(mac: str, ip: str) -> Tuple[Action, ...]:
    return (("move", "eth_src", "eth_dst", 48), ("set_field", "eth_src", mac),
            ("set_field", "arp_op", T.ARP_REPLY), ("move", "arp_sha", "arp_tha", 48),
            ("move", "arp_spa", "arp_tpa", 32), ("set_field", "arp_sha", mac),
            ("set_field", "arp_spa", ip), ("output", OFPP_IN_PORT))


def flows(ofport: int, tun: Optional[int], address: str, vrf: int, nets: Tuple, eps: Tuple,
          others: Tuple, has_svc: bool, k8s: bool) -> List[Flow]:
    """One switch's host-access flows (owner ``(7,)``), from :func:`host_args`."""
    ip = T.ETH_TYPE_IP
    mac = host_mac(address)
    after_l2 = T.K8S if k8s else T.POLICY
    out = [
        _flow(T.CLASSIFY, P_CLASSIFY, {"in_port": ofport, "vlan_vid": T.OFPVID_NONE},
              [("set_field", T.REG_VRF, vrf), ("set_field", T.REG_NET, NET_ID),
               ("set_field", T.REG_FLAGS, T.FLAG_HOST)], T.SOURCE, note="host: its port"),
        _flow(T.SOURCE, P_SOURCE, {"in_port": ofport, "eth_src": mac, "eth_type": ip, "ipv4_src": address},
              goto=T.ARP, note="host: IPv4 source"),
        _flow(T.SOURCE, P_SOURCE, {"in_port": ofport, "eth_src": mac, "eth_type": T.ETH_TYPE_ARP,
                                   "arp_spa": address, "arp_sha": mac}, goto=T.ARP, note="host: ARP source"),
        _flow(T.ARP, P_GW, {"in_port": ofport, "eth_type": T.ETH_TYPE_ARP, "arp_op": T.ARP_REQUEST,
                            "arp_tpa": GATEWAY}, _responder(ROUTER_MAC, GATEWAY), note="host: its gateway"),
        _flow(T.L2, P_L2, {T.REG_NET: NET_ID, "eth_dst": mac}, [("set_field", T.REG_OUT, ofport)], after_l2,
              note="host: to its port"),
        _flow(T.OUTPUT, P_L2, {T.REG_OUT: ofport}, [("output", ofport)], note="host: deliver"),
    ]
    out += PL.net_policy_flows(NET_ID, vrf, "host", COOKIE)
    if has_svc:
        out.append(_flow(T.ARP, 1, {"eth_type": ip, T.REG_NET: NET_ID}, goto=T.SVC,
                         note="host: its IPv4 through the service stage"))
    if tun is not None:
        out.append(_flow(T.CLASSIFY, P_CLASSIFY, {"in_port": tun, "tunnel_id": VNI},
                         [("set_field", T.REG_VRF, vrf), ("set_field", T.REG_NET, NET_ID),
                          ("set_field", T.REG_FLAGS, T.FLAG_REMOTE)], T.SOURCE,
                         note="host: from the tunnel, to a host's port"))
    to_host = {T.REG_FLAGS: _LOCAL, T.REG_VRF: vrf, "eth_dst": ROUTER_MAC, "eth_type": ip}
    for addr, vtep in ((address, None),) + tuple(others):
        hmac = host_mac(addr)
        out.append(_flow(T.L3, P_L3, dict(to_host, ipv4_dst=addr),
                         [("set_field", "eth_src", ROUTER_MAC), ("set_field", "eth_dst", hmac), ("dec_ttl",),
                          ("set_field", T.REG_NET, NET_ID)], T.L2, note=f"host {addr}: route"))
        if vtep is not None:
            out.append(_flow(T.L2, P_L2, {T.REG_NET: NET_ID, "eth_dst": hmac},
                             [("set_field", "tunnel_id", VNI), ("set_field", "tun_ipv4_dst", vtep),
                              ("set_field", T.REG_OUT, tun)], after_l2, note=f"host {addr}: via VXLAN"))
    for net_id, _tag, gw in nets:
        out += [
            _flow(T.POLICY, P_POLICY_CT, {"eth_type": ip, T.REG_NET: net_id}, [("ct", False, vrf, T.POLICY_CT)],
                  note=f"host: network {net_id}: conntrack in zone {vrf}"),
            _flow(T.POLICY_COMMIT, P_POLICY_COMMIT, {"eth_type": ip, T.REG_NET: net_id}, [("ct", True, vrf, None)],
                  T.OUTPUT, note=f"host: network {net_id}: commit in zone {vrf}"),
        ]
        if gw:
            out.append(_flow(T.ARP, P_GW, {"eth_type": T.ETH_TYPE_ARP, "arp_op": T.ARP_REQUEST, T.REG_NET: net_id,
                                           "arp_tpa": gw, T.REG_FLAGS: _LOCAL},
                             _responder(ROUTER_MAC, gw), note=f"host: network {net_id}'s gateway"))
    from_host = {T.REG_FLAGS: (T.FLAG_HOST, T.FLAG_HOST | T.FLAG_REMOTE), T.REG_VRF: vrf,
                 "eth_dst": ROUTER_MAC, "eth_type": ip}
    for ep_ip, ep_mac, net_id, tag, epg, where in eps:
        out.append(_flow(T.L3, P_L3, dict(from_host, ipv4_dst=ep_ip),
                         [("set_field", "eth_src", ROUTER_MAC), ("set_field", "eth_dst", ep_mac), ("dec_ttl",),
                          ("set_field", T.REG_NET, net_id)], T.L2, note=f"host: to {ep_ip}"))
        dst: List[Action] = [("set_field", T.REG_DST_EPG, epg)] if epg else []
        if isinstance(where, int):
            dst.append(("set_field", T.REG_OUT, where))
        else:
            dst += [("set_field", "tunnel_id", tag), ("set_field", "tun_ipv4_dst", where),
                    ("set_field", T.REG_OUT, tun)]
        out.append(_flow(T.L2, P_L2, {T.REG_NET: net_id, "eth_dst": ep_mac}, dst, after_l2,
                         note=f"host: {ep_ip}'s place"))
    return out


def any_port(hosts: Mapping[str, Any]) -> bool:
    """Whether some switch reports the port (else host access costs nothing at all)."""
    for h in hosts.values():
        try:
            if PORT in h.ports:
                return True
        except Exception:  # a hostile ports mapping: not this host
            continue
    return False


def formula(endpoints: int, networks: int, gateways: int, other_hosts: int, has_svc: bool,
            tunnel: bool) -> int:
    """The host-access flows of a switch, by the module formula (tests hold it)."""
    return 9 + 2 * endpoints + 2 * networks + gateways + 2 * other_hosts + int(has_svc) + int(tunnel)
