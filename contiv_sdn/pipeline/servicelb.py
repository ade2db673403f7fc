"""Service load balancing in the datapath: VIPs on OpenFlow select groups and conntrack NAT.

The OVN / Cilium way, not Contiv's: no controller on the packet path.  Every
client's switch holds, per service VIP:port:protocol, one OpenFlow 1.3 select
group whose buckets each ``ct(commit, zone=VRF, nat(dst=provider:port),
exec(ct_mark=SVC|group))`` and recirculate to :data:`~tables.SVC_DST`; the
first packet of a connection picks a bucket, conntrack remembers the choice,
every later packet (and every reply, reverse-NAT'ed) follows the conntrack
entry, not the group.  Tables (see ``tables.py``)::

    20 ARP      per network with a service in its tenant: IPv4 -> SVC (priority 1,
                above the miss to L3); proxy ARP for each VIP with VIP_MAC.
    25 SVC      to a VIP: ct(zone=HAIRPIN_ZONE, nat) -> 26 (undoes a hairpin SNAT on
                the reply); any other IPv4 -> 26.
    26 SVC_VRF  ct(zone=VRF, nat) -> 27: applies the DNAT of a known connection,
                reverses it on replies and on ICMP errors related to it.
    27 SVC_CT   +new to VIP:port/proto -> group; ct_mark has SVC_MARK -> 28; else L3.
                With ClientIP affinity: resubmit(,23), resubmit(,24) instead of the group.
    23 SVC_AFF  only flows the switch learned (cookie without COOKIE_MARK, so the
                flow sync never reads or deletes them): (VRF, client, VIP, proto,
                port) -> REG_AFF = the pinned provider's address, idle_timeout =
                timeoutSeconds (kube-proxy's ``recent`` semantics: each new
                connection refreshes it); miss -> nothing.
    24 SVC_AFF_SEL  REG_AFF = a provider of this VIP:port -> its ct(commit, nat);
                else -> the group, whose bucket sets REG_AFF and resubmits to 22.
    22 SVC_AFF_LEARN  per VIP:port: ``learn`` the pin into 23, resubmit(,24) (which
                now starts the connection to the chosen provider).
    28 SVC_DST  to a provider: its MAC and network, -> L3 (then L2, K8s, POLICY as
                ever: policy judges the real destination, after NAT); a provider
                to itself (hairpin): ct(commit, zone=HAIRPIN_ZONE, nat(src=VIP)) -> 28
                again, then FLAG_HAIRPIN so OUTPUT sends it back out of IN_PORT.

Decisions:

* **Where**: the group is on the client's switch; after DNAT the packet is
  ordinary traffic to the provider's IP (tunnel to the provider's host, where
  the policy stage judges it again).  Replies are reverse-NAT'ed on the
  client's switch (they pass table 26 there, whatever host they came from).
* **Selection**: os-ken cannot encode OVS's ``selection_method`` group property
  (an OpenFlow 1.5 / NX extension), so groups use OVS's default selection (for
  ≤ 64 buckets: ``dp_hash`` over the packet's 5-tuple, computed once per
  connection's first packet; stickiness comes from conntrack, not the hash).
* **Provider changes** edit the group (OFPGC_MODIFY): established connections
  to a provider that stays keep their conntrack entry and never look at the
  group again.  A **removed provider's** connections end: its endpoint (and its
  MAC/SVC_DST flow) is gone, so packets of those connections are dropped (no
  L2 entry) and the client sees its connection time out (TCP retransmits,
  then ETIMEDOUT); new connections never choose it.  No RST is synthesised.
* **Hairpin** (a provider reaching its own VIP and being chosen): the packet is
  SNAT'ed to the VIP in a dedicated zone (:data:`HAIRPIN_ZONE`), so the
  provider's kernel sees a peer that is not itself (Linux drops packets with its
  own source address arriving from outside) and its reply goes to the VIP, i.e.
  back through OVS, where table 25 undoes the SNAT and table 26 the DNAT.  The
  zone is shared by all tenants; NAT keeps the reply tuples unique in it, and
  two tenants only meet there if they hairpin with identical addresses and
  source ports at the same moment.  VRF ids must therefore stay below it.
* **Empty provider set**: the group exists without buckets; OVS drops new
  connections to the VIP (the client times out: nobody serves it).
* **Group ids** are pure: CRC-32 of "service key/port/proto" folded to 31 bits,
  collisions resolved by probing in sorted key order (:func:`group_ids`), so
  all switches and both compile paths agree.

Flows and groups per switch, for S services (one port each) × P providers, all
visible on the switch (N_net networks of their tenants present on it, V VRFs,
H of the providers local to the switch):
``flows = N_net (ARP->SVC) + S (VIP proxy ARP) + S (hairpin un-SNAT) + 1
+ V (VRF NAT) + S (VIP->group) + 2 (mark, miss) + U (provider MAC flows, U ≤ S·P
distinct provider IPs) + 1 + H·(1 + S_h) (hairpin) + H (hairpin output)``
≈ ``3·S + S·P`` for distinct providers, linear in S and in S·P;
``groups = S`` with ``S·P`` buckets in all. A port with ClientIP affinity adds ``2 + P`` flows (22:
learn; 24: the group miss and one per provider), plus one miss in 23 per switch, and
the switch learns one flow per client (in 23, not ours, not counted by the sync).  ``bench/service.py`` counts it.

Inputs are plain data (:class:`ServicePort`), so a Kubernetes Service with its
EndpointSlices can feed the same compiler later: it gives ``providers``
directly instead of a label selector.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from . import tables as T
from .flow import COOKIE_MARK, OFPP_IN_PORT, Action, Flow, make_match

#: the MAC proxy ARP answers for every VIP (clients never send to it: the DNAT
#: rewrites eth_dst to the provider's MAC before L2)
VIP_MAC = "00:00:11:11:11:12"
#: conntrack zone of hairpin SNAT (above every VRF id in use)
HAIRPIN_ZONE = 0xFFFF
#: ct_mark bit of a service connection; the low 31 bits are its group id
SVC_MARK = 0x80000000

P_VIP = 100
#: priority of the flows the switch learns in SVC_AFF (one per client and VIP:port)
P_LEARNED = 100
#: OpenFlow's idle_timeout is 16 bits: a longer ClientIP timeout (kube allows up to
#: 86400 s) is served as this many seconds of idleness
MAX_IDLE = 0xFFFF
P_HAIRPIN = 110
P_HAIRPIN_RETURN = 105
P_MARK = 50
P_TO_SVC = 1

PROTO = {"tcp": 6, "udp": 17, "sctp": 132}
_PORT_FIELD = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}

#: cookie kind 6 = service (compiler.py's kinds stop at 5)
_COOKIE_KIND = 6


def cookie_for(ident: str) -> int:
    return COOKIE_MARK | (_COOKIE_KIND << 32) | (zlib.crc32(f"svc:{ident}".encode()) & 0xFFFFFFFF)


def learned_cookie(ident: str) -> int:
    """The cookie of the affinity flows the switch learns for one service port:
    deliberately **without** COOKIE_MARK, so the flow sync (which reads, counts and
    deletes by our cookie mask) never sees them: they are the switch's own state, like
    conntrack entries, and expire by their idle timeout."""
    return (_COOKIE_KIND << 32) | (zlib.crc32(f"svc-aff:{ident}".encode()) & 0xFFFFFFFF)


@dataclass(frozen=True)
class Group:
    """An OpenFlow group as plain data (what the compiler wants and the switch reads
    back): ``buckets`` is a tuple of action tuples (the flow action vocabulary, plus
    ``ct_nat``); every bucket has weight 1."""

    group_id: int
    buckets: Tuple[Tuple[Action, ...], ...] = ()
    type: str = "select"
    note: str = field(default="", compare=False, hash=False)


@dataclass(frozen=True)
class Provider:
    """A backend: an endpoint's address and where it lives."""

    ip: str
    mac: str
    net_id: int
    host: str
    port: str = ""  # its OVS port name on its host (for hairpin)
    #: its own target port (a Kubernetes EndpointSlice's), 0 = the service port's
    target_port: int = 0


