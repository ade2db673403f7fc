"""Kubernetes NetworkPolicy on the policy engine: identities, a conntrack stage, rule flows.

What a policy means is :mod:`drivers.kubernetes.netpol`; this module turns a
snapshot's pods, namespaces and NetworkPolicies into flows, on the same
principles as Contiv's group policy (``policy.py``): a *set* id travels in a
register written by each endpoint's own flows, rules match set ids, never
endpoints, and judgement happens on conntrack so replies always pass.

Identities
----------
Pods with the same :class:`~drivers.kubernetes.netpol.PodKey` (namespace,
labels, named ports) are indistinguishable to every policy, so they share one
numeric *identity* (Cilium's idea).  It is derived, not allocated: the first 32
bits of SHA-256 over the key's canonical text (0 is reserved for "not a pod"),
with a collision resolved by probing upwards in the keys' sorted order.  So it
is the same on every switch and across netmaster restarts without any stored
state, and it changes only when a colliding key appears or goes (then the
endpoints and rules naming it are recompiled, as for any change).  Identity
registers: ``REG_SRC_ID`` (reg6) is written where ``REG_SRC_EPG`` is (CLASSIFY for
a local port, SOURCE by source MAC / routed source IP for remote traffic) and
``REG_DST_ID`` (reg7) where ``REG_DST_EPG`` is (L2).

Tables (``tables.py``), entered from L2 instead of POLICY while at least one
NetworkPolicy exists (otherwise L2 goes straight to POLICY and nothing here is
installed: a cluster without NetworkPolicy pays nothing)::

    45 K8S         IPv4 -> ct(zone=VRF, table=46) (one flow per tenant VRF; no commit:
                   POLICY_COMMIT commits once both stages allowed); else -> POLICY.
    46 K8S_CT      +inv -> POLICY (which drops it); +rpl / +rel -> POLICY (replies
                   and related always pass); the rest: from a local port -> 47,
                   from the tunnel/uplink -> 48.
    47 K8S_EGRESS  egress of the source identity: allow rules -> 48; an identity
                   isolated for egress and no rule matched: drop; else -> 48.
    48 K8S_INGRESS leaving for another host: -> POLICY (judged there); ingress
                   of the destination identity: allow rules -> POLICY; isolated
                   and no match: drop; else -> POLICY.

Then Contiv's stage (50..54) judges the same packet: a packet must pass both,
and only then is it committed.  Why a stage of its own before POLICY rather
than inside tables 52/53: one table holds one match per packet, so two rule
sets in one table would need their cross product; and a stage after 53 would
need the commit moved.  The cost is one more conntrack lookup (no commit) per
judged packet, only while NetworkPolicies exist.

Rules: every allow is one flow at one priority (union = any match), so no
priority arithmetic is needed: ``ipBlock`` with ``except`` is compiled as the
exact set difference (prefixes), ``endPort`` ranges as masked port matches,
named ports resolved per destination identity (ingress: the protected pod's
own port; egress: each destination identity's), protocols TCP/UDP/SCTP; a rule
without ports matches every protocol.

Flow count (per switch ``h``, while at least one policy exists)::

    k8s flows(h) = 8 + V + R + sum over identities I with a pod on h and selected
                   by a policy of  [I isolated for ingress] + [for egress]
                   + sum over (policy, rule, peer, port) of I: t * m

``V``: tenant VRFs; ``R``: tunnel/uplink ports of h; ``t``: peer targets (1 for
"all", identities the peer's selectors match, prefixes of an ipBlock after its
excepts); ``m``: port matches (1, or the masked prefixes of a range, or 0 for a
named port the destination lacks).  Equal entries of several policies count
once.  It grows with identities and rules, never with pods: a new pod with an
existing label set costs nothing here (only its own endpoint flows).

Incremental (``incremental.py``): owners ``(4,)`` (this module's per-host base)
and ``(5, identity)`` (an identity's rules, on hosts where it has a pod).  The
model (identities and each identity's resolved rule entries) is computed again
only when its inputs change — the *set* of pod keys (a new label set, the last
pod of one gone), namespaces, policies, tenants — and only identities whose
entries differ are rebuilt; a pod relabelled to a new key changes its own
endpoint flows, plus the rules of identities whose peer sets gained or lost
its key.  (The model pass itself evaluates every policy against every
identity: cheap plain Python, proportional to identities x policies, not pods.)
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Set, Tuple

from drivers.kubernetes import netpol as NP

from . import tables as T
from .flow import Flow, make_match

_IP = {"eth_type": T.ETH_TYPE_IP}
_LOCAL = (0, T.FLAG_REMOTE)
_REMOTE = (T.FLAG_REMOTE, T.FLAG_REMOTE)
PROTO_NUM = {"TCP": 6, "UDP": 17, "SCTP": 132}
PORT_FIELD = {6: "tcp_dst", 17: "udp_dst", 132: "sctp_dst"}
P_ALLOW = 100
P_ISOLATE = 10
P_REMOTE_DST = 2000
#: BASE: 45 miss, 46 x5, 47 miss, 48 miss (plus one per VRF and per tunnel/uplink port)
BASE_FLOWS = 8


@dataclass(frozen=True)
class K8sNamespace:
    """A namespace record (store kind ``k8sNamespace``)."""

    name: str
    labels: Tuple[Tuple[str, str], ...] = ()


@dataclass(frozen=True)
class K8sPolicy:
    """A NetworkPolicy record (store kind ``k8sNetworkPolicy``); ``spec`` as canonical JSON
    text (hashable, compared by value)."""

    key: str  # "<namespace>/<name>"
    namespace: str
    name: str
    spec: str = "{}"


def spec_text(spec: Any) -> str:
    """The canonical text of a spec object (equal specs, equal text)."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


