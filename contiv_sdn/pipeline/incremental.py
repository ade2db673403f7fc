"""Incremental compilation: a change costs what it changes, not what the cluster holds.

The full compile (:func:`~contiv_sdn.pipeline.compiler.compile_hosts`) stays the
cold start and the oracle; :class:`IncrementalCompiler` gives the same flows per
switch (a property test holds it to that) while recomputing only the owners
whose inputs changed, in the manner of OVN's incremental processing engine.

Owners and their inputs (made explicit by the argument tuples of
``compiler.net_args``/``ep_args``: a fragment is a pure function of them):

* the host's base ``(0,)``: the global ARP mode and the host's tunnel ofport;
* a network on a host ``(1, net)``: the network (and its tenant's VRF), whether
  it is present on the host, the forwarding mode, the host's tunnel/uplink
  ofports, the ofports of the host's endpoints in it, the VTEPs of the other
  hosts where it is present, and the VLANs of its groups that have their own
  (ACI mode: a group record marks its network when its VLAN comes or goes);
* an endpoint on a host ``(2, net, id)``: its record and network, whether it is
  local (then its port's ofport) or remote (then its host's VTEP and this host's
  tunnel/uplink ofport), whether its network is present here, and the global modes;
* a group's policy ``(3, group)`` (see ``policy.py``): its id and the resolved
  rules of its policies (which read the groups and networks the rules name);
  the same fragment on every host where the group has an endpoint, nowhere else;
  none in ACI mode (the fabric enforces policy);
* a service ``(6, key)`` (``servicelb.py``): its resolved ports (VIP, its network's
  id and VRF, the ids of its tenant's networks, its providers' addresses, MACs,
  networks and hosts) and their group ids, plus, on a host with a local provider,
  that provider's ofport (hairpin); on every host where its tenant has an
  endpoint.  A provider joining or leaving changes the service record (the
  snapshot resolves providers), so only that service is evaluated again; a
  provider's endpoint moving marks the services it provides.  The owner also
  yields the service's select groups, kept per switch next to its flows
  (:meth:`IncrementalCompiler.groups`).
* a switch's host access ``(7,)`` (``hostaccess.py``): while it reports the
  host-access port, the default tenant's VRF, VXLAN networks and endpoints (local
  ofport or remote VTEP), the other hosts with the port, whether that tenant has a
  service, the K8s stage.  Not split per endpoint: any change of those inputs
  evaluates it again on every switch with the port (O(the default tenant's
  endpoints) each); nothing is computed while no switch has the port.

Policy changes cost what they change: a rule record marks the groups whose
policies hold it; a group record marks itself and the groups whose rules name
it; a network record marks the groups whose rules name it.  Only those groups'
rules are resolved again, and only the ones whose resolved rules differ are
rebuilt (once, shared by every switch).  Membership costs no policy work at all:
an endpoint's group id lives in its own flows; only the first/last endpoint of
a group on a host brings/removes the group's fragment there.

The endpoints remote to a switch are not the switch's own: they live in the
:class:`_Layer` of its view (tunnel/uplink ports, relevant networks and their
presence: all a remote endpoint's fragment depends on besides the endpoint), one
per view, shared by every switch with that view; a switch holds its own owners and
hides the layer's entries of its local endpoints.

A change marks owners dirty through those dependencies (an endpoint record: that
endpoint in every layer where its network is relevant, and on its own host, plus
its network's flood list there; the first or last endpoint of a network on a host:
another view for that host, which is built again, and that network's flood lists
everywhere; a host's VTEP: its endpoints and its networks' flood lists everywhere;
its ports: its local owners whose ofport moved...).  Dirty owners are re-evaluated:
their arguments are computed and, when a fragment with equal arguments was already
built, it is reused (a remote endpoint's fragment is built and checked once, its
arguments do not name the switch).  A switch receives only the flows whose winner
changed, as ``identity -> Flow`` (``None``: delete).

Two owners may claim one flow identity (two endpoints with one MAC...): as in the
full compile, the first owner in compile order wins, and the other takes over
when the winner goes.

The engine is pure (no I/O, no clock): :meth:`IncrementalCompiler.steps` is a
generator that yields between slices of work so a caller can give the reactor
turns (``twisted.internet.task.cooperate``); :meth:`IncrementalCompiler.update`
runs it to the end.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, FrozenSet, Generator, Iterable, List, Mapping, Optional, Set,
                    Tuple, Union)

from . import k8s as K8
from . import policy as PL
from .state import DNS_PORT_PREFIX
from . import servicelb as SL
from . import hostaccess as HA
from .compiler import (CompileError, Failure, _Ep, _Net, _why, base_flows, ep_args, ep_flows, fragment,
                       group_flows, group_vlan, host_context, k8s_base_flows, k8s_ident_flows, net_args, net_flows, net_vlans_of, resolve_ep,
                       resolve_net, resolve_vtep, service_args, service_flows, service_gids, service_groups,
                       service_ports)
from .flow import Flow
from .state import GlobalCfg, Host, Snapshot

Identity = Tuple[int, int, Tuple]
Delta = Dict[Identity, Optional[Flow]]
Frag = Union[Tuple[Flow, ...], Failure]
OwnerKey = Tuple

_EMPTY: Tuple[Flow, ...] = ()
_BASE: OwnerKey = (0,)
#: fragments kept per endpoint (argument variants: local, remote per tunnel ofport...)
_VARIANTS = 8
#: the host a layer's fragments are compiled for: none (every endpoint is remote there)
_NOWHERE = object()
_NO_PORTS: Mapping[str, int] = {}


@dataclass
class Update:
    """What one :meth:`IncrementalCompiler.steps` pass produced.

    ``deltas``: per switch already known, the flows whose desired value changed
    (``None``: no longer desired).  ``full``: switches compiled from scratch
    (new, recovered, or after a global change): send them
    :meth:`IncrementalCompiler.flows`.  ``broken``: switches whose own flows fail
    (leave them as they are).  ``evaluated``/``built``: owners looked at, and
    fragments actually built (the rest were reused).
    """

    deltas: Dict[str, Delta] = field(default_factory=dict)
    full: Set[str] = field(default_factory=set)
    broken: Set[str] = field(default_factory=set)
    failed: Tuple[Failure, ...] = ()
    #: switches whose desired groups changed (send them :meth:`IncrementalCompiler.groups`)
    groups: Set[str] = field(default_factory=set)
    evaluated: int = 0
    built: int = 0
    #: switches built from empty on a layer of remote endpoints that was already up to
    #: date (shared, not evaluated again: see _Layer)
    shared: int = 0


class _Layer:
    """The fragments of the endpoints as seen from a host where they are remote, kept
    once for every switch with the same view (:meth:`IncrementalCompiler._view`).

    Why: a remote endpoint's fragment depends on the endpoint and the view only, so
    at 500 switches × 10k endpoints the per-switch maps of those owners (owner ->
    fragment, identity -> winner) were 10M entries, ~43 KiB per endpoint, and every
    endpoint change was evaluated on each of the 500 switches.  A layer holds every
    endpoint of its relevant networks, those local to a member switch included: a
    member hides its own (``_Switch.hidden``), whose flows it holds in local form.
    Owners here are all ``(2, net, id)``; their arbitration is the usual one
    (``win``/``rivals``), and a member's flow at an identity is the first in compile
    order of its own winner and the layer's first owner it does not hide
    (:meth:`IncrementalCompiler._flow_at`)."""

    __slots__ = ("key", "tun", "upl", "nets", "frags", "win", "rivals", "failed", "kinds", "in_ports", "members")

    def __init__(self, key: Tuple, nets: Dict[str, bool]) -> None:
        self.key = key
        self.tun: Optional[int] = key[0]
        self.upl: Optional[int] = key[1]
        #: relevant network -> whether it is present on the members' hosts
        self.nets = nets
        self.frags: Dict[OwnerKey, Frag] = {}
        self.win: Dict[Identity, OwnerKey] = {}
        self.rivals: Dict[Identity, Set[OwnerKey]] = {}
        self.failed: Dict[OwnerKey, Failure] = {}
        #: flow counts of the layer alone (nothing hidden), which a switch built from
        #: empty starts from
        self.kinds: Dict[int, int] = {}
        self.in_ports: Dict[int, int] = {}
        self.members: Set[str] = set()


class _Switch:
    __slots__ = ("name", "host", "ports", "tun", "upl", "frags", "win", "rivals", "failed", "broken", "kinds", "net_args",
                 "sgroups", "in_ports", "layer", "hidden", "touched")

    def __init__(self, name: str) -> None:
        self.name = name
        self.host: Optional[Host] = None
        self.ports: Mapping[str, int] = {}
        self.tun: Optional[int] = None
        self.upl: Optional[int] = None
        #: own owner -> its fragment here (deduplicated by identity) or its Failure
        #: (the endpoints remote here are its layer's)
        self.frags: Dict[OwnerKey, Frag] = {}
        #: identity -> the owner whose flow wins it
        self.win: Dict[Identity, OwnerKey] = {}
        #: identity -> every owner claiming it, only where more than one does
        self.rivals: Dict[Identity, Set[OwnerKey]] = {}
        self.failed: Dict[OwnerKey, Failure] = {}
        self.broken: Optional[Failure] = None
        #: desired flow count per cookie kind (bits 32..47), for the cheap audit
        self.kinds: Dict[int, int] = {}
        #: desired flow count per port matched on (``in_port``), for a reconnect's counts
        self.in_ports: Dict[int, int] = {}
        #: network -> the arguments its fragment here was built from
        self.net_args: Dict[str, Tuple] = {}
        #: service -> its groups here
        self.sgroups: Dict[str, Tuple[SL.Group, ...]] = {}
        #: the layer of its view (its remote endpoints' flows), and the endpoints of that
        #: layer that are local here (held in ``frags`` in local form instead)
        self.layer: Optional[_Layer] = None
        self.hidden: Set[str] = set()
        #: while a pass works on it: identity -> its flow before the pass (see touched())
        self.touched: Optional[Dict[Identity, Optional[Flow]]] = None


#: ``before`` of a switch built from empty: nothing to remember (see IncrementalCompiler.steps)
_UNTRACKED: Dict = {}

#: fragments up to this many flows are scanned; larger ones get an index (_index_of)
_SCAN = 16
#: indexes of large fragments kept (the most recently used)
_INDEXES = 1024
#: a fragment replaced by another with more flows than this (old + new) is applied
#: to a switch as the difference of the two (_frag_diff), not as "all old flows
#: out, all new flows in"
_DIFF_FROM = 32
#: differences of fragment pairs kept (the most recently used)
_DIFFS = 64


def _dedup(flows: Iterable[Flow]) -> Tuple[Flow, ...]:
    seen: Dict[Identity, Flow] = {}
    for f in flows:
        seen.setdefault(f.identity, f)
    return tuple(seen.values())


def _same_objects(flows: Tuple[Flow, ...], others: Iterable[Frag]) -> Tuple[Flow, ...]:
    """``flows`` (just built, held by nobody else), each replaced by an equal flow of
    ``others`` where there is one; one at the same identity with other actions (an
    endpoint's L2 flow, local and remote) takes that flow's identity (and so its match)."""
    known = {f.identity: f for frag in others if type(frag) is tuple for f in frag}
    out = []
    for f in flows:
        k = known.get(f.identity)
        if k is not None:
            if k == f:
                f = k
            else:
                object.__setattr__(f, "identity", k.identity)
        out.append(f)
    return tuple(out)


def _diff_keys(old: Mapping, new: Mapping) -> List:
    """Keys whose value differs between two mappings (cheap when values are shared)."""
    out = [k for k, v in new.items() if old.get(k, _MISSING) is not v and old.get(k, _MISSING) != v]
    out += [k for k in old if k not in new]
    return out


_MISSING = object()


class IncrementalCompiler:
    """Keeps the flows of a set of switches equal to the full compile of the latest snapshot."""

    #: owners evaluated between two yields of :meth:`steps` at most ...
    CHUNK = 200
    #: ... and seconds of work (a clock read for slicing only: results never depend on it)
    SLICE = 0.005

    def __init__(self, on_build: Optional[Callable[[str, str], None]] = None,
                 on_change: Optional[Callable[[str, Identity, Optional[Flow]], None]] = None,
                 on_reset: Optional[Callable[[str], None]] = None,
                 on_settle: Optional[Callable[[str, List[Identity]], None]] = None) -> None:
        #: instrumentation: called with (kind, key) for every fragment actually built
        self.on_build = on_build
        #: called with (switch, identity, its flow now) just before a pass first changes
        #: the flow a known switch has at that identity (a delta will name it) ...
        self.on_change = on_change
        #: ... with (switch, identities) noted so in a pass that ended with the flow it
        #: had before (no delta names them) ...
        self.on_settle = on_settle
        #: ... and with a switch's name just before the engine forgets what it had
        #: (built again from empty, broken, dropped, a global change)
        self.on_reset = on_reset
        self.snap: Optional[Snapshot] = None
        #: large fragment object's id -> (the fragment, its identity -> flow index)
        self._frag_index: "OrderedDict[int, Tuple[Tuple[Flow, ...], Dict[Identity, Flow]]]" = OrderedDict()
        #: (old, new) fragment ids -> (old, new, identities gone, changed, new)
        self._frag_diffs: "OrderedDict[Tuple[int, int], Tuple[Any, ...]]" = OrderedDict()
        self._reset()

    def _reset(self) -> None:
        self.routing = False
        self.proxy_arp = True
        self.aci = False
        #: ACI mode: group -> (network, group id, VLAN) of a group with its own VLAN;
        #: network -> group -> (group id, VLAN), and its pairs as net_args wants them
        self.group_vlan: Dict[str, Tuple[str, int, int]] = {}
        self.net_group_vlans: Dict[str, Dict[str, Tuple[int, int]]] = {}
        self.net_vlans: Dict[str, Tuple[Tuple[int, int], ...]] = {}
        self.nets: Dict[str, _Net] = {}
        self.eps: Dict[str, _Ep] = {}
        self.net_eps: Dict[str, Set[str]] = {}
        self.net_host_eps: Dict[Tuple[str, str], Set[str]] = {}
        self.host_eps: Dict[str, Set[str]] = {}
        self.net_hosts: Dict[str, Dict[str, int]] = {}
        self.tenant_hosts: Dict[str, Dict[str, int]] = {}
        #: network key named by endpoint records -> those endpoint ids (valid or not)
        self.rec_net_eps: Dict[Any, Set[str]] = {}
        #: tenant named by network records -> those network keys
        self.rec_tenant_nets: Dict[Any, Set[str]] = {}
        self.vteps: Dict[str, str] = {}
        self.idx_failed: Dict[Tuple[str, str], Failure] = {}
        self.switches: Dict[str, _Switch] = {}
        #: view -> the layer of the switches with that view
        self.layers: Dict[Tuple, _Layer] = {}
        #: endpoint -> its fragments by ``ep_args``, flat: (args, frag, args, frag, ...);
        #: a tuple, not a dict: two variants each (local, remote) for 10k endpoints,
        #: and a dict of two was 2.3 MB of a 500x10k netmaster
        self.ep_cache: Dict[str, Tuple] = {}
        self.base_cache: Dict[Tuple, Frag] = {}
        self._vtep_lists: Dict[str, Tuple[Tuple[str, ...], int]] = {}
        #: policy: group -> its resolved rules; the record indexes that find whom a change marks
        self.group_args: Dict[str, PL.GroupArgs] = {}
        self.rules_by_policy: Dict[Any, Set[str]] = {}
        self.groups_by_policy: Dict[Any, Set[str]] = {}
        self.rules_by_ref: Dict[Any, Set[str]] = {}
        #: group id -> host -> endpoints (resolved) with that id there; group id -> groups
        self.epg_hosts: Dict[int, Dict[str, int]] = {}
        self.epg_groups: Dict[int, Set[str]] = {}
        self.group_cache: Dict[str, Tuple[PL.GroupArgs, Frag]] = {}
        self._gflips: Set[Tuple[int, str]] = set()
        #: Kubernetes NetworkPolicy (``k8s.py``): the model, the pod key of each endpoint
        #: record, how many records have each key and which; identity -> host -> its pods there
        self.k8s: K8.Model = K8.EMPTY_MODEL
        self.k8s_pod_of: Dict[str, Any] = {}
        self.k8s_key_eids: Dict[Any, Set[str]] = {}
        self.ident_hosts: Dict[int, Dict[str, int]] = {}
        self.k8s_cache: Dict[Any, Tuple[Any, Frag]] = {}
        self._kflips: Set[Tuple[int, str]] = set()
        #: one key tuple per owner, shared by every switch's maps (frags, winners):
        #: 500 switches then hold 500 references to an endpoint's key, not 500 tuples
        self._okeys: Dict[OwnerKey, OwnerKey] = {}
        #: services: key -> resolved ports; every port's group id; the services each
        #: endpoint provides and each tenant holds; tenant -> its networks' ids;
        #: (tenant, host) whose presence flipped in this pass
        self.svc_ports: Dict[str, Tuple[SL.ServicePort, ...]] = {}
        self.svc_gids: Tuple[Tuple[str, int], ...] = ()
        self.svc_gid_map: Dict[str, int] = {}
        self.svc_by_ep: Dict[Any, Set[str]] = {}
        self.svc_by_tenant: Dict[Any, Set[str]] = {}
        self.svc_tenant: Dict[str, str] = {}
        self.tenant_net_ids: Dict[str, Tuple[int, ...]] = {}
        self.svc_cache: Dict[str, Dict[Tuple, Frag]] = {}
        self._tflips: Set[Tuple[str, str]] = set()
        #: host access (``hostaccess.py``): the default tenant's view, the hosts with
        #: the port, whether that tenant has a service; built fragments by arguments
        self.ha_view: Optional[Tuple] = None
        self.ha_peers: Tuple = ()
        self.ha_svc = False
        self.ha_cache: Dict[Tuple, Frag] = {}

    # -- public ----------------------------------------------------------------
    def update(self, snap: Snapshot, hosts: Iterable[str]) -> Update:
        """Bring every named switch to ``snap``'s flows; switches not named are forgotten."""
        upd = Update()
        for _ in self.steps(snap, hosts, upd):
            pass
        return upd

    def flow_at(self, host: str, ident: Identity) -> Optional[Flow]:
        """The flow ``host``'s switch should hold at an identity (None: none, or the
        switch is unknown or broken)."""
        sw = self.switches.get(host)
        if sw is None or sw.broken is not None:
            return None
        return self._flow_at(sw, ident)

    def touched(self, host: str) -> Iterable[Identity]:
        """The identities of ``host``'s switch that the pass in progress has changed
        already (``on_change`` was called for them, and is not again in this pass,
        however often they change): what a belief that starts following the switch
        in the middle of a pass must hold apart from the start (FlowSync._begin_following)."""
        sw = self.switches.get(host)
        return () if sw is None or sw.touched is None else tuple(sw.touched)

    def flows(self, host: str) -> Optional[FrozenSet[Flow]]:
        """The whole desired flow set of ``host``'s switch (``None``: unknown or broken)."""
        table = self.table(host)
        return None if table is None else frozenset(table.values())

    def table(self, host: str) -> Optional[Dict[Identity, Flow]]:
        """:meth:`flows` keyed by identity, each once (a switch's winners): what a
        sync's belief is built from, without hashing every flow into a set first."""
        sw = self.switches.get(host)
        if sw is None or sw.broken is not None:
            return None
        win = sw.win
        if not sw.rivals:  # every identity has one owner: every flow wins (the usual case)
            out = {f.identity: f for frag in sw.frags.values() if type(frag) is tuple for f in frag}
        else:
            out = {f.identity: f for o, frag in sw.frags.items() if type(frag) is tuple
                   for f in frag if win[f.identity] == o}
        layer = sw.layer
        if layer is None:
            return out
        # the layer's flows, but where a flow is claimed here too, or by several of the
        # layer's owners, the arbitration of _flow_at decides (rare: the same MAC twice...)
        contested: Set[Identity] = set(layer.rivals)
        hidden = sw.hidden
        for o, frag in layer.frags.items():
            if type(frag) is not tuple or o[2] in hidden:
                continue
            for f in frag:
                i = f.identity
                if i in win:
                    contested.add(i)
                else:
                    out[i] = f
        for i in contested:
            f = self._flow_at(sw, i)
            if f is None:
                out.pop(i, None)
            else:
                out[i] = f
        return out

    def failed(self) -> Tuple[Failure, ...]:
        out: Dict[Failure, None] = dict.fromkeys(self.idx_failed.values())
        for sw in self.switches.values():
            if sw.broken is not None:
                out[sw.broken] = None
            out.update(dict.fromkeys(sw.failed.values()))
        for layer in self.layers.values():
            for o, f in layer.failed.items():  # (as the full compile: where some member shows it)
                if any(o[2] not in self.switches[m].hidden for m in layer.members):
                    out[f] = None
        return tuple(out)

    def groups(self, host: str) -> Optional[FrozenSet[SL.Group]]:
        """The OpenFlow groups ``host``'s switch must hold (``None``: unknown or broken)."""
        sw = self.switches.get(host)
        if sw is None or sw.broken is not None:
            return None
        return frozenset(g for gs in sw.sgroups.values() for g in gs)

    def counts(self, host: str) -> Optional[Dict[int, int]]:
        """Desired flow count per cookie kind (``cookie >> 32 & 0xFFFF``), kept up to date
        as flows change, for the cheap audit (``None``: unknown or broken switch)."""
        sw = self.switches.get(host)
        if sw is None or sw.broken is not None:
            return None
        return {k: n for k, n in sw.kinds.items() if n}

    def port_counts(self, host: str) -> Optional[Dict[int, int]]:
        """Desired flow count per port matched on (``in_port``), kept like
        :meth:`counts` (``None``: unknown or broken switch)."""
        sw = self.switches.get(host)
        if sw is None or sw.broken is not None:
            return None
        return {p: n for p, n in sw.in_ports.items() if n}

    # -- the pass ------------------------------------------------------------------
    def steps(self, snap: Snapshot, hosts: Iterable[str], upd: Update) -> Generator[None, None, None]:
        """Apply ``snap`` (the whole new state), filling ``upd``; yields between slices."""
        wanted = set(hosts)
        old = self.snap
        if old is None or old.global_cfg != snap.global_cfg:
            self._forget(self.switches)
            self._reset()
            old = Snapshot(global_cfg=snap.global_cfg)
            self.routing = snap.global_cfg.fwd_mode == "routing"
            self.proxy_arp = self.routing or snap.global_cfg.arp_mode != "flood"
            self.aci = bool(snap.global_cfg.aci)
        self.snap = snap
        budget = [self.CHUNK, time.perf_counter() + self.SLICE]

        def tick() -> bool:
            # a slice ends after CHUNK owners or SLICE seconds, whichever is first (a flood
            # list naming 500 VTEPs costs far more than an endpoint): the caller decides
            # whether to give the reactor a turn there
            budget[0] -= 1
            if budget[0] <= 0 or time.perf_counter() >= budget[1]:
                budget[0], budget[1] = self.CHUNK, time.perf_counter() + self.SLICE
                return True
            return False

        # 1. networks to resolve again: changed records and those of changed tenants
        net_keys = set(_diff_keys(old.networks, snap.networks))
        for key in net_keys:
            for rec, add in ((old.networks.get(key), False), (snap.networks.get(key), True)):
                if rec is not None:
                    self._index(self.rec_tenant_nets, rec.tenant, key, add)
        for t in _diff_keys(old.tenants, snap.tenants):
            net_keys |= self.rec_tenant_nets.get(t, set())
        changed_nets: Set[str] = set()
        ep_keys = set(_diff_keys(old.endpoints, snap.endpoints))
        for key in sorted(net_keys):
            new = self._resolve("network", key, lambda: resolve_net(key, snap.networks[key], snap.tenants)
                                if key in snap.networks else (None, ""))
            if new != self.nets.get(key):
                if new is None:
                    self.nets.pop(key, None)
                else:
                    self.nets[key] = new
                changed_nets.add(key)
                ep_keys |= self.rec_net_eps.get(key, set())

        # 1b. policy: groups whose resolved rules may have changed
        group_keys = set(_diff_keys(old.groups, snap.groups))
        changed_groups = yield from self._policy_pass(old, snap, group_keys, net_keys, tick)
        vlan_nets = self._group_vlans_pass(snap, group_keys)

        # 1c. Kubernetes: the model again when its inputs changed (endpoints whose
        # identity moved join ep_keys)
        k8s_idents, k8s_flip, k8s_base = self._k8s_pass(old, snap, ep_keys)

        # 2. endpoints
        self._gflips = set()
        self._kflips = set()
        self._tflips = set()
        dirty_eps: Dict[str, Set[str]] = {}
        local_nets: Set[Tuple[str, str]] = set()   # (net, host): its local ports' flood list
        flips: Dict[Tuple[str, str], bool] = {}    # (net, host) -> presence before: may have changed
        dirty_local: Dict[str, Set[Tuple[str, str]]] = {}  # host -> (net, endpoint) changed there
        for eid in ep_keys:
            for rec, add in ((old.endpoints.get(eid), False), (snap.endpoints.get(eid), True)):
                if rec is not None:
                    self._index(self.rec_net_eps, rec.network, eid, add)
        for eid in sorted(ep_keys):
            if tick():
                yield None
            new_ep = self._resolve("endpoint", eid, lambda: resolve_ep(eid, snap.endpoints[eid], self.nets, self.k8s.idents)
                                   if eid in snap.endpoints else (None, ""))
            old_ep = self.eps.get(eid)
            if new_ep == old_ep:
                continue
            self.ep_cache.pop(eid, None)
            nets = dirty_eps.setdefault(eid, set())
            for ep, add in ((old_ep, False), (new_ep, True)):
                if ep is None:
                    continue
                self._place(ep, add, flips)
                nets.add(ep.net.key)
                local_nets.add((ep.net.key, ep.host))
                dirty_local.setdefault(ep.host, set()).add((ep.net.key, eid))
            if new_ep is None:
                self.eps.pop(eid, None)
                if old_ep is not None:
                    self._okeys.pop((2, old_ep.net.key, eid), None)
            else:
                self.eps[eid] = new_ep
            if tick():
                yield None

        flipped = [nh for nh, was in flips.items() if self._present(*nh) != was]

        # 2b. services: records, their providers' endpoints, their networks
        changed_svcs = self._service_pass(old, snap, changed_nets, dirty_eps)

        # 3. hosts: VTEPs
        full_hosts: Set[str] = set()
        net_all: Set[str] = set(changed_nets) | vlan_nets
        for name in _diff_keys(old.hosts, snap.hosts):
            h = snap.hosts.get(name)
            vtep = None
            if h is not None:
                vtep = self._resolve("host", name, lambda: resolve_vtep(h))
            else:
                self.idx_failed.pop(("host", name), None)
            if vtep != self.vteps.get(name):
                if vtep is None:
                    self.vteps.pop(name, None)
                else:
                    self.vteps[name] = vtep
                full_hosts.add(name)
                for eid in self.host_eps.get(name, ()):
                    dirty_eps.setdefault(eid, set()).add(self.eps[eid].net.key)
                net_all.update(n for n, hs in self.net_hosts.items() if name in hs)
        for n, h in flipped:
            net_all.add(n)  # its flood lists elsewhere name this host's VTEP or not
            if self.routing:
                full_hosts.add(h)  # the relevance of its tenant's other networks may change too
            # (otherwise n's relevance and presence on h are part of h's view: another
            # view, another layer, and h is built again)
        for n in net_all:
            self._vtep_lists.pop(n, None)

        # 3b. host access: its inputs, only while some switch has the port
        ha_before = (self.ha_view, self.ha_peers, self.ha_svc)
        if HA.any_port(snap.hosts):
            if ep_keys or net_keys or changed_nets or _diff_keys(old.tenants, snap.tenants) or self.ha_view is None:
                try:
                    self.ha_view = HA.tenant_view(snap.tenants, self.nets.values(), self.eps.values())
                except Exception as err:
                    self.ha_view = None
                    self.idx_failed[("host-access", "view")] = Failure("host-access", "view", _why(err))
                else:
                    self.idx_failed.pop(("host-access", "view"), None)
            self.ha_peers = HA.peers(snap.hosts, self.vteps)
            self.ha_svc = any(self.svc_tenant.get(k) == HA.TENANT for k in self.svc_ports)
        else:
            self.ha_view, self.ha_peers, self.ha_svc = None, (), False
        # (a VTEP that moved is where remote endpoints are sent: full_hosts has its host)
        ha_dirty = (self.ha_view, self.ha_peers, self.ha_svc) != ha_before or bool(full_hosts)

        if k8s_flip:
            full_hosts |= wanted  # L2 goes to the K8s stage or not: every endpoint's flows change

        # 4. switches: (a) their host context and view; (b) the shared layers of remote
        # endpoints, once per view; (c) each switch's own owners
        gone = [name for name in self.switches if name not in wanted]
        self._forget(gone)
        for name in gone:
            self._detach(self.switches.pop(name))
        by_host_local: Dict[str, Set[str]] = {}
        for n, h in local_nets:
            by_host_local.setdefault(h, set()).add(n)
        flip_hosts = {h for _n, h in flipped}
        plan: List[Tuple[_Switch, bool, Set[str], Optional[Tuple]]] = []
        befores: Dict[str, Dict[Identity, Optional[Flow]]] = {}
        for name in sorted(wanted):
            sw = self.switches.get(name)
            fresh = sw is None
            if fresh:
                sw = self.switches[name] = _Switch(name)
            host = snap.hosts.get(name)
            cold = fresh or name in full_hosts or sw.broken is not None
            moved_ctx = False
            local_eps: Set[str] = set()
            if host is not sw.host and host != sw.host:
                try:
                    ports, tun, upl = host_context(host) if host is not None else ({}, None, None)
                    moved = [p for p in set(sw.ports) | set(ports) if sw.ports.get(p) != ports.get(p)]
                except Exception as err:
                    self._break(sw, Failure("host", name, _why(err)))
                    upd.broken.add(name)
                    continue
                # a VRF's DNS port coming or going changes its networks' and
                # endpoints' flows: rare, so the host is rebuilt
                if (tun != sw.tun or upl != sw.upl or (host is None) != (sw.host is None)
                        or any(p.startswith(DNS_PORT_PREFIX) or p == HA.PORT for p in moved)):
                    cold = True
                else:
                    local_eps = {e for e in self.host_eps.get(name, ()) if self.eps[e].port in moved}
                sw.host, sw.ports, sw.tun, sw.upl = host, ports, tun, upl
                moved_ctx = True
            if sw.broken is not None and not cold:
                upd.broken.add(name)
                continue
            view: Optional[Tuple] = None
            if sw.host is not None:
                if cold or moved_ctx or changed_nets or name in flip_hosts or sw.layer is None:
                    view = self._view(sw)
                else:
                    view = sw.layer.key
                if sw.layer is None or sw.layer.key != view:
                    cold = True  # another view: its remote endpoints are another layer's
            if not cold:
                befores[name] = sw.touched = {}
            elif not fresh:
                self._forget((name,))  # (before a layer it was on changes below)
            plan.append((sw, cold, local_eps, view))

        # (b) layers: each brought to the snapshot once, however many switches share it;
        # switches that stay on one remember what each changed identity was before
        members: Dict[Tuple, List[_Switch]] = {}
        for sw, cold, _l, view in plan:
            if view is not None:
                members.setdefault(view, []).append(sw)
        dirty_layer = {(2, n, e) for e, nets in dirty_eps.items() for n in nets}
        for view in sorted(members, key=repr):
            layer = self.layers.get(view)
            if layer is None:
                layer = self.layers[view] = self._new_layer(view)
                yield from self._fill_layer(layer, upd, tick)
            else:
                staying = [(sw, befores[sw.name]) for sw in members[view] if sw.name in befores]
                yield from self._update_layer(layer, dirty_layer, k8s_flip, staying, upd, tick)

        # (c) own owners
        for sw, cold, local_eps, view in plan:
            name = sw.name
            if cold:
                ok = yield from self._cold(sw, view, upd, tick)
                if not ok:
                    upd.broken.add(name)
                else:
                    upd.full.add(name)
                continue
            before = befores[name]
            owners: Set[OwnerKey] = set()
            for eid in local_eps:
                owners.add((2, self.eps[eid].net.key, eid))
                owners.add((1, self.eps[eid].net.key))
            for n in by_host_local.get(name, ()):
                owners.add((1, n))
            for n in net_all:
                owners.add((1, n))
            for n, eid in dirty_local.get(name, ()):
                owners.add((2, n, eid))
            for g in changed_groups:
                owners.add((3, g))
            owners.update((6, k) for k in changed_svcs)
            for t, h in self._tflips:
                if h == name:
                    owners.update((6, k) for k in self.svc_by_tenant.get(t, ()))
            for eid in local_eps:
                owners.update((6, k) for k in self.svc_by_ep.get(eid, ()))
            for epg, h in self._gflips:
                if h == name:
                    owners.update((3, g) for g in self.epg_groups.get(epg, ()))
            if k8s_base:
                owners.add((4,))
            if ha_dirty or local_eps:
                owners.add((7,))
            owners.update((5, i) for i in k8s_idents)
            owners.update((5, i) for i, h in self._kflips if h == name)
            if sw.host is None:
                owners.clear()  # an unknown host has no flows (as in the full compile)
            frags = sw.frags
            for o in owners:
                if o in frags or self._owner_relevant(o, name):
                    self._eval(sw, o, before, upd)
                    if tick():
                        yield None
            # endpoints that came to or left this host: their remote flows (the layer's)
            # are hidden here, or no longer (after the own owners: see _hide)
            local = self.host_eps.get(name, ())
            for n, eid in dirty_local.get(name, ()):
                if (eid in local) != (eid in sw.hidden):
                    self._hide(sw, eid, dirty_eps.get(eid, ()), eid in local, before)
            delta = self._settle(sw, before)
            sw.touched = None
            if delta:
                upd.deltas[name] = delta
            # (a layer's change is settled on each of its switches here, most with no owner
            # of their own to evaluate, so no tick above: 1000 switches' settles must not
            # run in one slice)
            if tick():
                yield None
        for view in [v for v, layer in self.layers.items() if not layer.members]:
            del self.layers[view]
        upd.failed = self.failed()

    # -- index maintenance ------------------------------------------------------
    @staticmethod
    def _index(index: Dict[Any, Set[str]], key: Any, item: str, add: bool) -> None:
        try:
            if add:
                index.setdefault(key, set()).add(item)
            else:
                s = index.get(key)
                if s is not None:
                    s.discard(item)
                    if not s:
                        del index[key]
        except TypeError:  # an unhashable key: that record never resolves anyway
            pass

    def _resolve(self, kind: str, key: str, fn: Callable[[], Tuple[Any, str]]) -> Any:
        try:
            value, _issue = fn()
        except Exception as err:
            self.idx_failed[(kind, key)] = Failure(kind, key, _why(err))
            return None
        self.idx_failed.pop((kind, key), None)
        return value

    def _group_vlans_pass(self, snap: Snapshot, group_keys: Set[str]) -> Set[str]:
        """Own group VLANs (ACI mode) of changed group records; the networks whose
        pairs changed (their flows on every switch are evaluated again)."""
        nets: Set[str] = set()
        for gk in group_keys:
            rec = snap.groups.get(gk)
            new = group_vlan(rec) if rec is not None else None
            was = self.group_vlan.get(gk)
            if new == was:
                continue
            for gv, add in ((was, False), (new, True)):
                if gv is None:
                    continue
                by_group = self.net_group_vlans.setdefault(gv[0], {})
                if add:
                    by_group[gk] = gv[1:]
                else:
                    by_group.pop(gk, None)
                if not by_group:
                    del self.net_group_vlans[gv[0]]
                nets.add(gv[0])
            if new is None:
                del self.group_vlan[gk]
            else:
                self.group_vlan[gk] = new
        for n in nets:
            by_group = self.net_group_vlans.get(n)
            if by_group:
                self.net_vlans[n] = net_vlans_of(by_group.values())
            else:
                self.net_vlans.pop(n, None)
        return nets

    def _policy_pass(self, old: Snapshot, snap: Snapshot, group_keys: Set[str], net_keys: Set[str],
                     tick: Callable[[], bool]) -> Generator[None, None, Set[str]]:
        """Re-resolve the groups a rule, group or network change can affect; the groups
        whose resolved rules changed (none in ACI mode: no group policy flows)."""
        if self.aci:
            return set()
        rule_keys = set(_diff_keys(old.rules, snap.rules))
        if not (group_keys or rule_keys or net_keys):
            return set()
        affected: Set[str] = set(group_keys)
        for gk in group_keys:
            for rec, add in ((old.groups.get(gk), False), (snap.groups.get(gk), True)):
                if rec is not None:
                    for p in _policies(rec):
                        self._index(self.groups_by_policy, p, gk, add)
        policies: Set[Any] = set()
        for rk in rule_keys:
            for rec, add in ((old.rules.get(rk), False), (snap.rules.get(rk), True)):
                if rec is None:
                    continue
                self._index(self.rules_by_policy, getattr(rec, "policy", None), rk, add)
                for ref in _rule_refs(rec):
                    self._index(self.rules_by_ref, ref, rk, add)
                _add_hashable(policies, getattr(rec, "policy", None))
        refs = [("g", gk) for gk in group_keys] + [("n", nk) for nk in net_keys]
        for ref in refs:
            for rk in self.rules_by_ref.get(ref, ()):
                rec = snap.rules.get(rk)
                if rec is not None:
                    _add_hashable(policies, getattr(rec, "policy", None))
        for p in policies:
            affected |= self.groups_by_policy.get(p, set())
        changed: Set[str] = set()
        for gk in sorted(affected):
            if tick():
                yield None
            rec = snap.groups.get(gk)
            new = self._resolve("group", gk, lambda: PL.group_args(
                gk, rec, PL.rules_of(rec, self.rules_by_policy, snap.rules), snap.groups, snap.networks)
                if rec is not None else (None, ""))
            was = self.group_args.get(gk)
            if new == was:
                continue
            changed.add(gk)
            if was is not None:
                self._index(self.epg_groups, was.epg, gk, False)  # type: ignore[arg-type]
                del self.group_args[gk]
            if new is not None:
                self.group_args[gk] = new
                self._index(self.epg_groups, new.epg, gk, True)  # type: ignore[arg-type]
        return changed

    def _k8s_pass(self, old: Snapshot, snap: Snapshot, ep_keys: Set[str]) -> Tuple[Set[int], bool, bool]:
        """The K8s model again if the set of pod keys, namespaces, policies or tenants changed:
        (identities whose rules changed, whether the stage came or went, whether its base
        flows changed).  Endpoints whose identity number changed are added to ``ep_keys``."""
        pods_changed = False
        for eid in list(ep_keys):
            rec = snap.endpoints.get(eid)
            new_k = K8.pod_key_of(rec) if rec is not None else None
            old_k = self.k8s_pod_of.get(eid)
            if new_k == old_k:
                continue
            if old_k is not None:
                s = self.k8s_key_eids[old_k]
                s.discard(eid)
                if not s:
                    del self.k8s_key_eids[old_k]
                    pods_changed = True
                del self.k8s_pod_of[eid]
            if new_k is not None:
                s = self.k8s_key_eids.setdefault(new_k, set())
                pods_changed = pods_changed or not s
                s.add(eid)
                self.k8s_pod_of[eid] = new_k
        if not (pods_changed or _diff_keys(old.k8s_namespaces, snap.k8s_namespaces)
                or _diff_keys(old.k8s_policies, snap.k8s_policies) or _diff_keys(old.tenants, snap.tenants)):
            return set(), False, False
        was = self.k8s
        try:
            new = K8.build_model(self.k8s_key_eids, snap.k8s_namespaces, snap.k8s_policies,
                                 [getattr(t, "vrf_id", 0) for t in snap.tenants.values()])
            self.idx_failed.pop(("k8s", "model"), None)
        except Exception as err:
            new = K8.EMPTY_MODEL
            self.idx_failed[("k8s", "model")] = Failure("k8s", "model", _why(err))
        self.k8s = new
        for k in set(was.idents) | set(new.idents):
            if was.idents.get(k, 0) != new.idents.get(k, 0):
                ep_keys.update(self.k8s_key_eids.get(k, ()))
        changed = {i for i in set(was.args) | set(new.args) if was.args.get(i) != new.args.get(i)}
        flip = was.active != new.active
        return changed, flip, flip or was.vrfs != new.vrfs

    def _service_pass(self, old: Snapshot, snap: Snapshot, changed_nets: Set[str],
                      dirty_eps: Mapping[str, Any]) -> Set[str]:
        """Resolve again the services whose record, providers' endpoints, networks or
        group ids changed; the services whose resolved ports changed."""
        keys = set(_diff_keys(old.services, snap.services))
        idents_moved = False
        for k in keys:
            for rec, add in ((old.services.get(k), False), (snap.services.get(k), True)):
                if rec is None:
                    continue
                for eid in _tuple(getattr(rec, "providers", ())):
                    self._index(self.svc_by_ep, eid, k, add)
                self._index(self.svc_by_tenant, getattr(rec, "tenant", None), k, add)
            o, n = old.services.get(k), snap.services.get(k)
            if o is None or n is None or _tuple(getattr(o, "ports", ())) != _tuple(getattr(n, "ports", ())):
                idents_moved = True
        marked = set(keys)
        regid: Set[str] = set()
        if idents_moved:
            gids = service_gids(snap.services.values())
            if gids != self.svc_gids:
                new_map = dict(gids)
                for k, ports in self.svc_ports.items():
                    if any(new_map.get(sp.ident) != self.svc_gid_map.get(sp.ident) for sp in ports):
                        regid.add(k)  # same ports, other group ids: its flows and groups change
                self.svc_gids, self.svc_gid_map = gids, new_map
        if changed_nets:
            tenant_nets: Dict[str, List[int]] = {}
            for net in self.nets.values():
                tenant_nets.setdefault(net.tenant, []).append(net.net_id)
            new_tn = {t: tuple(sorted(ids)) for t, ids in tenant_nets.items()}
            for t in set(new_tn) | set(self.tenant_net_ids):
                if new_tn.get(t) != self.tenant_net_ids.get(t):
                    marked |= self.svc_by_tenant.get(t, set())
            self.tenant_net_ids = new_tn
            for n in changed_nets:  # the VIP's network (its VRF, its id)
                marked |= self._svcs_of_net(snap, n)
        for eid in dirty_eps:
            marked |= self.svc_by_ep.get(eid, set())
        changed: Set[str] = regid
        for k in sorted(marked):
            rec = snap.services.get(k)
            new = self._resolve("service", k, lambda: (service_ports(
                rec, self.nets.get(rec.network), self.tenant_net_ids.get(rec.tenant, ()),
                [self.eps[e] for e in rec.providers if e in self.eps]), "") if rec is not None else (None, ""))
            if new is None:
                new = ()
            if new != self.svc_ports.get(k, ()):
                changed.add(k)
                self.svc_cache.pop(k, None)
                if new:
                    self.svc_ports[k] = new
                    self.svc_tenant[k] = new[0].tenant
                else:
                    self.svc_ports.pop(k, None)
                    self.svc_tenant.pop(k, None)
        return changed

    def _svcs_of_net(self, snap: Snapshot, n: str) -> Set[str]:
        """The services whose VIP is in network ``n`` (looked up among its tenant's)."""
        out = set()
        for t in {n.split(":", 1)[0], getattr(snap.networks.get(n), "tenant", None)}:
            out.update(k for k in self.svc_by_tenant.get(t, ())
                       if getattr(snap.services.get(k), "network", None) == n)
        return out

    def _owner_relevant(self, o: OwnerKey, name: str) -> bool:
        if o[0] == 6:
            t = self.svc_tenant.get(o[1])
            hs = self.tenant_hosts.get(t) if t is not None else None
            if t == HA.TENANT and self._known(name) and HA.PORT in self.switches[name].ports:
                return True  # the host's own traffic to the default tenant's VIPs
            return hs is not None and name in hs and self._known(name)
        if o[0] == 7:
            return self._known(name) and HA.PORT in self.switches[name].ports
        if o[0] == 4:
            return self.k8s.active and self._known(name)
        if o[0] == 5:
            hs = self.ident_hosts.get(o[1])
            return o[1] in self.k8s.args and hs is not None and name in hs and self._known(name)
        if o[0] == 3:
            args = self.group_args.get(o[1])
            if args is None:
                return False
            hs = self.epg_hosts.get(args.epg)
            return hs is not None and name in hs and self._known(name)
        return self._relevant(o[1], name)

    def _known(self, name: str) -> bool:
        sw = self.switches.get(name)
        return sw is not None and sw.host is not None

    def _place(self, ep: _Ep, add: bool, flips: Dict[Tuple[str, str], bool]) -> None:
        n, h, eid = ep.net.key, ep.host, ep.id
        if ep.epg:
            eh = self.epg_hosts.setdefault(ep.epg, {})
            c = eh.get(h, 0) + (1 if add else -1)
            if c:
                eh[h] = c
            else:
                del eh[h]
                if not eh:
                    del self.epg_hosts[ep.epg]
            if c == (1 if add else 0):
                self._gflips.add((ep.epg, h))
        if ep.ident:
            ih = self.ident_hosts.setdefault(ep.ident, {})
            c = ih.get(h, 0) + (1 if add else -1)
            if c:
                ih[h] = c
            else:
                del ih[h]
                if not ih:
                    del self.ident_hosts[ep.ident]
            if c == (1 if add else 0):
                self._kflips.add((ep.ident, h))
        self._index(self.net_eps, n, eid, add)
        self._index(self.net_host_eps, (n, h), eid, add)
        self._index(self.host_eps, h, eid, add)
        hosts = self.net_hosts.setdefault(n, {})
        count = hosts.get(h, 0) + (1 if add else -1)
        if count and hosts.get(h, 0):
            hosts[h] = count
            return
        flips.setdefault((n, h), not add)  # first or last endpoint of this network on this host
        tenants = self.tenant_hosts.setdefault(ep.net.tenant, {})
        if count:
            hosts[h] = count
            tenants[h] = tenants.get(h, 0) + 1
            if tenants[h] == 1:
                self._tflips.add((ep.net.tenant, h))
        else:
            del hosts[h]
            if not hosts:
                del self.net_hosts[n]
            tenants[h] -= 1
            if not tenants[h]:
                del tenants[h]
                self._tflips.add((ep.net.tenant, h))
            if not tenants:
                del self.tenant_hosts[ep.net.tenant]

    # -- relevance and arguments ---------------------------------------------------
    def _present(self, n: str, h: str) -> bool:
        hs = self.net_hosts.get(n)
        return hs is not None and h in hs

    def _relevant(self, n: str, h: str) -> bool:
        net = self.nets.get(n)
        if net is None:
            return False
        if self.routing:
            hs = self.tenant_hosts.get(net.tenant)
            return hs is not None and h in hs
        return self._present(n, h)

    def _vteps_of(self, n: str) -> Tuple[Tuple[str, ...], int]:
        """(sorted unique VTEPs of the hosts where ``n`` is present, how many of them have one)."""
        got = self._vtep_lists.get(n)
        if got is None:
            vteps = self.vteps
            hs = [h for h in self.net_hosts.get(n, ()) if h in vteps]
            ips = sorted({vteps[h] for h in hs}, key=ipaddress.IPv4Address)
            got = self._vtep_lists[n] = (tuple(ips), len(hs))
        return got

    # -- evaluation ----------------------------------------------------------------
    def _own_owners(self, sw: _Switch) -> List[OwnerKey]:
        """Every owner a switch holds itself (all but the endpoints remote to it)."""
        name = sw.name
        owners: List[OwnerKey] = []
        if sw.host is None:
            return owners
        owners.append(_BASE)
        for n in sorted(self.nets):
            if self._relevant(n, name):
                owners.append((1, n))
                owners += [(2, n, e) for e in sorted(self.net_host_eps.get((n, name), ()))]
        for g in sorted(self.group_args):
            if self._owner_relevant((3, g), name):
                owners.append((3, g))
        if self._owner_relevant((4,), name):
            owners.append((4,))
        for i in sorted(self.k8s.args):
            if self._owner_relevant((5, i), name):
                owners.append((5, i))
        for k in sorted(self.svc_ports):
            if self._owner_relevant((6, k), name):
                owners.append((6, k))
        if self._owner_relevant((7,), name):
            owners.append((7,))
        return owners

    def _view(self, sw: _Switch) -> Tuple:
        """What a remote endpoint's fragment on this switch depends on besides the
        endpoint and the engine's global state (``compiler.ep_args``): the tunnel and
        uplink ports, and which networks are relevant here and whether each is present.
        Switches with equal views share one :class:`_Layer`.  (Networks not relevant
        here are left out: a new network elsewhere changes no view.)"""
        name = sw.name
        return (sw.tun, sw.upl,
                tuple((n, self._present(n, name)) for n in sorted(self.nets) if self._relevant(n, name)))

    def _new_layer(self, view: Tuple) -> _Layer:
        return _Layer(view, dict(view[2]))

    def _layer_owners(self, layer: _Layer) -> List[OwnerKey]:
        return [(2, n, e) for n in sorted(layer.nets) for e in sorted(self.net_eps.get(n, ()))]

    def _fill_layer(self, layer: _Layer, upd: Update, tick: Callable[[], bool]) -> Generator:
        """A new layer: every endpoint of its relevant networks, in remote form."""
        for o in self._layer_owners(layer):
            self._set(layer, o, self._layer_frag(layer, o, upd), _UNTRACKED)
            if tick():
                yield None
        self._count_kinds(layer)

    def _update_layer(self, layer: _Layer, dirty: Set[OwnerKey], everything: bool,
                      staying: List[Tuple[_Switch, Dict[Identity, Optional[Flow]]]], upd: Update,
                      tick: Callable[[], bool]) -> Generator:
        """The layer's changed owners evaluated once; each member that stays on it first
        remembers the flow it has at every identity those owners held or now hold (its
        ``before``, settled with its own owners' changes)."""
        if everything:
            owners = set(self._layer_owners(layer)) | set(layer.frags)
        else:
            owners = {o for o in dirty if o in layer.frags or o[1] in layer.nets}
        lbefore: Dict[Identity, Optional[Flow]] = {}
        for o in sorted(owners):
            old = layer.frags.get(o, _EMPTY)
            new = self._layer_frag(layer, o, upd)
            if new is old:
                continue
            if staying:
                idents = [f.identity for frag in (old, new) if type(frag) is tuple for f in frag]
                note = self._note
                for sw, before in staying:
                    for i in idents:
                        if i not in before:
                            note(sw, before, i)
            self._set(layer, o, new, lbefore)
            if tick():
                yield None
        self._settle(layer, lbefore)

    def _layer_frag(self, layer: _Layer, o: OwnerKey, upd: Update) -> Frag:
        """An endpoint's fragment on the layer's switches (as in :meth:`_eval`, remote)."""
        upd.evaluated += 1
        n, eid = o[1], o[2]
        ep = self.eps.get(eid)
        present = layer.nets.get(n)
        if ep is None or ep.net.key != n or present is None:
            return _EMPTY
        args = ep_args(ep, _NOWHERE, _NO_PORTS, layer.tun, layer.upl, self.vteps, present,  # type: ignore[arg-type]
                       self.proxy_arp, self.routing, self.k8s.active)
        return self._ep_frag(eid, args, upd)

    def _ep_frag(self, eid: str, args: Tuple, upd: Update) -> Frag:
        """An endpoint's fragment for ``args`` (``compiler.ep_args``), built once per
        variant (its local form, its remote form on each layer).  A new variant takes
        the flows it shares with the others (its proxy ARP and route flows are the same
        in both forms) as the same objects: one of each, not one per form."""
        cache = self.ep_cache.get(eid, ())
        for i in range(0, len(cache), 2):
            if cache[i] == args:
                return cache[i + 1]
        new = self._build("endpoint", eid, ep_flows, args, upd)
        if len(cache) >= 2 * _VARIANTS:
            cache = ()
        elif cache and type(new) is tuple:
            new = _same_objects(new, cache[1::2])
        self.ep_cache[eid] = cache + (args, new)
        return new

    def _cold(self, sw: _Switch, view: Optional[Tuple], upd: Update, tick: Callable[[], bool]) -> Generator:
        """Build a switch from empty (new, recovered, a new host context or view): it
        joins its view's layer, hides its own endpoints there and evaluates its own
        owners.  Its counts start as the layer's and follow what changes from there,
        as for a delta (the switch gets its flows in full: no delta is kept).  False
        if its own flows fail."""
        self._detach(sw)
        sw.broken = None
        sw.frags, sw.win, sw.rivals, sw.failed, sw.net_args, sw.sgroups = {}, {}, {}, {}, {}, {}
        sw.hidden = set()
        sw.kinds, sw.in_ports = {}, {}
        upd.groups.add(sw.name)
        if view is None:
            return True  # an unknown host: no flows
        layer = self.layers[view]
        if layer.members:
            upd.shared += 1
        layer.members.add(sw.name)
        sw.layer = layer
        sw.kinds, sw.in_ports = dict(layer.kinds), dict(layer.in_ports)
        before: Dict[Identity, Optional[Flow]] = {}
        sw.touched = before
        for o in self._own_owners(sw):
            self._eval(sw, o, before, upd)
            if sw.broken is not None:
                return False
            if tick():
                yield None
        for eid in self.host_eps.get(sw.name, ()):
            self._hide(sw, eid, (), True, before)
        self._settle(sw, before)
        sw.touched = None
        return True

    def _hide(self, sw: _Switch, eid: str, nets: Iterable[str], hide: bool, before: Dict) -> None:
        """An endpoint of the switch's layer becomes local here (its remote flows are
        hidden) or stops being local (they show again); ``nets``: networks it was in."""
        layer = sw.layer
        if layer is not None:
            ep = self.eps.get(eid)
            for n in set(nets) | ({ep.net.key} if ep is not None else set()):
                frag = layer.frags.get((2, n, eid))
                if type(frag) is tuple:
                    for f in frag:
                        if f.identity not in before:
                            self._note(sw, before, f.identity)
        if hide:
            sw.hidden.add(eid)
        else:
            sw.hidden.discard(eid)

    def _forget(self, names: Iterable[str]) -> None:
        if self.on_reset is not None:
            for name in list(names):
                self.on_reset(name)

    def _detach(self, sw: _Switch) -> None:
        if sw.layer is not None:
            sw.layer.members.discard(sw.name)
            sw.layer = None

    def _eval(self, sw: _Switch, o: OwnerKey, before: Dict, upd: Update) -> None:
        upd.evaluated += 1
        kind = o[0]
        new: Frag
        if kind == 0:
            args = (self.proxy_arp, sw.tun, sw.upl)
            new = self.base_cache.get(args)  # type: ignore[assignment]
            if new is None:
                new = self._build("host", sw.name, base_flows, args, upd)
                if len(self.base_cache) > 64:
                    self.base_cache.clear()
                self.base_cache[args] = new
            if type(new) is Failure:
                self._break(sw, new)  # type: ignore[arg-type]
                return
        elif kind == 4 or kind == 5:
            if not self._owner_relevant(o, sw.name):
                new = _EMPTY
            else:
                if kind == 4:
                    kargs: Tuple = K8.base_args(self.k8s, sw.tun, sw.upl)
                    fn, key = k8s_base_flows, "base"
                else:
                    kargs = (self.k8s.args[o[1]],)
                    fn, key = k8s_ident_flows, str(o[1])
                ck = (kind, kargs)
                cached = self.k8s_cache.get(ck)
                if cached is not None:
                    new = cached[1]
                else:
                    new = self._build("k8s", key, fn, kargs, upd)
                    if len(self.k8s_cache) > 4096:
                        self.k8s_cache.clear()
                    self.k8s_cache[ck] = (kargs, new)
        elif kind == 6:
            k = o[1]
            ports = self.svc_ports.get(k)
            if not ports or not self._owner_relevant(o, sw.name):
                new = _EMPTY
                groups: Tuple[SL.Group, ...] = ()
            else:
                sargs = service_args(ports, self.svc_gids, sw.name, sw.ports)
                cache = self.svc_cache.setdefault(k, {})
                new = cache.get(sargs)  # type: ignore[assignment]
                if new is None:
                    new = self._build("service", k, service_flows, sargs, upd)
                    if len(cache) >= _VARIANTS:
                        cache.clear()
                    cache[sargs] = new
                groups = () if type(new) is Failure else service_groups(ports, sargs[1])
            if sw.sgroups.get(k, ()) != groups:
                if groups:
                    sw.sgroups[k] = groups
                else:
                    sw.sgroups.pop(k, None)
                upd.groups.add(sw.name)
        elif kind == 7:
            hargs = None
            if self._owner_relevant(o, sw.name):
                hargs = HA.host_args(self.ha_view, self.ha_peers, self.vteps, sw.name, sw.ports, sw.tun, self.ha_svc,
                                     self.k8s.active)
            if hargs is None:
                new = _EMPTY
            else:
                new = self.ha_cache.get(hargs)  # type: ignore[assignment]
                if new is None:
                    new = self._build("host-access", sw.name, HA.flows, hargs, upd)
                    if len(self.ha_cache) > 256:
                        self.ha_cache.clear()
                    self.ha_cache[hargs] = new
        elif kind == 3:
            g = o[1]
            gargs = self.group_args.get(g)
            if gargs is None or not self._owner_relevant(o, sw.name):
                new = _EMPTY
            else:
                cached = self.group_cache.get(g)
                if cached is not None and cached[0] == gargs:
                    new = cached[1]
                else:
                    new = self._build("group", g, group_flows, (gargs,), upd)
                    self.group_cache[g] = (gargs, new)
        elif kind == 1:
            n = o[1]
            net = self.nets.get(n)
            if net is None or not self._relevant(n, sw.name):
                new = _EMPTY
            else:
                name = sw.name
                try:
                    eps = self.eps
                    args = net_args(net, self._present(n, name), self.routing, sw.tun, sw.upl, sw.ports,
                                    [eps[e] for e in self.net_host_eps.get((n, name), ())],
                                    lambda: self._remote_vteps(n, name), lambda: self._has_remote(n, name),
                                    self.net_vlans.get(n, ()))
                except Exception as err:
                    new = Failure("network", n, _why(err))
                else:
                    if sw.net_args.get(n) == args and o in sw.frags:
                        return  # same inputs, same flows
                    new = self._build("network", n, net_flows, args, upd)
                    sw.net_args[n] = args
        else:
            n, eid = o[1], o[2]
            ep = self.eps.get(eid)
            if ep is None or ep.net.key != n or ep.host != sw.name or not self._relevant(n, sw.name):
                new = _EMPTY  # (an endpoint remote here is its layer's)
            else:
                args = ep_args(ep, sw.name, sw.ports, sw.tun, sw.upl, self.vteps, self._present(n, sw.name),
                               self.proxy_arp, self.routing, self.k8s.active)
                new = self._ep_frag(eid, args, upd)  # type: ignore[assignment]
        self._set(sw, o, new, before)

    def _remote_vteps(self, n: str, h: str) -> Tuple[str, ...]:
        own = self.vteps.get(h)
        return tuple(ip for ip in self._vteps_of(n)[0] if ip != own)

    def _has_remote(self, n: str, h: str) -> bool:
        count = self._vteps_of(n)[1]
        return count - (1 if self._present(n, h) and h in self.vteps else 0) > 0

    def _build(self, kind: str, key: str, fn: Any, args: Tuple, upd: Update) -> Frag:
        upd.built += 1
        if self.on_build is not None:
            self.on_build(kind, key)
        try:
            return _dedup(fragment(fn, args))
        except Exception as err:
            return Failure(kind, key, _why(err))

    def _break(self, sw: _Switch, why: Failure) -> None:
        self._forget((sw.name,))
        sw.broken = why
        sw.touched = None
        sw.host = None  # read again when it recovers
        sw.frags, sw.win, sw.rivals, sw.failed, sw.kinds, sw.net_args, sw.sgroups = {}, {}, {}, {}, {}, {}, {}
        sw.in_ports = {}
        sw.hidden = set()
        self._detach(sw)

    # -- arbitration ---------------------------------------------------------------
    def _note(self, sw: Union[_Switch, _Layer], before: Dict[Identity, Optional[Flow]], ident: Identity) -> None:
        """Remember the flow at an identity before the pass first changes it there (and
        tell ``on_change``: a belief that follows this switch keeps it until it is sent)."""
        v = before[ident] = self._flow_at(sw, ident)
        if self.on_change is not None and type(sw) is _Switch:
            self.on_change(sw.name, ident, v)

    def _flow_at(self, sw: Union[_Switch, _Layer], ident: Identity) -> Optional[Flow]:
        """The flow a switch (or a layer alone) holds at an identity: a switch's is the
        first in compile order of its own winner and the first owner of its layer
        that it does not hide."""
        o = sw.win.get(ident)
        if type(sw) is _Switch and sw.layer is not None:
            layer = sw.layer
            lo = layer.win.get(ident)
            if lo is not None:
                hidden = sw.hidden
                if hidden and lo[2] in hidden:
                    r = layer.rivals.get(ident)
                    lo = min((x for x in r if x[2] not in hidden), default=None) if r else None
                if lo is not None and (o is None or lo < o):
                    return self._flow_in(layer.frags[lo], lo, ident)
        if o is None:
            return None
        return self._flow_in(sw.frags[o], o, ident)

    def _flow_in(self, frag: Frag, o: OwnerKey, ident: Identity) -> Flow:
        if len(frag) <= _SCAN:  # type: ignore[arg-type]
            for f in frag:  # type: ignore[union-attr]
                if f.identity == ident:
                    return f
        else:
            f = self._index_of(frag).get(ident)  # type: ignore[arg-type]
            if f is not None:
                return f
        raise AssertionError(f"winner {o} has no flow {ident}")  # pragma: no cover

    def _index_of(self, frag: Tuple[Flow, ...]) -> Dict[Identity, Flow]:
        """identity -> flow of a large fragment, built once per fragment object.

        Why: a group's policy fragment holds a flow per rule, and a rule change
        replaces it whole: finding each old and new flow by scanning cost R^2 per
        member switch (py-spy: over half the netmaster's time at 400 rules).  Fragments
        are shared between switches and immutable, so one index per object serves all;
        the cache holds the fragment itself (its id cannot be reused meanwhile) and
        keeps the most recently used :data:`_INDEXES`."""
        cache = self._frag_index
        key = id(frag)
        hit = cache.get(key)
        if hit is not None and hit[0] is frag:
            cache.move_to_end(key)
            return hit[1]
        index = {f.identity: f for f in frag}  # _dedup: one flow per identity
        cache[key] = (frag, index)
        if len(cache) > _INDEXES:
            cache.popitem(last=False)
        return index

    def _set(self, sw: _Switch, o: OwnerKey, new: Frag, before: Dict) -> None:
        frags = sw.frags
        old = frags.get(o, _EMPTY)
        if old is new:
            return
        o = self._okeys.setdefault(o, o)
        if type(new) is Failure:
            sw.failed[o] = new  # type: ignore[assignment]
            new_flows: Tuple[Flow, ...] = _EMPTY
        else:
            sw.failed.pop(o, None)
            new_flows = new  # type: ignore[assignment]
        old_flows = old if type(old) is tuple else _EMPTY
        if old_flows == new_flows:
            if new_flows or type(new) is Failure:
                frags[o] = new
            else:
                frags.pop(o, None)
            return
        win, rivals = sw.win, sw.rivals
        track = before is not _UNTRACKED
        if old_flows and new_flows and len(old_flows) + len(new_flows) > _DIFF_FROM:
            self._replace(sw, o, old_flows, new_flows, before, track)
            return
        for f in old_flows:  # type: ignore[union-attr]
            i = f.identity
            if track and i not in before:
                self._note(sw, before, i)
            if i in rivals:
                _unclaim(win, rivals, i, o)
            else:
                del win[i]
        if new_flows or type(new) is Failure:
            frags[o] = new
        else:
            frags.pop(o, None)
        for f in new_flows:
            i = f.identity
            if track and i not in before:
                self._note(sw, before, i)
            if i in win:
                _claim(win, rivals, i, o)
            else:
                win[i] = o

    def _frag_diff(self, old: Tuple[Flow, ...], new: Tuple[Flow, ...]) -> Tuple[List[Identity], List[Identity],
                                                                               List[Identity]]:
        """The identities ``old`` has and ``new`` has not, those whose flow differs,
        and those only ``new`` has: worked out once per pair of fragment objects and
        shared by every switch that makes the same replacement (a rule added to a
        policy of 50 rules: 500 switches each replace the group's fragment; as "all
        old out, all new in" that was 100 identities per switch where 2 changed)."""
        cache = self._frag_diffs
        key = (id(old), id(new))
        hit = cache.get(key)
        if hit is not None and hit[0] is old and hit[1] is new:
            cache.move_to_end(key)
            return hit[2], hit[3], hit[4]
        a, b = self._index_of(old), self._index_of(new)
        gone = [i for i in a if i not in b]
        changed = [i for i, f in b.items() if i in a and a[i] is not f and a[i] != f]
        came = [i for i in b if i not in a]
        cache[key] = (old, new, gone, changed, came)  # holding both: their ids stay theirs
        if len(cache) > _DIFFS:
            cache.popitem(last=False)
        return gone, changed, came

    def _replace(self, sw: _Switch, o: OwnerKey, old: Tuple[Flow, ...], new: Tuple[Flow, ...], before: Dict,
                 track: bool) -> None:
        """:meth:`_set` of one fragment replaced by another, as their difference: an
        identity both hold stays claimed by ``o`` (its flow, if it changed, is read
        from the new fragment by :meth:`_flow_at`)."""
        gone, changed, came = self._frag_diff(old, new)
        if track:
            for group in (gone, changed, came):
                for i in group:
                    if i not in before:
                        self._note(sw, before, i)
        win, rivals = sw.win, sw.rivals
        for i in gone:
            if i in rivals:
                _unclaim(win, rivals, i, o)
            else:
                del win[i]
        sw.frags[o] = new
        for i in came:
            if i in win:
                _claim(win, rivals, i, o)
            else:
                win[i] = o

    @staticmethod
    def _count_kinds(sw: _Layer) -> None:
        """The flow count per cookie kind of a new layer: each
        fragment's flows, less those that lose their identity to another owner."""
        kinds: Dict[int, int] = {}
        ports: Dict[int, int] = {}
        win, rivals = sw.win, sw.rivals
        for o, frag in sw.frags.items():
            if type(frag) is not tuple:
                continue  # a Failure: no flows
            for f in frag:
                if rivals and f.identity in rivals and win[f.identity] != o:
                    continue
                k = (f.cookie >> 32) & 0xFFFF
                kinds[k] = kinds.get(k, 0) + 1
                p = _in_port(f)
                if p is not None:
                    ports[p] = ports.get(p, 0) + 1
        sw.kinds = kinds
        sw.in_ports = ports

    def _settle(self, sw: Union[_Switch, _Layer], before: Dict[Identity, Optional[Flow]]) -> Delta:
        delta: Delta = {}
        kinds, ports = sw.kinds, sw.in_ports
        same: List[Identity] = []
        for i, was in before.items():
            now = self._flow_at(sw, i)
            if now == was:
                same.append(i)
            else:
                delta[i] = now
                if was is not None:
                    k = (was.cookie >> 32) & 0xFFFF
                    kinds[k] -= 1
                    p = _in_port(was)
                    if p is not None:
                        ports[p] -= 1
                if now is not None:
                    k = (now.cookie >> 32) & 0xFFFF
                    kinds[k] = kinds.get(k, 0) + 1
                    p = _in_port(now)
                    if p is not None:
                        ports[p] = ports.get(p, 0) + 1
        if same and self.on_settle is not None and type(sw) is _Switch:
            self.on_settle(sw.name, same)
        return delta


def _unclaim(win: Dict[Identity, OwnerKey], rivals: Dict[Identity, Set[OwnerKey]], i: Identity,
             o: OwnerKey) -> None:
    """Owner ``o`` no longer claims ``i``, which others claim too (``rivals``): the
    first of the rest in compile order wins it."""
    r = rivals[i]
    r.discard(o)
    if win[i] == o:
        win[i] = min(r)
    if len(r) == 1:
        del rivals[i]


def _claim(win: Dict[Identity, OwnerKey], rivals: Dict[Identity, Set[OwnerKey]], i: Identity,
           o: OwnerKey) -> None:
    """Owner ``o`` claims ``i`` as well as the owner that wins it now: the first in
    compile order wins."""
    w = win[i]
    r = rivals.get(i)
    if r is None:
        r = rivals[i] = {w}
    r.add(o)
    if o < w:
        win[i] = o


def _in_port(f: Flow) -> Optional[int]:
    """The port a flow matches on, if any (what a reconnect's ``in_port`` counts ask)."""
    for name, value in f.match:
        if name == "in_port":
            return value
    return None


def _policies(group: Any) -> Tuple[Any, ...]:
    try:
        return tuple(group.policies)
    except TypeError:
        return ()


def _rule_refs(rule: Any) -> List[Tuple[str, str]]:
    """The groups and networks a rule record may name (whatever its direction)."""
    t = getattr(rule, "tenant", "")
    out = []
    for kind, name in (("g", getattr(rule, "from_group", "")), ("g", getattr(rule, "to_group", "")),
                       ("n", getattr(rule, "from_network", "")), ("n", getattr(rule, "to_network", ""))):
        if name:
            out.append((kind, f"{t}:{name}"))
    return out


def _tuple(v: Any) -> Tuple:
    try:
        return tuple(v)
    except TypeError:
        return ()


def _add_hashable(s: Set[Any], item: Any) -> None:
    try:
        s.add(item)
    except TypeError:
        pass


def compile_error_of(upd: Update, host: str) -> Optional[CompileError]:
    """The :class:`CompileError` for a broken switch of ``upd``, for callers that raise."""
    for f in upd.failed:
        if f.kind == "host" and f.key == host and host in upd.broken:
            return CompileError(host, f.reason)
    return None


__all__ = ["Delta", "IncrementalCompiler", "Update", "GlobalCfg"]