@dataclass(frozen=True)
class ServicePort:
    """One VIP:port/protocol of a service, with its providers resolved: the compiler's
    whole input for it (a Contiv serviceLB port or a Kubernetes Service port)."""

    key: str  # "tenant:service"
    tenant: str
    vrf: int
    net_ids: Tuple[int, ...]  # networks of the tenant whose clients may reach it (ARP->SVC)
    vip_net: int  # the network whose subnet holds the VIP (proxy ARP)
    vip: str
    proto: int
    port: int
    target_port: int
    providers: Tuple[Provider, ...] = ()
    #: ClientIP session affinity (Kubernetes ``sessionAffinity: ClientIP``): its
    #: timeout in seconds, 0 = none (see :func:`affinity_learn`)
    affinity: int = 0

    @property
    def ident(self) -> str:
        return f"{self.key}/{self.port}/{self.proto}"


def parse_port_spec(spec: str) -> Tuple[int, int, int]:
    """Contiv's ``"80:8080:TCP"`` (service port, provider port, protocol) -> numbers;
    raises ValueError saying what is wrong."""
    parts = spec.split(":")
    if len(parts) != 3:
        raise ValueError(f"port {spec!r}: expected servicePort:providerPort:protocol, e.g. 80:8080:TCP")
    proto = PROTO.get(parts[2].strip().lower())
    if proto is None:
        raise ValueError(f"port {spec!r}: protocol must be TCP, UDP or SCTP")
    try:
        port, target = int(parts[0]), int(parts[1])
    except ValueError:
        raise ValueError(f"port {spec!r}: ports must be numbers 1..65535") from None
    if not (0 < port < 65536 and 0 < target < 65536):
        raise ValueError(f"port {spec!r}: ports must be numbers 1..65535")
    return port, target, proto