@functools.lru_cache(maxsize=4096)
def parse_policy(namespace: str, name: str, spec: str) -> NP.Policy:
    """A policy record's spec text parsed (cached: a snapshot keeps the text of every policy);
    raises :class:`~drivers.kubernetes.netpol.NetpolError`."""
    return NP.parse_policy(namespace, name, json.loads(spec))


def pod_key_of(ep: Any) -> Optional[NP.PodKey]:
    """The pod key of an endpoint record (``None``: not a pod, or fields of a wrong type)."""
    ns = getattr(ep, "k8s_namespace", "")
    if not ns or not isinstance(ns, str):
        return None
    try:
        labels = tuple(ep.labels)
        ports = tuple(ep.named_ports)
        key = NP.PodKey(ns, labels, ports)
        hash(key)
    except TypeError:
        return None
    if not all(isinstance(p, tuple) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in labels):
        return None
    if not all(isinstance(p, tuple) and len(p) == 3 and isinstance(p[0], str) and p[1] in PROTO_NUM
               and type(p[2]) is int for p in ports):
        return None
    return key


def _digest(key: NP.PodKey) -> int:
    text = json.dumps([key.namespace, list(key.labels), list(key.named_ports)], separators=(",", ":"))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big")


def assign_identities(keys: Iterable[NP.PodKey]) -> Dict[NP.PodKey, int]:
    """Each key's identity: its digest, probed upwards past 0 and earlier keys on collision."""
    out: Dict[NP.PodKey, int] = {}
    taken: Set[int] = set()
    for k in sorted(set(keys)):
        n = _digest(k) or 1
        while n in taken:
            n = n % 0xFFFFFFFF + 1
        taken.add(n)
        out[k] = n
    return out


Prefix = Tuple[str, str]
#: (peer identity or 0, prefix or (), protocol or 0, (port, mask) or ())
Entry = Tuple[int, Tuple, int, Tuple]


class IdentArgs(NamedTuple):
    """Everything an identity's rule flows are built from (equal args, equal flows)."""

    ident: int
    name: str  # for flow notes: "namespace{labels}"
    ingress: Optional[Tuple[Entry, ...]]  # None: not isolated for ingress
    egress: Optional[Tuple[Entry, ...]]


class Model(NamedTuple):
    active: bool
    idents: Mapping[NP.PodKey, int]
    args: Mapping[int, IdentArgs]
    vrfs: Tuple[int, ...]
    issues: Tuple[str, ...]


EMPTY_MODEL = Model(False, MappingProxyType({}), MappingProxyType({}), (), ())


def _name(key: NP.PodKey) -> str:
    return f"{key.namespace}{{{','.join(f'{k}={v}' for k, v in key.labels)}}}"


def _targets(rule: NP.PRule, policy: NP.Policy, idents: Mapping[NP.PodKey, int],
             ns_labels: Mapping[str, Mapping[str, str]], memo: Dict) -> List[Tuple[str, Any]]:
    """A rule's peers as ("any", None) / ("id", PodKey) / ("pfx", Prefix) targets."""
    if rule.peers is None:
        return [("any", None)]
    out: List[Tuple[str, Any]] = []
    for peer in rule.peers:
        if peer.is_block:
            out += [("pfx", (str(n.network_address), str(n.netmask))) for n in NP.block_prefixes(peer)]
            continue
        mk = (peer, policy.namespace)
        keys = memo.get(mk)
        if keys is None:
            keys = memo[mk] = [k for k in idents if NP.peer_selects(peer, policy.namespace, k, ns_labels)]
        out += [("id", k) for k in keys]
    return out


