"""Kubernetes NetworkPolicy (networking.k8s.io/v1), parsed and evaluated: pure, no I/O.

This module is the *meaning* of a NetworkPolicy; :mod:`contiv_sdn.pipeline.k8s`
compiles that meaning into flows.  Two parts:

* **Label selectors** (``metav1.LabelSelector``): ``matchLabels`` and
  ``matchExpressions`` with ``In`` / ``NotIn`` / ``Exists`` / ``DoesNotExist``,
  ANDed.  The empty selector ``{}`` selects everything; a *missing* selector is
  ``None`` here and means what its field says it means (see :class:`Peer`).
* **Policies**, normalised into :class:`Policy`: the pods it selects
  (``podSelector`` within its namespace), its directions (``policyTypes``, or
  their default when omitted: Ingress always, Egress iff the policy has egress
  rules), and per direction a tuple of :class:`PRule` — or ``None`` when the
  policy does not govern that direction at all.  An empty tuple (the direction
  is a policy type but has no rule) is a default deny for the pods selected.

Semantics carried by the compiler (Kubernetes' own, as Calico and Cilium do it):

* a pod selected by no policy of a direction is not isolated in that direction;
  selected by one or more, only what their rules allow (the union) passes;
* in one rule, peers are ORed, ports are ORed, and a peer and a port must both
  match; a rule without ``from``/``to`` allows every peer, one without
  ``ports`` every port and protocol;
* a peer with ``podSelector`` only selects pods in the *policy's* namespace;
  ``namespaceSelector`` only selects every pod of the matching namespaces; both
  in one peer select the pods matching the pod selector in the namespaces
  matching the namespace selector (an AND), whereas two peers are an OR;
* ``ipBlock``: the CIDR minus its ``except`` CIDRs (set difference, computed
  exactly into prefixes by the compiler);
* ports: a number, a **named container port** (resolved per destination pod
  from the ports its containers declare, matching name *and* protocol; a pod
  without it is not matched by that port), a range ``port..endPort``;
  protocol TCP (default), UDP or SCTP;
* replies of an allowed connection are always allowed (conntrack).

Only IPv4: an IPv6 ``ipBlock`` is refused (the datapath has no IPv6 path).
Namespaces carry the label ``kubernetes.io/metadata.name`` = their name even
when the store has no record of them (the API server sets it on every
namespace since 1.21), so ``namespaceSelector`` by name always works.

Malformed specs raise :class:`NetpolError` with what was wrong: the caller
leaves that policy out and reports it (one bad policy costs only itself).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Optional, Tuple, Union

#: The label every namespace carries with its own name.
NS_NAME_LABEL = "kubernetes.io/metadata.name"
#: Endpoint-record labels that are the CNI plugin's bookkeeping, not the pod's.
CNI_LABEL_PREFIX = "cni.contiv.io/"
PROTOCOLS = ("TCP", "UDP", "SCTP")
OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

Labels = Tuple[Tuple[str, str], ...]


class NetpolError(ValueError):
    """A NetworkPolicy (or selector) that cannot mean anything: says what and where."""


# --------------------------------------------------------------------------
# Label selectors.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: Tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op == "Exists":
            return self.key in labels
        if op == "DoesNotExist":
            return self.key not in labels
        if op == "In":
            return self.key in labels and labels[self.key] in self.values
        return self.key not in labels or labels[self.key] not in self.values  # NotIn


@dataclass(frozen=True)
class Selector:
    """A parsed ``LabelSelector``: every requirement must hold (``matchLabels`` are
    ``In`` requirements with one value).  No requirement: selects everything."""

    requirements: Tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements


EVERYTHING = Selector()


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise NetpolError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise NetpolError(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise NetpolError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def parse_selector(value: Any, where: str = "selector") -> Selector:
    """A ``LabelSelector`` object (``{}`` = everything); raises :class:`NetpolError`."""
    sel = _obj(value, where)
    reqs = []
    labels = sel.get("matchLabels")
    if labels is not None:
        for k, v in _obj(labels, f"{where}.matchLabels").items():
            reqs.append(Requirement(k, "In", (_str(v, f"{where}.matchLabels.{k}"),)))
    for i, expr in enumerate(_list(sel.get("matchExpressions"), f"{where}.matchExpressions")):
        at = f"{where}.matchExpressions[{i}]"
        e = _obj(expr, at)
        key = _str(e.get("key"), f"{at}.key")
        op = _str(e.get("operator"), f"{at}.operator")
        if op not in OPERATORS:
            raise NetpolError(f"{at}.operator: {op!r} is not one of {', '.join(OPERATORS)}")
        values = tuple(sorted({_str(v, f"{at}.values") for v in _list(e.get("values"), f"{at}.values")}))
        if op in ("In", "NotIn") and not values:
            raise NetpolError(f"{at}.values: must be non-empty when operator is {op}")
        if op in ("Exists", "DoesNotExist") and values:
            raise NetpolError(f"{at}.values: must be empty when operator is {op}")
        reqs.append(Requirement(key, op, values))
    return Selector(tuple(sorted(set(reqs), key=lambda r: (r.key, r.operator, r.values))))


# --------------------------------------------------------------------------
# Policies.
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Port:
    """One ``NetworkPolicyPort``: ``port`` None = every port of the protocol; a str is a
    named container port; ``end_port`` makes ``port..end_port`` a range."""

    protocol: str = "TCP"
    port: Union[int, str, None] = None
    end_port: Optional[int] = None


@dataclass(frozen=True)
class Peer:
    """One ``NetworkPolicyPeer``: pods (``pod``/``ns`` selectors, ``None`` = absent) or an
    ``ipBlock`` (``cidr`` with ``excepts``)."""

    pod: Optional[Selector] = None
    ns: Optional[Selector] = None
    cidr: Optional[str] = None
    excepts: Tuple[str, ...] = ()

    @property
    def is_block(self) -> bool:
        return self.cidr is not None


@dataclass(frozen=True)
class PRule:
    """An ingress or egress rule: ``peers`` None = every peer (``from``/``to`` empty or
    absent), ``ports`` None = every port and protocol."""

    peers: Optional[Tuple[Peer, ...]] = None
    ports: Optional[Tuple[Port, ...]] = None


@dataclass(frozen=True)
class Policy:
    namespace: str
    name: str
    pod_selector: Selector
    #: None: the policy does not govern ingress; () a default deny; else its rules
    ingress: Optional[Tuple[PRule, ...]]
    egress: Optional[Tuple[PRule, ...]]

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


def _cidr(text: Any, where: str) -> ipaddress.IPv4Network:
    s = _str(text, where)
    try:
        net = ipaddress.ip_network(s, strict=False)
    except ValueError as err:
        raise NetpolError(f"{where}: {err}") from None
    if net.version != 4:
        raise NetpolError(f"{where}: {s} is IPv6; only IPv4 is supported")
    return net  # type: ignore[return-value]


def _port(value: Any, where: str) -> Port:
    p = _obj(value, where)
    proto = p.get("protocol")
    proto = "TCP" if proto is None else _str(proto, f"{where}.protocol")
    if proto not in PROTOCOLS:
        raise NetpolError(f"{where}.protocol: {proto!r} is not one of TCP, UDP, SCTP")
    port = p.get("port")
    end = p.get("endPort")
    if isinstance(port, bool) or (port is not None and not isinstance(port, (int, str))):
        raise NetpolError(f"{where}.port: expected a number or a port name")
    if isinstance(port, int) and not 1 <= port <= 65535:
        raise NetpolError(f"{where}.port: {port} is not in 1..65535")
    if isinstance(port, str):
        if port.isdigit():
            port = int(port)  # IntOrString given as a string of digits
            if not 1 <= port <= 65535:
                raise NetpolError(f"{where}.port: {port} is not in 1..65535")
        elif not port or len(port) > 15:
            raise NetpolError(f"{where}.port: {port!r} is not a port name (1..15 characters)")
    if end is not None:
        if isinstance(end, bool) or not isinstance(end, int):
            raise NetpolError(f"{where}.endPort: expected a number")
        if not isinstance(port, int):
            raise NetpolError(f"{where}.endPort: needs a numeric port")
        if not port <= end <= 65535:
            raise NetpolError(f"{where}.endPort: {end} is not in {port}..65535")
    return Port(proto, port, end)


def _peer(value: Any, where: str) -> Peer:
    p = _obj(value, where)
    block = p.get("ipBlock")
    pod = p.get("podSelector")
    ns = p.get("namespaceSelector")
    if block is not None:
        if pod is not None or ns is not None:
            raise NetpolError(f"{where}: ipBlock may not be combined with a selector")
        b = _obj(block, f"{where}.ipBlock")
        net = _cidr(b.get("cidr"), f"{where}.ipBlock.cidr")
        excepts = []
        for i, e in enumerate(_list(b.get("except"), f"{where}.ipBlock.except")):
            ex = _cidr(e, f"{where}.ipBlock.except[{i}]")
            if not ex.subnet_of(net) or ex == net:
                raise NetpolError(f"{where}.ipBlock.except[{i}]: {ex} is not strictly within {net}")
            excepts.append(str(ex))
        return Peer(cidr=str(net), excepts=tuple(sorted(set(excepts))))
    if pod is None and ns is None:
        raise NetpolError(f"{where}: a peer needs podSelector, namespaceSelector or ipBlock")
    return Peer(pod=None if pod is None else parse_selector(pod, f"{where}.podSelector"),
                ns=None if ns is None else parse_selector(ns, f"{where}.namespaceSelector"))


def _rules(value: Any, where: str, peer_field: str) -> Tuple[PRule, ...]:
    out = []
    for i, r in enumerate(_list(value, where)):
        at = f"{where}[{i}]"
        rule = _obj(r, at)
        peers = _list(rule.get(peer_field), f"{at}.{peer_field}")
        ports = _list(rule.get("ports"), f"{at}.ports")
        out.append(PRule(
            peers=tuple(_peer(p, f"{at}.{peer_field}[{j}]") for j, p in enumerate(peers)) or None,
            ports=tuple(_port(p, f"{at}.ports[{j}]") for j, p in enumerate(ports)) or None))
    return tuple(out)


def parse_policy(namespace: str, name: str, spec: Any) -> Policy:
    """A NetworkPolicy's ``spec`` normalised; raises :class:`NetpolError` saying what is wrong."""
    where = f"networkpolicy {namespace}/{name}: spec"
    s = _obj(spec, where)
    pod_sel = s.get("podSelector")
    selector = EVERYTHING if pod_sel is None else parse_selector(pod_sel, f"{where}.podSelector")
    ingress = _rules(s.get("ingress"), f"{where}.ingress", "from")
    egress = _rules(s.get("egress"), f"{where}.egress", "to")
    types = s.get("policyTypes")
    if types is None:
        kinds = {"Ingress"} | ({"Egress"} if egress else set())
    else:
        kinds = set()
        for i, t in enumerate(_list(types, f"{where}.policyTypes")):
            t = _str(t, f"{where}.policyTypes[{i}]")
            if t not in ("Ingress", "Egress"):
                raise NetpolError(f"{where}.policyTypes[{i}]: {t!r} is not Ingress or Egress")
            kinds.add(t)
    return Policy(namespace, name, selector,
                  ingress if "Ingress" in kinds else None,
                  egress if "Egress" in kinds else None)