def selects(selectors: Mapping[str, str], labels: Iterable[Tuple[str, str]]) -> bool:
    """The one provider rule (issue 12, fixing Contiv's exact-map match for endpoints
    older than the service): an endpoint provides when its labels include **all**
    selectors.  An empty selector selects nothing (a service with no selector is
    fed its providers explicitly, as a Kubernetes EndpointSlice would)."""
    if not selectors:
        return False
    have = dict(labels)
    return all(have.get(k) == v for k, v in selectors.items())


def group_ids(ports: Iterable[Any]) -> Dict[str, int]:
    """ident -> group id, pure and the same on every switch (see the module doc).
    ``ports``: :class:`ServicePort` s, or their idents (strings)."""
    out: Dict[str, int] = {}
    used: set = set()
    for ident in sorted({p if isinstance(p, str) else p.ident for p in ports}):
        gid = (zlib.crc32(ident.encode()) & 0x7FFFFFFF) or 1
        while gid in used:
            gid = gid % 0x7FFFFFFF + 1
        used.add(gid)
        out[ident] = gid
    return out


def _arp_responder(mac: str, ip: str) -> Tuple[Action, ...]:
    return (("move", "eth_src", "eth_dst", 48), ("set_field", "eth_src", mac),
            ("set_field", "arp_op", T.ARP_REPLY), ("move", "arp_sha", "arp_tha", 48),
            ("move", "arp_spa", "arp_tpa", 32), ("set_field", "arp_sha", mac),
            ("set_field", "arp_spa", ip), ("output", OFPP_IN_PORT))


def _flow(table: int, prio: int, match: Mapping, actions: Sequence[Action] = (), goto: Optional[int] = None,
          ident: str = "base", note: str = "") -> Flow:
    return Flow(table, prio, make_match(**match), tuple(actions), goto, cookie_for(ident), note)


def _sorted_providers(sp: ServicePort) -> List[Provider]:
    return sorted(set(sp.providers), key=lambda p: (ipaddress.IPv4Address(p.ip), p.mac, p.target_port))