def _port_matches(port: Optional[NP.Port], owner: Optional[NP.PodKey]) -> List[Tuple[int, Tuple]]:
    """(protocol, (value, mask) or ()) pairs of a port spec; a named port resolved on ``owner``
    (the destination pod; none when it lacks the name)."""
    if port is None:
        return [(0, ())]
    proto = PROTO_NUM[port.protocol]
    if port.port is None:
        return [(proto, ())]
    if isinstance(port.port, str):
        n = owner.named_port(port.port, port.protocol) if owner is not None else None
        return [] if n is None else [(proto, (n, 0xFFFF))]
    return [(proto, pm) for pm in NP.port_ranges(port.port, port.end_port or port.port)]


def _entries(key: NP.PodKey, policies: Iterable[NP.Policy], direction: str,
             idents: Mapping[NP.PodKey, int], ns_labels: Mapping[str, Mapping[str, str]],
             memo: Dict) -> Optional[Tuple[Entry, ...]]:
    isolated = False
    out: Set[Entry] = set()
    for pol in policies:
        rules = pol.ingress if direction == "in" else pol.egress
        if rules is None:
            continue
        isolated = True
        for rule in rules:
            targets = _targets(rule, pol, idents, ns_labels, memo)
            for port in rule.ports or (None,):
                named = port is not None and isinstance(port.port, str)
                for kind, t in targets:
                    if direction == "in" or not named:
                        pms = _port_matches(port, key if named else None)
                        peer = idents[t] if kind == "id" else 0
                        pfx = t if kind == "pfx" else ()
                        out.update((peer, pfx, proto, pm) for proto, pm in pms)
                    elif kind == "id":  # egress to a named port of that pod
                        out.update((idents[t], (), proto, pm) for proto, pm in _port_matches(port, t))
                    elif kind == "any":  # egress to a named port of any pod that has it
                        for k2, i2 in idents.items():
                            out.update((i2, (), proto, pm) for proto, pm in _port_matches(port, k2))
                    # an ipBlock has no named ports: that pair matches nothing
    return tuple(sorted(out)) if isolated else None


def build_model(pods: Iterable[NP.PodKey], namespaces: Mapping[str, Any], policies: Mapping[str, Any],
                vrfs: Iterable[int]) -> Model:
    """The identities of the pod keys present and the rule entries of each protected one."""
    parsed: List[NP.Policy] = []
    issues: List[str] = []
    for pkey in sorted(policies):
        p = policies[pkey]
        try:
            parsed.append(parse_policy(p.namespace, p.name, p.spec))
        except NP.NetpolError as err:
            issues.append(f"networkpolicy {pkey}: left out: {err}")
        except (TypeError, ValueError, AttributeError) as err:
            issues.append(f"networkpolicy {pkey}: left out: {type(err).__name__}: {err}")
    if not parsed:
        return Model(False, MappingProxyType({}), MappingProxyType({}), (), tuple(issues))
    idents = assign_identities(pods)
    ns_labels: Dict[str, Mapping[str, str]] = {}
    for name, ns in namespaces.items():
        try:
            ns_labels[name] = NP.namespace_labels(name, dict(ns.labels))
        except (TypeError, ValueError, AttributeError):
            issues.append(f"namespace {name}: labels unusable, seen as none")
    memo: Dict = {}
    args: Dict[int, IdentArgs] = {}
    for key, ident in idents.items():
        selecting = [p for p in parsed if NP.selects(p, key)]
        if not selecting:
            continue
        args[ident] = IdentArgs(ident, _name(key), _entries(key, selecting, "in", idents, ns_labels, memo),
                                _entries(key, selecting, "out", idents, ns_labels, memo))
    vs = tuple(sorted({v for v in vrfs if type(v) is int and 0 < v <= 0xFFFF}))
    return Model(True, MappingProxyType(idents), MappingProxyType(args), vs, tuple(issues))


def model_of(snap: Any) -> Model:
    """The model of a whole snapshot (the full compile's; the incremental engine keeps its
    inputs itself)."""
    pods = {k for k in (pod_key_of(e) for e in snap.endpoints.values()) if k is not None}
    return build_model(pods, snap.k8s_namespaces, snap.k8s_policies,
                       [getattr(t, "vrf_id", 0) for t in snap.tenants.values()])


# --------------------------------------------------------------------------
# Flows.
# --------------------------------------------------------------------------
def base_args(model: Model, tun: Optional[int], upl: Optional[int]) -> Tuple:
    return (model.vrfs, tun, upl)


