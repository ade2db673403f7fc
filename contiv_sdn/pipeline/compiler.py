"""The flow compiler: a pure function from a state snapshot to the flows of each switch.

The controller diffs the result against what each switch holds and sends only
the difference, so the output must be *canonical*: the same snapshot gives equal
frozensets (whatever the dict order of the snapshot), cookies come from a stable
hash of the owner (endpoint id, network key, "base"), and a change to one
endpoint only touches the flows that really depend on it.

Decisions worth knowing (see ``tables.py`` for the table layout and registers):

* A network is *present* on a host when the host has at least one endpoint record
  in it (whether or not its OVS port exists yet).  Presence decides tunnel/uplink
  ingress, flood lists and ARP responders; an endpoint's own local flows appear
  only once its port has an ofport.  In routing mode every network of a tenant
  present on the host is *relevant* (routed traffic may leave towards any of
  them), and gets lookup flows.
* ARP ``proxy`` mode (and always in routing mode): requests for an endpoint of the
  same network are answered on the requester's switch; unanswered requests
  (unknown targets, gratuitous ARP) are dropped: the state knows every endpoint
  of the network, so nobody else could answer, and dropping keeps requests from
  ever leaving the host.  ``flood`` mode in bridge mode: requests take the flood
  path (local ports of the network + one copy per remote VTEP / the uplink).
* Broadcast and multicast frames other than ARP requests are replicated within
  the network in both forwarding modes; unknown unicast is dropped.
* ACI mode (``GlobalCfg.aci``), as Contiv: the fabric enforces group policy, so no
  group rule flows are compiled (the conntrack stage stays and allows); a group
  with its own VLAN (``Group.vlan``, one per group from the VLAN pool) sends on the
  uplink with that VLAN (OUTPUT matches the source group), and every group VLAN of
  a network is accepted from the uplink as that network.  Two groups on one host
  are switched locally (see docs/design.md, "ACI mode").
* Only IPv4 and ARP leave a container port; anything else is dropped by SOURCE.
* Invalid records (unknown network/tenant, bad IP or MAC) and flows whose
  identity collides (two endpoints with one MAC in a network …) do not stop
  compilation: the first in sorted order wins, and :func:`diagnose` lists them.
* The blast radius of a bad owner is that owner: if resolving or compiling one
  endpoint, network or host raises anyway (a value of a type nobody expected,
  a flow that breaks its table's declaration), that owner's flows are left out,
  the failure is returned as a :class:`Failure` (kind, key, reason) for the
  caller to log, and every other owner is still compiled.  A host whose own base
  flows cannot be compiled gets *no* result (not an empty one), so the
  controller leaves its switch as it is instead of wiping it.
"""

from __future__ import annotations

import ipaddress
import zlib
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Dict, FrozenSet, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from . import hostaccess as HA
from . import k8s as K8
from . import policy as PL
from . import servicelb as SL
from . import tables as T
from .flow import COOKIE_MARK, OFPP_IN_PORT, Action, Flow, make_match, share, shared_actions
from .state import DNS_MAC, ROUTER_MAC, Host, Network, Service, Snapshot, dns_port_name

# Priorities.
P_HIGH = 210
P_RESPOND = 200
P_EXACT = 100
P_REMOTE_ROUTED = 110
P_FLOOD = 50
P_DROP = 30
P_DEFAULT = 10
P_MISS = 0

_KIND_CODE = {"base": 1, "net": 2, "ep": 3, "group": 4, "k8s": 5}  # 6: services (servicelb.py)
_MULTICAST = ("01:00:00:00:00:00", "01:00:00:00:00:00")
_LOCAL = (0, T.FLAG_REMOTE)
_REMOTE = (T.FLAG_REMOTE, T.FLAG_REMOTE)


class Failure(NamedTuple):
    """An owner left out because compiling it raised: ``kind`` is "endpoint",
    "network" or "host", ``key`` its id, ``reason`` the exception in one line."""

    kind: str
    key: str
    reason: str