def affinity_learn(sp: ServicePort) -> Action:
    """The ``learn`` of an affinity service port (its SVC_AFF_LEARN flow, run after a
    group bucket chose a provider and put its address in REG_AFF): a flow in SVC_AFF
    keyed by (VRF, client address, VIP, protocol, port) that loads that address into
    REG_AFF, idle for ``sp.affinity`` seconds (hard timeout 0).

    Every new connection of the client looks it up first (and so refreshes its idle
    timer, as kube-proxy's ``recent`` match does); a provider that left no longer has
    its SVC_AFF_SEL flow, so its pinned clients go to the group and learn anew.  Why
    not ``learn`` in the bucket itself: OVS (3.x) accepts it there but never learns."""
    specs = (("match", "eth_type", T.ETH_TYPE_IP), ("match", T.REG_VRF, T.REG_VRF),
             ("match", "ipv4_src", "ipv4_src"), ("match", "ipv4_dst", "ipv4_dst"),
             ("match", "ip_proto", sp.proto), ("match", _PORT_FIELD[sp.proto], _PORT_FIELD[sp.proto]),
             ("load", T.REG_AFF, T.REG_AFF))
    return ("learn", T.SVC_AFF, min(sp.affinity, MAX_IDLE), P_LEARNED, learned_cookie(sp.ident), specs)


def service_group(sp: ServicePort, gid: int) -> Group:
    """The select group of one service port: one bucket per provider (sorted) that
    DNATs to it; with ClientIP affinity the bucket instead puts the provider's address
    in REG_AFF and resubmits to SVC_AFF_LEARN (which learns the pin, then DNATs through
    the pinned provider's SVC_AFF_SEL flow)."""
    if sp.affinity:
        buckets = tuple((("set_field", T.REG_AFF, int(ipaddress.IPv4Address(p.ip))),
                         ("resubmit", T.SVC_AFF_LEARN)) for p in _sorted_providers(sp))
    else:
        buckets = tuple(
            (("ct_nat", True, sp.vrf, T.SVC_DST, ("dst", p.ip, p.target_port or sp.target_port),
              SVC_MARK | gid),)
            for p in _sorted_providers(sp))
    return Group(gid, buckets, note=f"service {sp.ident} -> {len(buckets)} providers")