def base_flows(vrfs: Tuple[int, ...], tun: Optional[int], upl: Optional[int], cookie: int) -> List[Flow]:
    """The per-host K8s stage (owner: ``(4,)``, only while a policy exists)."""
    cs = "ct_state"
    out = [Flow(T.K8S, 20, make_match(**_IP, **{T.REG_VRF: v}), (("ct", False, v, T.K8S_CT),), None, cookie,
                f"k8s: conntrack in zone {v}") for v in vrfs]
    out += [
        Flow(T.K8S, 0, (), (), T.POLICY, cookie, "k8s: not IPv4 of a known VRF: not judged here"),
        Flow(T.K8S_CT, 40, make_match(**{cs: (T.CT_TRK | T.CT_INV, T.CT_TRK | T.CT_INV)}), (), T.POLICY,
             cookie, "k8s: invalid: the policy stage drops it"),
        Flow(T.K8S_CT, 30, make_match(**{cs: (T.CT_TRK | T.CT_RPL, T.CT_TRK | T.CT_RPL)}), (), T.POLICY,
             cookie, "k8s: a reply, always allowed"),
        Flow(T.K8S_CT, 20, make_match(**{cs: (T.CT_TRK | T.CT_REL, T.CT_TRK | T.CT_REL)}), (), T.POLICY,
             cookie, "k8s: related, always allowed"),
        Flow(T.K8S_CT, 10, make_match(**{cs: (T.CT_TRK, T.CT_TRK), T.REG_FLAGS: _LOCAL}), (), T.K8S_EGRESS,
             cookie, "k8s: from a local pod: judge egress, then ingress"),
        Flow(T.K8S_CT, 10, make_match(**{cs: (T.CT_TRK, T.CT_TRK), T.REG_FLAGS: _REMOTE}), (), T.K8S_INGRESS,
             cookie, "k8s: from remote (egress judged at the source): judge ingress"),
        Flow(T.K8S_EGRESS, 0, (), (), T.K8S_INGRESS, cookie, "k8s: source not isolated for egress"),
        Flow(T.K8S_INGRESS, 0, (), (), T.POLICY, cookie, "k8s: destination not isolated for ingress"),
    ]
    for port in (tun, upl):
        if port is not None:
            out.append(Flow(T.K8S_INGRESS, P_REMOTE_DST, make_match(**{T.REG_OUT: port, T.REG_FLAGS: _LOCAL}),
                            (), T.POLICY, cookie, "k8s: to another host: ingress judged there"))
    return out


def ident_flows(args: IdentArgs, cookie: int) -> List[Flow]:
    """An identity's rule flows (owner ``(5, identity)``; on hosts where it has a pod)."""
    out: List[Flow] = []
    for direction, entries in (("in", args.ingress), ("out", args.egress)):
        if entries is None:
            continue
        if direction == "in":
            table, nxt, own, other, addr = T.K8S_INGRESS, T.POLICY, T.REG_DST_ID, T.REG_SRC_ID, "ipv4_src"
        else:
            table, nxt, own, other, addr = T.K8S_EGRESS, T.K8S_INGRESS, T.REG_SRC_ID, T.REG_DST_ID, "ipv4_dst"
        word = "ingress" if direction == "in" else "egress"
        out.append(Flow(table, P_ISOLATE, make_match(**{own: args.ident}), (), None, cookie,
                        f"k8s {args.name}: isolated for {word}, nothing allowed it: drop"))
        for peer, pfx, proto, pm in entries:
            m: Dict[str, Any] = dict(_IP, **{own: args.ident, other: peer or None})
            if pfx:
                m[addr] = pfx
            if proto:
                m["ip_proto"] = proto
                if pm:
                    m[PORT_FIELD[proto]] = pm[0] if pm[1] == 0xFFFF else pm
            out.append(Flow(table, P_ALLOW, make_match(**m), (), nxt, cookie, f"k8s {args.name}: {word} allowed"))
    return out


def formula(model: Model, local_idents: Iterable[int], n_remote_ports: int) -> int:
    """A switch's K8s flows by the module formula (tests)."""
    if not model.active:
        return 0
    total = BASE_FLOWS + len(model.vrfs) + n_remote_ports
    for i in set(local_idents):
        a = model.args.get(i)
        if a is None:
            continue
        for entries in (a.ingress, a.egress):
            if entries is not None:
                total += 1 + len(entries)
    return total


__all__ = ["EMPTY_MODEL", "IdentArgs", "K8sNamespace", "K8sPolicy", "Model", "assign_identities",
           "base_flows", "build_model", "formula", "ident_flows", "model_of", "pod_key_of", "spec_text"]