# --------------------------------------------------------------------------
# Pods as the policy sees them.
# --------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class PodKey:
    """What a policy can see of a pod: its namespace, its labels and its named ports
    (name -> (protocol, port)).  Pods with equal keys are treated alike everywhere:
    the compiler gives them one *identity*."""

    namespace: str
    labels: Labels = ()
    named_ports: Tuple[Tuple[str, str, int], ...] = ()

    @property
    def label_map(self) -> Mapping[str, str]:
        return dict(self.labels)

    def named_port(self, name: str, protocol: str) -> Optional[int]:
        for n, proto, port in self.named_ports:
            if n == name and proto == protocol:
                return port
        return None


def pod_key(namespace: str, labels: Optional[Mapping[str, Any]], named_ports: Optional[Mapping[str, Any]]
            ) -> PodKey:
    """A pod's key from its endpoint record's fields (the CNI plugin's own labels left out;
    named ports of a wrong shape left out: they could not be matched anyway)."""
    ls = tuple(sorted((k, v) for k, v in (labels or {}).items()
                      if isinstance(k, str) and isinstance(v, str) and not k.startswith(CNI_LABEL_PREFIX)))
    ports = []
    for name, p in (named_ports or {}).items():
        if isinstance(p, Mapping):
            port, proto = p.get("port"), p.get("protocol") or "TCP"
            if (isinstance(name, str) and isinstance(port, int) and not isinstance(port, bool)
                    and 0 < port <= 65535 and proto in PROTOCOLS):
                ports.append((name, proto, port))
    return PodKey(namespace, ls, tuple(sorted(ports)))