def host_services(ports: Sequence[ServicePort], host: str, host_ports: Mapping[str, int],
                  gids: Optional[Mapping[str, int]] = None) -> Tuple[List[Flow], List[Group]]:
    """The service stage of one switch: its flows and groups (every flow checked).

    ``ports``: the service ports whose clients may be on this host (the caller
    filters by the tenant's networks present here); ``host_ports``: OVS port name ->
    ofport of this switch (hairpin needs the local providers' ports); ``gids``: the
    group ids of *every* service port of the cluster (:func:`group_ids`), when only
    some of them are compiled here (one service at a time, as the compilers do): ids
    must not depend on which services a call sees."""
    if not ports:
        return [], []
    if gids is None:
        gids = group_ids(ports)
    flows: Dict[Tuple, Flow] = {}

    def add(f: Flow) -> None:
        T.check_flow(f)
        flows.setdefault(f.identity, f)

    ip = {"eth_type": T.ETH_TYPE_IP}
    add(_flow(T.SVC, 0, ip, goto=T.SVC_VRF, note="svc: to the VRF's NAT"))
    add(_flow(T.SVC_CT, P_MARK, {"ct_state": (T.CT_TRK, T.CT_TRK), "ct_mark": (SVC_MARK, SVC_MARK)},
              goto=T.SVC_DST, note="svc: a service connection: to its provider"))
    add(_flow(T.SVC_CT, 0, {}, goto=T.L3, note="svc: not a service connection"))
    add(_flow(T.SVC_DST, 0, {}, goto=T.L3, note="svc: not to a provider"))
    if any(sp.affinity for sp in ports):
        add(_flow(T.SVC_AFF, 0, {}, note="svc: no learned ClientIP pin (REG_AFF stays 0)"))
    groups: List[Group] = []
    for sp in sorted(ports, key=lambda p: p.ident):
        gid = gids[sp.ident]
        groups.append(service_group(sp, gid))
        vrf = {T.REG_VRF: sp.vrf}
        for net_id in sp.net_ids:
            add(_flow(T.ARP, P_TO_SVC, {"eth_type": T.ETH_TYPE_IP, T.REG_NET: net_id}, goto=T.SVC,
                      note=f"svc: network {net_id} has services"))
        add(_flow(T.ARP, 200, {"eth_type": T.ETH_TYPE_ARP, "arp_op": T.ARP_REQUEST, T.REG_NET: sp.vip_net,
                               "arp_tpa": sp.vip, T.REG_FLAGS: (0, T.FLAG_REMOTE)},
                  _arp_responder(VIP_MAC, sp.vip), ident=sp.key, note=f"svc {sp.key}: VIP ARP"))
        add(_flow(T.SVC, P_VIP, dict(ip, ipv4_dst=sp.vip, **vrf),
                  [("ct_nat", False, HAIRPIN_ZONE, T.SVC_VRF, None, 0)], ident=sp.key,
                  note=f"svc {sp.key}: undo a hairpin SNAT"))
        add(_flow(T.SVC_VRF, P_VIP, dict(ip, **vrf), [("ct_nat", False, sp.vrf, T.SVC_CT, None, 0)],
                  ident=f"vrf{sp.vrf}", note=f"svc: VRF {sp.vrf} conntrack NAT"))
        to_vip = dict(ip, ipv4_dst=sp.vip, ip_proto=sp.proto, **{_PORT_FIELD[sp.proto]: sp.port}, **vrf)
        new = (T.CT_NEW | T.CT_TRK, T.CT_NEW | T.CT_TRK | T.CT_INV)
        if not sp.affinity:
            add(_flow(T.SVC_CT, P_VIP, dict(to_vip, ct_state=new), [("group", gid)], ident=sp.ident,
                      note=f"svc {sp.ident}: new connection -> group {gid}"))
        else:
            # ClientIP affinity: look the client's pin up (a learned flow loads REG_AFF),
            # then start the connection to it, or choose by the group (whose bucket learns)
            add(_flow(T.SVC_CT, P_VIP, dict(to_vip, ct_state=new), [("resubmit", T.SVC_AFF),
                                                                    ("resubmit", T.SVC_AFF_SEL)],
                      ident=sp.ident, note=f"svc {sp.ident}: new connection, ClientIP affinity"))
            add(_flow(T.SVC_AFF_SEL, P_VIP - 1, to_vip, [("group", gid)], ident=sp.ident,
                      note=f"svc {sp.ident}: client not pinned (or to a provider gone) -> group {gid}"))
            add(_flow(T.SVC_AFF_LEARN, P_VIP, to_vip, [affinity_learn(sp), ("resubmit", T.SVC_AFF_SEL)],
                      ident=sp.ident, note=f"svc {sp.ident}: pin the client to the bucket's choice"))
            seen: set = set()
            for p in _sorted_providers(sp):
                if p.ip in seen:  # one pin per address (kube: one port per pod and port name)
                    continue
                seen.add(p.ip)
                add(_flow(T.SVC_AFF_SEL, P_VIP, dict(to_vip, **{T.REG_AFF: int(ipaddress.IPv4Address(p.ip))}),
                          [("ct_nat", True, sp.vrf, T.SVC_DST, ("dst", p.ip, p.target_port or sp.target_port),
                            SVC_MARK | gid)], ident=sp.ident,
                          note=f"svc {sp.ident}: client pinned to {p.ip}"))
        for p in sp.providers:
            add(_flow(T.SVC_DST, P_VIP, dict(ip, ipv4_dst=p.ip, **vrf),
                      [("set_field", "eth_dst", p.mac), ("set_field", T.REG_NET, p.net_id)], T.L3,
                      ident=f"vrf{sp.vrf}:{p.ip}", note=f"svc: provider {p.ip}"))
            ofport = host_ports.get(p.port) if p.host == host else None
            if ofport is None:
                continue
            add(_flow(T.SVC_DST, P_HAIRPIN, dict(ip, ipv4_src=p.ip, ipv4_dst=p.ip, ct_mark=SVC_MARK | gid, **vrf),
                      [("ct_nat", True, HAIRPIN_ZONE, T.SVC_DST, ("src", sp.vip, 0), 0)], ident=sp.ident,
                      note=f"svc {sp.ident}: hairpin of {p.ip}: SNAT to the VIP"))
            add(_flow(T.SVC_DST, P_HAIRPIN_RETURN, dict(ip, in_port=ofport, ipv4_dst=p.ip, **vrf),
                      [("set_field", "eth_dst", p.mac), ("set_field", T.REG_NET, p.net_id),
                       ("set_field", T.REG_FLAGS, T.FLAG_HAIRPIN)], T.L3,
                      ident=f"vrf{sp.vrf}:{p.ip}", note=f"svc: hairpin to {p.ip}"))
            add(_flow(T.OUTPUT, 101, {T.REG_OUT: ofport, T.REG_FLAGS: (T.FLAG_HAIRPIN, T.FLAG_HAIRPIN)},
                      [("output", OFPP_IN_PORT)], ident=f"hp{ofport}", note=f"svc: hairpin back out of {p.port}"))
    return list(flows.values()), groups