class CompileError(Exception):
    """A host's own flows could not be compiled (its switch must be left alone)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"host {host}: {reason}")
        self.host, self.reason = host, reason


@dataclass(frozen=True)
class Compiled:
    """What :func:`compile_hosts` produced: flows of every host that compiled, and
    what was left out.  A host missing from ``flows`` has a ``("host", name, ...)``
    failure: its switch must keep what it has."""

    flows: Mapping[str, FrozenSet[Flow]]
    failed: Tuple[Failure, ...]
    #: host -> the OpenFlow groups its switch must hold (service load balancing)
    groups: Mapping[str, FrozenSet[SL.Group]] = field(default_factory=lambda: MappingProxyType({}))


def _why(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}"
    return text if len(text) <= 200 else text[:197] + "..."


def cookie_for(kind: str, ident: str = "") -> int:
    """The cookie of every flow owned by ``kind`` ("base", "net", "ep", "group") ``ident``.

    Stable across processes (CRC-32, not Python's salted ``hash``), marked with
    COOKIE_MARK, and with the kind in bits 32..47 so a whole kind can be selected.
    """
    return COOKIE_MARK | (_KIND_CODE[kind] << 32) | (zlib.crc32(f"{kind}:{ident}".encode()) & 0xFFFFFFFF)


# --------------------------------------------------------------------------
# Resolved state (validated once per snapshot, shared by all hosts).
# --------------------------------------------------------------------------
def _hash_once(obj: Any, values: Callable[[], Tuple]) -> int:
    """The hash of a frozen record's compared fields, made once and kept in its
    ``_hash`` slot.

    Why: an endpoint is part of its fragment's cache key on every switch (``ep_args``),
    and the dataclass hash walks every field, its network's too, at each lookup: 7 %
    of a cold compile at 200 switches.  Equal records still hash equal."""
    try:
        return obj._hash
    except AttributeError:
        h = hash(values())
        object.__setattr__(obj, "_hash", h)
        return h


class _Resolved:
    """A resolved record: slotted (10k endpoints' instance dictionaries, made by the
    kept hash, were 1.5 MB of a 500x10k netmaster) and picklable without its hash,
    which is this process's (str hashes are salted per process)."""

    __slots__ = ()

    def __getstate__(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if f.name != "_hash")

    def __setstate__(self, state: tuple) -> None:
        for f, value in zip((f for f in fields(self) if f.name != "_hash"), state):
            object.__setattr__(self, f.name, value)


@dataclass(frozen=True, slots=True)
class _Net(_Resolved):
    key: str
    tenant: str
    encap: str
    tag: int
    net_id: int
    vrf: int
    gateway: Optional[str]
    cookie: int
    _hash: int = field(init=False, repr=False, compare=False, hash=False)

    def __hash__(self) -> int:
        return _hash_once(self, lambda: (self.key, self.tenant, self.encap, self.tag, self.net_id,
                                         self.vrf, self.gateway, self.cookie))


@dataclass(frozen=True, slots=True)
class _Ep(_Resolved):
    id: str
    host: str
    net: _Net
    ip: str
    mac: str
    port: str
    epg: int
    cookie: int
    #: its Kubernetes pod identity (``k8s.py``), 0 = not a pod
    ident: int = 0
    _hash: int = field(init=False, repr=False, compare=False, hash=False)

    def __hash__(self) -> int:
        return _hash_once(self, lambda: (self.id, self.host, self.net, self.ip, self.mac, self.port,
                                         self.epg, self.cookie, self.ident))


def _ipv4(text: str) -> str:
    """The canonical address; the caller's string itself when already canonical (one
    string per endpoint in its record, snapshot and flows, not one in each)."""
    addr = text.split("/", 1)[0].strip()
    canon = str(ipaddress.IPv4Address(addr))
    return addr if canon == addr else canon


def _macstr(text: str) -> str:
    mac = text.strip().lower().replace("-", ":")
    if len(mac) != 17 or int(mac.replace(":", ""), 16) >> 48:
        raise ValueError(f"bad MAC {text!r}")
    return text if mac == text else mac  # (as _ipv4)


def resolve_net(key: str, n: Network, tenants: Mapping[str, Any]) -> Tuple[Optional[_Net], str]:
    """A network record validated, or ``(None, issue)``; raises for values nobody expected
    (the caller leaves this network out and reports it)."""
    tenant = tenants.get(n.tenant)
    if tenant is None:
        return None, f"network {key}: unknown tenant {n.tenant!r}"
    if n.encap not in ("vxlan", "vlan"):
        return None, f"network {key}: unknown encap {n.encap!r}"
    gw, issue = None, ""
    if n.gateway:
        try:
            gw = _ipv4(n.gateway)
        except ValueError:
            issue = f"network {key}: bad gateway {n.gateway!r}"
    net = _Net(key, n.tenant, n.encap, n.pkt_tag, n.net_id, tenant.vrf_id, gw, cookie_for("net", key))
    hash(net)  # used as set members and dict keys later: fail here, for this network only
    return net, issue


def resolve_ep(eid: str, e: Any, nets: Mapping[str, _Net],
               idents: Optional[Mapping[Any, int]] = None) -> Tuple[Optional[_Ep], str]:
    """An endpoint record validated against its network, or ``(None, issue)``; raises for
    values nobody expected.  ``idents``: pod key -> identity (``k8s.Model.idents``)."""
    net = nets.get(e.network)
    if net is None:
        return None, f"endpoint {eid}: unknown or invalid network {e.network!r}"
    try:
        ip, mac = _ipv4(e.ip), _macstr(e.mac)
    except ValueError as err:
        return None, f"endpoint {eid}: {err}"
    if not 0 <= e.epg_id <= 0xFFFF:
        return None, f"endpoint {eid}: epg_id {e.epg_id} out of range"
    ident = 0
    if idents:
        pk = K8.pod_key_of(e)
        ident = idents.get(pk, 0) if pk is not None else 0
    ep = _Ep(eid, e.host, net, ip, mac, e.port, e.epg_id, cookie_for("ep", eid), ident)
    # an unhashable host or port name fails here, before the endpoint is indexed
    # (later it would break its network's flood list on every host)
    hash(ep)
    return ep, ""


def group_vlan(g: Any) -> Optional[Tuple[str, int, int]]:
    """``(network key, group id, VLAN)`` of a group with its own uplink VLAN (ACI mode),
    or None (no own VLAN, or a record with unusable values: the group then simply
    has none).  Never raises: the full compile and the incremental engine must agree
    on every record, hostile ones included."""
    try:
        net, epg, vlan = g.network, g.epg_id, g.vlan
        if (type(net) is str and type(epg) is int and type(vlan) is int
                and 1 <= epg <= 0xFFFF and 1 <= vlan <= 4094):
            return net, epg, vlan
    except Exception:
        pass
    return None


def net_vlans_of(vlans: Iterable[Tuple[int, int]]) -> Tuple[Tuple[int, int], ...]:
    """A network's ``(group id, VLAN)`` pairs in the one order both engines use."""
    return tuple(sorted(set(vlans)))


def resolve_vtep(host: Host) -> Tuple[Optional[str], str]:
    """A host's VTEP address, or ``(None, issue)``; raises for values nobody expected."""
    try:
        return _ipv4(host.vtep_ip), ""
    except ValueError:
        return None, f"host {host.name}: bad vtep_ip {host.vtep_ip!r}"


class _Index:
    """The snapshot, validated and indexed for per-host compilation."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap
        self.issues: List[str] = []
        #: owners left out because resolving them raised
        self.failed: List[Failure] = []
        self.checked: set = set()
        self.routing = snap.global_cfg.fwd_mode == "routing"
        self.proxy_arp = self.routing or snap.global_cfg.arp_mode != "flood"
        self.nets: Dict[str, _Net] = {}
        for key in sorted(snap.networks):
            try:
                self._add_net(key, snap.networks[key])
            except Exception as err:  # this network, not the whole snapshot
                self.failed.append(Failure("network", key, _why(err)))
        #: Kubernetes NetworkPolicy (``k8s.py``): identities and their rules
        self.k8s: K8.Model = K8.EMPTY_MODEL
        try:
            self.k8s = K8.model_of(snap)
        except Exception as err:  # the K8s stage only
            self.failed.append(Failure("k8s", "model", _why(err)))
        self.issues += self.k8s.issues
        #: host -> the pod identities of its endpoints
        self.host_idents: Dict[str, set] = {}
        self.eps: List[_Ep] = []
        self.eps_by_net: Dict[str, List[_Ep]] = {}
        self.hosts_by_net: Dict[str, set] = {}
        #: host -> the group ids of its endpoints (where group policy flows are needed)
        self.host_epgs: Dict[str, set] = {}
        for eid in sorted(snap.endpoints):
            try:
                self._add_ep(eid)
            except Exception as err:
                self.failed.append(Failure("endpoint", eid, _why(err)))
        #: network key -> (group id, VLAN) of its groups with their own VLAN (ACI mode)
        by_net: Dict[str, List[Tuple[int, int]]] = {}
        for gkey in snap.groups:
            gv = group_vlan(snap.groups[gkey])
            if gv is not None:
                by_net.setdefault(gv[0], []).append(gv[1:])
        self.net_vlans: Dict[str, Tuple[Tuple[int, int], ...]] = {
            n: net_vlans_of(v) for n, v in by_net.items()}
        #: group key -> its resolved policy (groups with an unusable record are missing);
        #: none in ACI mode, where the fabric enforces policy
        self.group_args: Dict[str, PL.GroupArgs] = {}
        rules_by_policy: Dict[Any, set] = {}
        for rkey in (() if snap.global_cfg.aci else sorted(snap.rules)):
            try:
                rules_by_policy.setdefault(snap.rules[rkey].policy, set()).add(rkey)
            except TypeError:  # an unhashable policy name: no group can name it
                pass
        for gkey in (() if snap.global_cfg.aci else sorted(snap.groups)):
            try:
                g = snap.groups[gkey]
                args, issues = PL.group_args(gkey, g, PL.rules_of(g, rules_by_policy, snap.rules),
                                             snap.groups, snap.networks)
            except Exception as err:
                self.failed.append(Failure("group", gkey, _why(err)))
                continue
            self.issues += issues
            if args is not None:
                self.group_args[gkey] = args
        #: services (``servicelb.py``): key -> its ports, resolved; every port's group id
        self.svc_ports: Dict[str, Tuple[SL.ServicePort, ...]] = {}
        self.svc_gids: Tuple[Tuple[str, int], ...] = ()
        if snap.services:
            self.svc_gids = service_gids(snap.services.values())
            eps = {e.id: e for e in self.eps}
            tenant_nets: Dict[str, List[int]] = {}
            for n in self.nets.values():
                tenant_nets.setdefault(n.tenant, []).append(n.net_id)
            for skey in sorted(snap.services):
                try:
                    svc = snap.services[skey]
                    self.svc_ports[skey] = service_ports(
                        svc, self.nets.get(svc.network), tuple(sorted(tenant_nets.get(svc.tenant, ()))),
                        [eps[e] for e in svc.providers if e in eps])
                except Exception as err:
                    self.failed.append(Failure("service", skey, _why(err)))
        #: host name -> VTEP address, for hosts whose VTEP is valid.
        self.vteps: Dict[str, str] = {}
        for name in sorted(snap.hosts):
            try:
                vtep, issue = resolve_vtep(snap.hosts[name])
            except Exception as err:
                self.failed.append(Failure("host", name, _why(err)))
                continue
            if issue:
                self.issues.append(issue)
            if vtep is not None:
                self.vteps[name] = vtep
        #: host access (``hostaccess.py``): only while some switch has the port
        self.ha_view: Optional[Tuple] = None
        self.ha_peers: Tuple = ()
        self.ha_svc = False
        if HA.any_port(snap.hosts):
            try:
                self.ha_view = HA.tenant_view(snap.tenants, self.nets.values(), self.eps)
            except Exception as err:
                self.failed.append(Failure("host-access", "view", _why(err)))
            self.ha_peers = HA.peers(snap.hosts, self.vteps)
            self.ha_svc = any(sps and sps[0].tenant == HA.TENANT for sps in self.svc_ports.values())

    def _add_net(self, key: str, n: Network) -> None:
        net, issue = resolve_net(key, n, self.snap.tenants)
        if issue:
            self.issues.append(issue)
        if net is not None:
            self.nets[key] = net

    def _add_ep(self, eid: str) -> None:
        ep, issue = resolve_ep(eid, self.snap.endpoints[eid], self.nets, self.k8s.idents)
        if issue:
            self.issues.append(issue)
        if ep is None:
            return
        self.eps.append(ep)
        self.eps_by_net.setdefault(ep.net.key, []).append(ep)
        self.hosts_by_net.setdefault(ep.net.key, set()).add(ep.host)
        if ep.epg:
            self.host_epgs.setdefault(ep.host, set()).add(ep.epg)
        if ep.ident:
            self.host_idents.setdefault(ep.host, set()).add(ep.ident)

    def remote_vteps(self, net: _Net, host: Host) -> List[str]:
        """VTEPs of the other known hosts with endpoints in ``net`` (sorted, unique)."""
        own = self.vteps.get(host.name)
        vteps = set()
        for name in self.hosts_by_net.get(net.key, ()):
            ip = self.vteps.get(name)
            if name != host.name and ip is not None and ip != own:
                vteps.add(ip)
        return sorted(vteps, key=lambda ip: ipaddress.IPv4Address(ip))


# --------------------------------------------------------------------------
# Owner fragments: pure functions of explicit inputs.
#
# Every flow belongs to one owner (a host's base, a network on a host, an
# endpoint on a host), and each owner's flows are a function of exactly the
# arguments below: nothing else is read.  The full compile and the incremental
# engine (``incremental.py``) both compute these arguments and call the same
# functions, so equal arguments mean equal flows: that is what lets the engine
# skip owners whose arguments did not change, and share one built-and-checked
# fragment between every switch whose arguments are equal (a remote endpoint's
# flows are the same on every other host of its network).
# --------------------------------------------------------------------------
class _Out:
    __slots__ = ("flows",)

    def __init__(self) -> None:
        self.flows: List[Flow] = []

    def add(self, table: int, priority: int, match: Mapping, actions: Iterable[Action] = (),
            goto: Optional[int] = None, *, cookie: int, note: str = "") -> None:
        self.flows.append(Flow(table, priority, make_match(**match), shared_actions(actions), goto,
                               cookie, note))


def _responder(mac: str, ip: str) -> Tuple[Action, ...]:
    """Turn an ARP request into the reply for ``ip`` at ``mac``, back out of the port it came in."""
    return (
        ("move", "eth_src", "eth_dst", 48),
        ("set_field", "eth_src", mac),
        ("set_field", "arp_op", T.ARP_REPLY),
        ("move", "arp_sha", "arp_tha", 48),
        ("move", "arp_spa", "arp_tpa", 32),
        ("set_field", "arp_sha", mac),
        ("set_field", "arp_spa", ip),
        ("output", OFPP_IN_PORT),
    )


def _arp_request(**match) -> dict:
    return dict(eth_type=T.ETH_TYPE_ARP, arp_op=T.ARP_REQUEST, **match)


BASE_COOKIE = cookie_for("base")


def host_context(host: Host) -> Tuple[Mapping[str, int], Optional[int], Optional[int]]:
    """(ports, tunnel ofport, uplink ofport) of a host; raising here fails the host itself."""
    ports = host.ports
    tun = ports.get(host.tunnel_port) if host.tunnel_port else None
    upl = ports.get(host.uplink_port) if host.uplink_port else None
    return ports, tun, upl


def base_flows(proxy_arp: bool, tun: Optional[int], upl: Optional[int]) -> List[Flow]:
    """The defaults that let each table go on, and the policy stage's (owner: the host)."""
    b = _Out()
    add, base = b.add, BASE_COOKIE
    add(T.SOURCE, P_DEFAULT, {T.REG_FLAGS: _REMOTE}, goto=T.ARP, cookie=base, note="remote: no anti-spoofing")
    if proxy_arp:
        add(T.ARP, P_DROP, _arp_request(), cookie=base, note="unanswered ARP request: drop")
    add(T.ARP, P_MISS, {}, goto=T.L3, cookie=base)
    add(T.L3, P_MISS, {}, goto=T.L2, cookie=base)
    b.flows += PL.base_policy_flows(tun, upl, base)
    if tun is not None:
        add(T.OUTPUT, P_EXACT, {T.REG_OUT: tun, T.REG_FLAGS: _LOCAL}, [("output", tun)], cookie=base,
            note="to tunnel (never from a tunnel)")
    return b.flows


def net_args(net: _Net, present: bool, routing: bool, tun: Optional[int], upl: Optional[int],
             ports: Mapping[str, int], local_eps: Iterable[_Ep], remote_vteps: Any,
             has_remote: Any, group_vlans: Tuple[Tuple[int, int], ...] = ()) -> Tuple:
    """The arguments of :func:`net_flows` for one host, normalised so that inputs the
    flows do not read are left out.  ``remote_vteps``/``has_remote`` are callables
    (only evaluated when the encapsulation needs them); ``group_vlans`` the network's
    ``(group id, VLAN)`` pairs of groups with their own VLAN (:func:`net_vlans_of`)."""
    tun = tun if net.encap == "vxlan" else None
    upl = upl if net.encap == "vlan" else None
    gw_arp = net.encap == "vxlan" and dns_port_name(net.vrf) in ports
    group_vlans = tuple(group_vlans) if upl is not None else ()
    if not present:
        return (net, False, routing, tun, upl, (), None, False, group_vlans)
    local_out = tuple(sorted(ports[e.port] for e in local_eps if e.port in ports))
    if tun is not None:
        remote: Any = tuple(remote_vteps())
    elif upl is not None:
        remote = bool(has_remote())
    else:
        remote = None
    return (net, True, routing, tun, upl, local_out, remote, gw_arp, group_vlans)


def _tunnel_to(ip: str) -> Action:
    """``("set_field", "tun_ipv4_dst", ip)``, the same tuple for every flood list naming
    ``ip`` (:func:`share`): each host's flood list of a network names every other
    host's VTEP, so made afresh they were hosts² tuples (with their ``("output", tun)``,
    2 per remote host per list: 400k of the 628k tuples of a 100x2k engine's flows); a
    remote endpoint's own flow names its host's VTEP the same way."""
    return share(("set_field", "tun_ipv4_dst", ip))


def _tag(vlan: int) -> List[Action]:
    return [("push_vlan", T.ETH_TYPE_VLAN), ("set_field", "vlan_vid", T.OFPVID_PRESENT | vlan)]


def net_flows(net: _Net, present: bool, routing: bool, tun: Optional[int], upl: Optional[int],
              local_out: Tuple[int, ...], remote: Any, gw_arp: bool = False,
              group_vlans: Tuple[Tuple[int, int], ...] = ()) -> List[Flow]:
    """A network's flows on one host (owner: the network).

    ``group_vlans`` (ACI mode): a group with its own VLAN leaves on the uplink with
    it, so the fabric sees which group sent (and applies its contracts); the
    network owns these flows (not the group) because they sit beside, and above,
    the network's own uplink and flood flows and change with them."""
    b = _Out()
    add, c = b.add, net.cookie
    b.flows += PL.net_policy_flows(net.net_id, net.vrf, net.key, c)
    if upl is not None:
        add(T.OUTPUT, P_EXACT, {T.REG_OUT: upl, T.REG_NET: net.net_id, T.REG_FLAGS: _LOCAL},
            _tag(net.tag) + [("output", upl)], cookie=c, note=f"{net.key}: to uplink")
        for epg, vlan in group_vlans:
            add(T.OUTPUT, P_EXACT + 1, {T.REG_OUT: upl, T.REG_NET: net.net_id, T.REG_SRC_EPG: epg,
                                        T.REG_FLAGS: _LOCAL},
                _tag(vlan) + [("output", upl)], cookie=c,
                note=f"{net.key}: group {epg} to uplink on its VLAN {vlan}")
    if not present:
        return b.flows
    ingress = [("set_field", T.REG_VRF, net.vrf), ("set_field", T.REG_NET, net.net_id),
               ("set_field", T.REG_FLAGS, T.FLAG_REMOTE)]
    if tun is not None:
        add(T.CLASSIFY, P_EXACT, {"in_port": tun, "tunnel_id": net.tag}, ingress, T.SOURCE, cookie=c,
            note=f"{net.key}: from tunnel")
    elif upl is not None:
        add(T.CLASSIFY, P_EXACT, {"in_port": upl, "vlan_vid": T.OFPVID_PRESENT | net.tag},
            [("pop_vlan",)] + ingress, T.SOURCE, cookie=c, note=f"{net.key}: from uplink")
        # a group's VLAN means this network whichever group it names (a fabric may
        # deliver with the sender's or the receiver's group VLAN)
        for epg, vlan in group_vlans:
            add(T.CLASSIFY, P_EXACT, {"in_port": upl, "vlan_vid": T.OFPVID_PRESENT | vlan},
                [("pop_vlan",)] + ingress, T.SOURCE, cookie=c,
                note=f"{net.key}: group {epg}'s VLAN {vlan} from uplink")
    add(T.L2, P_FLOOD, {T.REG_NET: net.net_id, "eth_dst": _MULTICAST},
        [("set_field", T.REG_OUT, T.OUT_FLOOD)], T.POLICY, cookie=c, note=f"{net.key}: broadcast")
    local_acts = [("output", p) for p in local_out]
    remote_acts: List[Action] = []
    if tun is not None:
        if remote:
            remote_acts.append(("set_field", "tunnel_id", net.tag))
        for ip in remote:  # (the output action is shared by _Out.add)
            remote_acts += (_tunnel_to(ip), ("output", tun))
    elif upl is not None and remote:
        remote_acts += [("push_vlan", T.ETH_TYPE_VLAN),
                        ("set_field", "vlan_vid", T.OFPVID_PRESENT | net.tag), ("output", upl)]
    add(T.OUTPUT, P_EXACT, {T.REG_OUT: T.OUT_FLOOD, T.REG_NET: net.net_id, T.REG_FLAGS: _LOCAL},
        local_acts + remote_acts, cookie=c, note=f"{net.key}: flood from a local port")
    if upl is not None and remote:
        for epg, vlan in group_vlans:
            add(T.OUTPUT, P_EXACT + 1, {T.REG_OUT: T.OUT_FLOOD, T.REG_NET: net.net_id,
                                        T.REG_SRC_EPG: epg, T.REG_FLAGS: _LOCAL},
                local_acts + _tag(vlan) + [("output", upl)], cookie=c,
                note=f"{net.key}: flood from group {epg}, on its VLAN {vlan} to the uplink")
    add(T.OUTPUT, P_EXACT, {T.REG_OUT: T.OUT_FLOOD, T.REG_NET: net.net_id, T.REG_FLAGS: _REMOTE},
        local_acts, cookie=c, note=f"{net.key}: flood from remote, local ports only")
    # the gateway answers ARP when routing; with the DNS serving path also on a
    # bridged VXLAN network (nothing else could), so that a container's DNS query to
    # an off-link resolver leaves it and is caught in SOURCE (anything else sent
    # to ROUTER_MAC finds no L2 entry and is dropped, as before)
    if (routing or gw_arp) and net.gateway:
        add(T.ARP, P_RESPOND, _arp_request(**{T.REG_NET: net.net_id, "arp_tpa": net.gateway,
                                              T.REG_FLAGS: _LOCAL}),
            _responder(ROUTER_MAC, net.gateway), cookie=c, note=f"{net.key}: gateway ARP")
    return b.flows


def ep_args(ep: _Ep, host_name: str, ports: Mapping[str, int], tun: Optional[int], upl: Optional[int],
            vteps: Mapping[str, str], is_present: bool, proxy_arp: bool, routing: bool,
            k8s: bool = False) -> Tuple:
    """The arguments of :func:`ep_flows` on one host, normalised: a remote endpoint's
    arguments do not name the host it is compiled for, so every host with the same
    tunnel/uplink port numbers shares one fragment.  ``k8s``: a NetworkPolicy exists
    (L2 goes to the K8s stage)."""
    if ep.host == host_name:
        return (ep, True, ports.get(ep.port), None, None, None, is_present, proxy_arp, routing,
                ports.get(dns_port_name(ep.net.vrf)), k8s)
    enc = ep.net.encap
    return (ep, False, None, vteps.get(ep.host), tun if enc == "vxlan" else None,
            upl if enc == "vlan" else None, is_present, proxy_arp, routing, None, k8s)


def ep_flows(ep: _Ep, local: bool, ofport: Optional[int], other_vtep: Optional[str], tun: Optional[int],
             upl: Optional[int], is_present: bool, proxy_arp: bool, routing: bool,
             dns: Optional[int] = None, k8s: bool = False) -> List[Flow]:
    """An endpoint's flows on one host (owner: the endpoint).

    The notes do not name the endpoint: the cookie does (``cookie_for("ep", id)``), and a
    compile failure or conflict names its owner; one string per note for all endpoints,
    where the notes with each id were 10 MB of a 500x10k netmaster (124 bytes each)."""
    b = _Out()
    add, c, net = b.add, ep.cookie, ep.net
    if (ofport if local else other_vtep) is None:
        return b.flows  # its port is not there yet / its host has no VTEP
    dst_epg = [("set_field", T.REG_DST_EPG, ep.epg)] if ep.epg else []
    if ep.ident:
        dst_epg.append(("set_field", T.REG_DST_ID, ep.ident))
    src_sets = [("set_field", T.REG_SRC_EPG, ep.epg)] if ep.epg else []
    if ep.ident:
        src_sets.append(("set_field", T.REG_SRC_ID, ep.ident))
    after_l2 = T.K8S if k8s else T.POLICY
    if local:
        cls = [("set_field", T.REG_VRF, net.vrf), ("set_field", T.REG_NET, net.net_id)] + src_sets
        add(T.CLASSIFY, P_EXACT, {"in_port": ofport, "vlan_vid": T.OFPVID_NONE}, cls, T.SOURCE,
            cookie=c, note="ep: local port")
        add(T.SOURCE, P_EXACT, {"in_port": ofport, "eth_src": ep.mac, "eth_type": T.ETH_TYPE_IP,
                                "ipv4_src": ep.ip}, goto=T.ARP, cookie=c, note="ep: IPv4 source")
        add(T.SOURCE, P_EXACT, {"in_port": ofport, "eth_src": ep.mac, "eth_type": T.ETH_TYPE_ARP,
                                "arp_spa": ep.ip, "arp_sha": ep.mac}, goto=T.ARP, cookie=c,
            note="ep: ARP source")
        if dns is not None:
            # DNS to any resolver -> the VRF's port into the host's DNS namespace
            # (which NATs it to the tenant's listener and back)
            to_dns = [("set_field", "eth_dst", DNS_MAC), ("output", dns)]
            for proto, field in ((17, "udp_dst"), (6, "tcp_dst")):
                add(T.SOURCE, P_HIGH, {"in_port": ofport, "eth_src": ep.mac, "eth_type": T.ETH_TYPE_IP,
                                       "ipv4_src": ep.ip, "ip_proto": proto, field: 53}, to_dns,
                    cookie=c, note="ep: DNS to this host's resolver")
            add(T.CLASSIFY, P_EXACT, {"in_port": dns, "eth_type": T.ETH_TYPE_IP, "ipv4_dst": ep.ip},
                [("set_field", "eth_dst", ep.mac), ("output", ofport)], cookie=c,
                note="ep: DNS answer")
        if proxy_arp:
            add(T.ARP, P_HIGH, _arp_request(in_port=ofport, arp_tpa=ep.ip), cookie=c,
                note="ep: its own address (gratuitous ARP): drop")
        add(T.L2, P_EXACT, {T.REG_NET: net.net_id, "eth_dst": ep.mac},
            dst_epg + [("set_field", T.REG_OUT, ofport)], after_l2, cookie=c, note="ep: local")
        add(T.OUTPUT, P_EXACT, {T.REG_OUT: ofport}, [("output", ofport)], cookie=c,
            note="ep: deliver")
    else:
        if tun is not None:
            add(T.L2, P_EXACT, {T.REG_NET: net.net_id, "eth_dst": ep.mac},
                dst_epg + [("set_field", "tunnel_id", net.tag),
                           _tunnel_to(other_vtep),
                           ("set_field", T.REG_OUT, tun)], after_l2, cookie=c,
                note="ep: on its host, via VXLAN")
        elif upl is not None:
            add(T.L2, P_EXACT, {T.REG_NET: net.net_id, "eth_dst": ep.mac},
                dst_epg + [("set_field", T.REG_OUT, upl)], after_l2, cookie=c,
                note="ep: on its host, via the uplink")
        if src_sets:
            add(T.SOURCE, P_EXACT, {T.REG_FLAGS: _REMOTE, T.REG_NET: net.net_id, "eth_src": ep.mac},
                src_sets, T.ARP, cookie=c,
                note="ep: remote source group")
            if routing:
                add(T.SOURCE, P_REMOTE_ROUTED,
                    {T.REG_FLAGS: _REMOTE, T.REG_VRF: net.vrf, "eth_src": ROUTER_MAC,
                     "eth_type": T.ETH_TYPE_IP, "ipv4_src": ep.ip},
                    src_sets, T.ARP, cookie=c,
                    note="ep: remote routed source group")
    if is_present and proxy_arp:
        add(T.ARP, P_RESPOND, _arp_request(**{T.REG_NET: net.net_id, "arp_tpa": ep.ip,
                                              T.REG_FLAGS: _LOCAL}),
            _responder(ep.mac, ep.ip), cookie=c, note="ep: proxy ARP")
    if routing:
        add(T.L3, P_EXACT, {T.REG_FLAGS: _LOCAL, T.REG_VRF: net.vrf, "eth_dst": ROUTER_MAC,
                            "eth_type": T.ETH_TYPE_IP, "ipv4_dst": ep.ip},
            [("set_field", "eth_src", ROUTER_MAC), ("set_field", "eth_dst", ep.mac), ("dec_ttl",),
             ("set_field", T.REG_NET, net.net_id)], T.L2, cookie=c, note="ep: route")
    return b.flows


def group_flows(args: PL.GroupArgs) -> List[Flow]:
    """A group's policy flows on a host where it has an endpoint (owner: the group)."""
    return PL.group_flows(args, cookie_for("group", args.key))


K8S_BASE_COOKIE = cookie_for("k8s", "base")


def k8s_base_flows(vrfs: Tuple[int, ...], tun: Optional[int], upl: Optional[int]) -> List[Flow]:
    """The host's K8s stage while a NetworkPolicy exists (owner ``(4,)``)."""
    return K8.base_flows(vrfs, tun, upl, K8S_BASE_COOKIE)


def k8s_ident_flows(args: K8.IdentArgs) -> List[Flow]:
    """A pod identity's NetworkPolicy flows on a host where it has a pod (owner ``(5, ident)``)."""
    return K8.ident_flows(args, cookie_for("k8s", str(args.ident)))


def service_gids(services: Iterable[Service]) -> Tuple[Tuple[str, int], ...]:
    """Every service port's group id (``servicelb.group_ids``), as sorted pairs: a
    service's flows name its own ids only, but collisions are settled across all."""
    idents: List[str] = []
    for svc in services:
        try:
            idents += SL.port_idents(svc.key, svc.ports)
        except Exception:  # a broken record: its service fails on its own
            continue
    return tuple(sorted(SL.group_ids(idents).items()))


def service_ports(svc: Service, vip_net: Optional[_Net], tenant_net_ids: Tuple[int, ...],
                  providers: Iterable[_Ep]) -> Tuple[SL.ServicePort, ...]:
    """A service's ports as the service stage's input (empty while its VIP's network
    or its VRF is unknown, or its VIP not allocated yet: nothing to answer then).
    ``providers``: its provider endpoints, resolved (the snapshot chose them)."""
    if vip_net is None or not svc.vip or vip_net.tenant != svc.tenant:
        return ()
    vip = _ipv4(svc.vip)
    if svc.port_providers:  # a Kubernetes Service: providers and target ports per port
        by_id = {e.id: e for e in providers if e.net.tenant == svc.tenant}
        return tuple(SL.ServicePort(svc.key, svc.tenant, vip_net.vrf, tenant_net_ids, vip_net.net_id, vip,
                                    proto, port, 0,
                                    tuple(SL.Provider(e.ip, e.mac, e.net.net_id, e.host, e.port, target)
                                          for eid, target in eps for e in (by_id.get(eid),) if e is not None),
                                    svc.affinity_timeout)
                     for (port, proto), eps in sorted(set(svc.port_providers)))
    provs = tuple(SL.Provider(e.ip, e.mac, e.net.net_id, e.host, e.port)
                  for e in providers if e.net.tenant == svc.tenant)
    return tuple(SL.ServicePort(svc.key, svc.tenant, vip_net.vrf, tenant_net_ids, vip_net.net_id, vip,
                                proto, port, target, provs, svc.affinity_timeout)
                 for port, target, proto in sorted(set(svc.ports)))


def service_args(ports: Tuple[SL.ServicePort, ...], gids: Tuple[Tuple[str, int], ...], host_name: str,
                 host_ports: Mapping[str, int]) -> Tuple:
    """The inputs of a service's fragment on a switch: its ports, their group ids, and
    only where one of its providers is local (hairpin), the host and those ofports;
    otherwise the fragment is the same on every switch and built once."""
    idents = {p.ident for p in ports}
    own = tuple((i, g) for i, g in gids if i in idents)
    local = tuple(sorted({(p.port, host_ports[p.port]) for sp in ports for p in sp.providers
                          if p.host == host_name and p.port in host_ports}))
    return (ports, own, host_name if local else "", local)


def service_flows(ports: Tuple[SL.ServicePort, ...], gids: Tuple[Tuple[str, int], ...], host: str,
                  local: Tuple[Tuple[str, int], ...]) -> List[Flow]:
    """A service's flows on a switch where its tenant has endpoints (owner ``(6, key)``)."""
    return SL.host_services(ports, host, dict(local), dict(gids))[0]


def service_groups(ports: Tuple[SL.ServicePort, ...], gids: Tuple[Tuple[str, int], ...]) -> Tuple[SL.Group, ...]:
    """A service's select groups (the same on every switch where it has flows)."""
    g = dict(gids)
    return tuple(SL.service_group(sp, g[sp.ident]) for sp in ports)


def fragment(build: Any, args: Tuple, checked: Optional[set] = None) -> Tuple[Flow, ...]:
    """``build(*args)``, every flow checked against its table's declaration (raises if
    one breaks it: the caller leaves the owner out).  ``checked`` remembers flows
    already checked, for the full compile where hosts share many flows."""
    flows = build(*args)
    for f in flows:
        if checked is None or f not in checked:
            T.check_flow(f)
            if checked is not None:
                checked.add(f)
    return tuple(flows)


# --------------------------------------------------------------------------
# Per-host compilation (the full compile: cold start and the oracle).
# --------------------------------------------------------------------------
def _compile_host(ix: _Index, host: Host) -> Tuple[List[Flow], List[str], List[Failure], List[SL.Group]]:
    """One host's flows and groups; raises :class:`CompileError` if its own base flows fail."""
    failed: List[Failure] = []
    groups: List[SL.Group] = []
    try:
        ports, tun, upl = host_context(host)
        present = [n for n in ix.nets.values() if host.name in ix.hosts_by_net.get(n.key, ())]
        if ix.routing:
            tenants = {n.tenant for n in present}
            relevant = [n for n in ix.nets.values() if n.tenant in tenants]
        else:
            relevant = present
        present_keys = {n.key for n in present}
        flows = list(fragment(base_flows, (ix.proxy_arp, tun, upl), ix.checked))
    except Exception as err:
        raise CompileError(host.name, _why(err)) from None

    for net in relevant:
        try:
            args = net_args(net, net.key in present_keys, ix.routing, tun, upl, ports,
                            [e for e in ix.eps_by_net.get(net.key, ()) if e.host == host.name],
                            lambda: ix.remote_vteps(net, host),
                            lambda: any(h != host.name and h in ix.vteps
                                        for h in ix.hosts_by_net.get(net.key, ())),
                            ix.net_vlans.get(net.key, ()))
            flows += fragment(net_flows, args, ix.checked)
        except Exception as err:
            failed.append(Failure("network", net.key, _why(err)))

    for net in relevant:
        is_present = net.key in present_keys
        for ep in ix.eps_by_net.get(net.key, ()):
            try:
                args = ep_args(ep, host.name, ports, tun, upl, ix.vteps, is_present, ix.proxy_arp, ix.routing,
                               ix.k8s.active)
                flows += fragment(ep_flows, args, ix.checked)
            except Exception as err:
                failed.append(Failure("endpoint", ep.id, _why(err)))
    local_epgs = ix.host_epgs.get(host.name, ())
    for gkey in sorted(ix.group_args):
        args = ix.group_args[gkey]
        if args.epg in local_epgs:
            try:
                flows += fragment(group_flows, (args,), ix.checked)
            except Exception as err:
                failed.append(Failure("group", gkey, _why(err)))
    if ix.k8s.active:
        try:
            flows += fragment(k8s_base_flows, K8.base_args(ix.k8s, tun, upl), ix.checked)
        except Exception as err:
            failed.append(Failure("k8s", "base", _why(err)))
        local_idents = ix.host_idents.get(host.name, ())
        for ident in sorted(ix.k8s.args):
            if ident in local_idents:
                try:
                    flows += fragment(k8s_ident_flows, (ix.k8s.args[ident],), ix.checked)
                except Exception as err:
                    failed.append(Failure("k8s", str(ident), _why(err)))
    if ix.svc_ports:
        tenants_here = {n.tenant for n in present}
        if HA.PORT in ports:
            tenants_here.add(HA.TENANT)  # the host's own traffic to the default tenant's VIPs
        for skey in sorted(ix.svc_ports):
            sps = ix.svc_ports[skey]
            if not sps or sps[0].tenant not in tenants_here:
                continue
            try:
                args = service_args(sps, ix.svc_gids, host.name, ports)
                got = fragment(service_flows, args, ix.checked)
                groups += service_groups(sps, args[1])
            except Exception as err:
                failed.append(Failure("service", skey, _why(err)))
                continue
            flows += got
    try:
        hargs = HA.host_args(ix.ha_view, ix.ha_peers, ix.vteps, host.name, ports, tun, ix.ha_svc, ix.k8s.active)
        if hargs is not None:
            flows += fragment(HA.flows, hargs, ix.checked)
    except Exception as err:
        failed.append(Failure("host-access", host.name, _why(err)))
    flows, issues = _dedupe(flows, host.name, ix)
    return flows, issues, failed, groups


def _dedupe(flows: List[Flow], host: str, ix: _Index) -> Tuple[List[Flow], List[str]]:
    """Keep the first flow of each identity; OVS would hold only one of them anyway."""
    seen: Dict[Tuple, Flow] = {}
    issues: List[str] = []
    for f in flows:
        first = seen.setdefault(f.identity, f)
        if first is not f and first != f:
            issues.append(f"host {host}: {_owner(ix, f)}'s flow '{f.note}' conflicts with "
                          f"{_owner(ix, first)}'s '{first.note}' (kept the first)")
    return list(seen.values()), issues


def _owner(ix: _Index, f: Flow) -> str:
    """Who owns ``f``, by its cookie (a conflict is rare: a search is fine)."""
    for ep in ix.eps:
        if ep.cookie == f.cookie:
            return f"endpoint {ep.id}"
    for net in ix.nets.values():
        if net.cookie == f.cookie:
            return f"network {net.key}"
    return f"cookie {f.cookie:#x}"


def _compile(ix: _Index, host_name: str) -> Tuple[FrozenSet[Flow], List[str], List[Failure], FrozenSet[SL.Group]]:
    """Every flow was checked against its table by its owner's guard (see :class:`_Owner`)."""
    host = ix.snap.hosts.get(host_name)
    if host is None:
        return frozenset(), [f"host {host_name}: unknown"], [], frozenset()
    flows, issues, failed, groups = _compile_host(ix, host)
    return frozenset(flows), issues, failed, frozenset(groups)


def compile_hosts(snap: Snapshot, host_names: Iterable[str]) -> Compiled:
    """The flows of each named host (the index is built once), isolating failures.

    Pure, like the rest: the failures are returned, the caller logs them.  An unknown
    host gets an empty set, as from :func:`compile_switch`.
    """
    ix = _Index(snap)
    out: Dict[str, FrozenSet[Flow]] = {}
    groups: Dict[str, FrozenSet[SL.Group]] = {}
    failed: Dict[Failure, None] = dict.fromkeys(ix.failed)
    for name in sorted(set(host_names)):
        try:
            flows, _issues, host_failed, groups[name] = _compile(ix, name)
        except CompileError as err:
            failed[Failure("host", name, err.reason)] = None
            continue
        out[name] = flows
        failed.update(dict.fromkeys(host_failed))
    return Compiled(out, tuple(failed), MappingProxyType(groups))


def compile_switch(snap: Snapshot, host_name: str) -> FrozenSet[Flow]:
    """The flows ``host_name``'s ``br-int`` must hold (empty for an unknown host).

    Owners that fail are left out; raises :class:`CompileError` if the host's own
    flows cannot be compiled (an empty set would wipe its switch)."""
    return _compile(_Index(snap), host_name)[0]


def compile_all(snap: Snapshot) -> Dict[str, FrozenSet[Flow]]:
    """The flows of every host in the snapshot, host name -> flows (the index is built once).

    A host whose own flows cannot be compiled is missing (see :func:`compile_hosts`)."""
    return dict(compile_hosts(snap, snap.hosts).flows)


def diagnose(snap: Snapshot) -> Tuple[str, ...]:
    """What the compiler had to skip or arbitrate, for the controller to log."""
    ix = _Index(snap)
    issues = list(ix.issues)
    failed: Dict[Failure, None] = dict.fromkeys(ix.failed)
    for name in sorted(snap.hosts):
        try:
            _flows, host_issues, host_failed, _groups = _compile(ix, name)
        except CompileError as err:
            issues.append(f"{err} (its switch is left as it is)")
            continue
        issues += host_issues
        failed.update(dict.fromkeys(host_failed))
    issues += [f"{f.kind} {f.key}: left out: {f.reason}" for f in failed]
    return tuple(issues)