def namespace_labels(name: str, labels: Optional[Mapping[str, str]]) -> Mapping[str, str]:
    """A namespace's labels, with the ``kubernetes.io/metadata.name`` one it always has."""
    out = dict(labels or {})
    out[NS_NAME_LABEL] = name
    return out


def selects(policy: Policy, pod: PodKey) -> bool:
    """Does the policy apply to (isolate, in its directions) this pod?"""
    return pod.namespace == policy.namespace and policy.pod_selector.matches(pod.label_map)


def peer_selects(peer: Peer, policy_ns: str, pod: PodKey,
                 ns_labels: Mapping[str, Mapping[str, str]]) -> bool:
    """Does a pod peer (not an ipBlock) of a policy in ``policy_ns`` select ``pod``?
    ``ns_labels``: namespace -> its labels (see :func:`namespace_labels`)."""
    if peer.is_block:
        return False
    if peer.ns is None:
        if pod.namespace != policy_ns:
            return False
    else:
        labels = ns_labels.get(pod.namespace)
        if labels is None:
            labels = namespace_labels(pod.namespace, None)
        if not peer.ns.matches(labels):
            return False
    return peer.pod is None or peer.pod.matches(pod.label_map)


def block_prefixes(peer: Peer) -> Tuple[ipaddress.IPv4Network, ...]:
    """An ipBlock as prefixes: its CIDR minus its excepts, exactly (sorted, disjoint)."""
    assert peer.cidr is not None
    nets = [ipaddress.IPv4Network(peer.cidr)]
    for ex in peer.excepts:
        e = ipaddress.IPv4Network(ex)
        out = []
        for n in nets:
            if e.subnet_of(n):
                out += [x for x in n.address_exclude(e)] if e != n else []
            elif n.subnet_of(e):
                continue
            else:
                out.append(n)
        nets = out
    return tuple(sorted(nets))


def port_ranges(lo: int, hi: int) -> Tuple[Tuple[int, int], ...]:
    """``lo..hi`` as (value, mask) pairs over a 16-bit port (at most 30 of them)."""
    out = []
    while lo <= hi:
        size = lo & -lo if lo else 1 << 16
        while size > hi - lo + 1:
            size >>= 1
        out.append((lo, 0xFFFF & ~(size - 1)))
        lo += size
    return tuple(out)


def parse_all(records: Iterable[Tuple[str, str, str, Any]]) -> Tuple[Tuple[Policy, ...], Tuple[str, ...]]:
    """(namespace, name, key, spec) records -> the policies that parse, and an issue per one
    that does not."""
    out, issues = [], []
    for ns, name, key, spec in records:
        try:
            out.append(parse_policy(ns, name, spec))
        except NetpolError as err:
            issues.append(f"networkpolicy {key}: left out: {err}")
    return tuple(out), tuple(issues)