def port_idents(key: str, ports: Iterable[Tuple[int, int, int]]) -> List[str]:
    """The idents of a service's ports ((port, target, proto) triples), as
    :attr:`ServicePort.ident` spells them: what :func:`group_ids` needs without
    building the ports."""
    return [f"{key}/{port}/{proto}" for port, _target, proto in ports]


def match_providers(selectors: Mapping[str, str], tenant: str,
                    endpoints: Iterable[Tuple[str, str, Mapping[str, str]]]) -> List[str]:
    """The ids of the endpoints (``(id, tenant, labels)``) of ``tenant`` that provide a
    service with ``selectors`` (:func:`selects`), sorted.  The one place providers are
    decided: the controller's snapshot and the netmaster's oper view both call it."""
    return sorted(eid for eid, t, labels in endpoints
                  if t == tenant and selects(selectors, labels.items()))


def is_ours(group: Group) -> bool:
    """Whether a group read back from a switch was written by us (so the sync may delete
    it when nobody wants it): a select group whose every bucket is one of our DNAT
    ``ct_nat`` actions marked with its own id, or (ClientIP affinity) a REG_AFF load
    and a resubmit to SVC_AFF_LEARN, or a select group without buckets (a service without
    providers).  Groups other tools put on br-int are left alone."""
    if group.type != "select":
        return False
    for bucket in group.buckets:
        if (len(bucket) == 2 and bucket[0][:2] == ("set_field", T.REG_AFF)
                and bucket[1] == ("resubmit", T.SVC_AFF_LEARN)):
            continue
        if (len(bucket) != 1 or bucket[0][0] != "ct_nat" or len(bucket[0]) != 6
                or bucket[0][5] != SVC_MARK | group.group_id):
            return False
    return True


def resolve_providers(services: Mapping[str, Tuple[str, Mapping[str, str]]],
                      endpoints: Iterable[Tuple[str, str, Mapping[str, str]]]) -> Dict[str, Tuple[str, ...]]:
    """Service key -> its providers' endpoint ids (sorted), for many services at once:
    :func:`match_providers`'s rule, through an index of (tenant, label, value) so the
    cost is the endpoints read once plus each service's candidates, not services ×
    endpoints.  ``services``: key -> (tenant, selectors)."""
    eps = list(endpoints)
    index: Dict[Tuple[str, str, str], List[int]] = {}
    for i, (_eid, tenant, labels) in enumerate(eps):
        for k, v in labels.items():
            index.setdefault((tenant, k, v), []).append(i)
    out: Dict[str, Tuple[str, ...]] = {}
    for key, (tenant, selectors) in services.items():
        if not selectors:
            out[key] = ()
            continue
        # the rarest selector's endpoints are the candidates; selects() decides
        cands = min((index.get((tenant, k, v), []) for k, v in selectors.items()), key=len)
        out[key] = tuple(sorted(eps[i][0] for i in cands if selects(selectors, eps[i][2].items())))
    return out
