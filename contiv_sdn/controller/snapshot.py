"""Turn what Redis holds (plus what switches reported) into a compiler snapshot.

Pure: the store's ``snapshot()`` result and the switches' port maps in, a
:class:`~contiv_sdn.pipeline.state.Snapshot` out.  Records that are incomplete
(an endpoint whose network is gone, a host without a VTEP) are left out rather
than guessed at: the next change notification brings the missing half, and a
flow compiled from half a record would be wrong on the wire.

Records that are *wrong* — not JSON, not an object, a field of the wrong type
(``homingHost`` an object, ``netId`` a string), a number out of its range — are
refused before they become state: :func:`build_checked` leaves them out and
returns a :class:`Refusal` (kind, key, reason) for each, and the controller logs
each once.  The REST side no longer writes such records, but older versions,
other writers and hands on ``redis-cli`` can, and one of them must cost its own
flows only, never every switch's.  The fields read from each kind are declared
below as :class:`~contiv_sdn.model.shapes.Struct` shapes, so a refusal says what
was wrong in Go's words.
"""

from __future__ import annotations

import ipaddress
import sys
import zlib
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Set, Tuple

from contiv_sdn.model.decode import _kind, _type_error
from contiv_sdn.model.errors import DecodeError
from contiv_sdn.model.gojson import GoNumber
from contiv_sdn.model.shapes import ANY, BOOL, INT, STR, STR_LIST, STR_MAP, ListOf, MapOf, Struct, Type, loads
from contiv_sdn.pipeline import k8s as K8
from contiv_sdn.pipeline import servicelb as SL
from contiv_sdn.pipeline.flow import lowered
from contiv_sdn.pipeline.state import (
    Endpoint, GlobalCfg, Group, Host, Network, Rule, Service, Snapshot, Tenant, _frozen,
)

StoreData = Mapping[str, Mapping[str, Any]]

#: The store kinds :func:`build_snapshot` reads; a change to any other kind needs no run.
SNAPSHOT_KINDS = frozenset({"obj:global", "tenant", "obj:network", "network", "endpointGroup",
                            "host", "endpoint", "obj:endpointGroup", "obj:rule",
                            "k8sNamespace", "k8sNetworkPolicy", "serviceLB",
                            "k8sService", "k8sEndpointSlice"})


class _Uint64(Type):
    """A datapath id: Go's ``uint64``."""

    go = "uint64"

    def zero(self) -> int:
        return 0

    def decode(self, value: Any, current: Any, struct: str, path: List[str]) -> Any:
        if value is None:
            return current
        if isinstance(value, GoNumber) and value.text.isdigit() and int(value.text) < 1 << 64:
            return int(value.text)
        text = "number " + value.text if isinstance(value, GoNumber) else _kind(value)
        raise _type_error(text, self.go, struct, path)


UINT64: Type = _Uint64()

# The fields build_snapshot reads, per kind (everything else in a record is ignored).
GLOBAL_SHAPE = Struct("GlobalConfig", [("fwdMode", STR), ("arpMode", STR), ("networkInfraType", STR)])
TENANT_SHAPE = Struct("TenantState", [("vrfId", INT)])
NETWORK_CFG_SHAPE = Struct("NetworkConfig", [("encap", STR), ("subnet", STR), ("gateway", STR)])
NETWORK_SHAPE = Struct("NetworkState", [("netId", INT), ("encap", STR), ("vni", INT), ("vlan", INT),
                                        ("subnet", STR), ("gateway", STR)])
#: ``vlan``: the group's own VLAN (ACI mode; 0 or absent: the network's)
GROUP_SHAPE = Struct("EndpointGroupState", [("network", STR), ("epgId", INT), ("vlan", INT)])
HOST_SHAPE = Struct("HostState", [("vtepIP", STR), ("dpid", UINT64), ("tunnelPort", STR),
                                  ("uplinkPort", STR)])
GROUP_CFG_SHAPE = Struct("EndpointGroup", [("policies", STR_LIST)])
RULE_SHAPE = Struct("Rule", [("action", STR), ("direction", STR), ("fromEndpointGroup", STR),
                             ("fromIpAddress", STR), ("fromNetwork", STR), ("policyName", STR), ("port", INT),
                             ("priority", INT), ("protocol", STR), ("tenantName", STR),
                             ("toEndpointGroup", STR), ("toIpAddress", STR), ("toNetwork", STR)])
ENDPOINT_SHAPE = Struct("EndpointState", [("network", STR), ("ipAddress", STR), ("macAddress", STR),
                                          ("group", STR), ("homingHost", STR), ("intfName", STR)])
#: An endpoint record's Kubernetes fields (``drivers/kubernetes/objects.py``), checked
#: only when present (most endpoints are not pods).
ENDPOINT_K8S_SHAPE = Struct("EndpointK8s", [
    ("k8sNamespace", STR), ("labels", STR_MAP),
    ("namedPorts", MapOf(Struct("NamedPort", [("port", INT), ("protocol", STR)])))])
_EP_K8S_FIELDS = ("k8sNamespace", "labels", "namedPorts")
K8S_NAMESPACE_SHAPE = Struct("K8sNamespace", [("name", STR), ("labels", STR_MAP)])
#: ``spec`` is kept as the API gave it (ints exact) and checked by the NetworkPolicy parser.
K8S_NETPOL_SHAPE = Struct("K8sNetworkPolicy", [("namespace", STR), ("name", STR), ("uid", STR)])

#: A serviceLB's state record (``master/servicelb.py``: the VIP as allocated, ports
#: ``"80:8080:TCP"``, selectors as a map).  Providers are not stored: they are the
#: endpoints whose labels include every selector, decided here (``servicelb.py``).
SERVICE_SHAPE = Struct("ServiceLBState", [("tenant", STR), ("serviceName", STR), ("network", STR),
                                          ("ipAddress", STR), ("ports", STR_LIST), ("selectors", STR_MAP)])

#: A Kubernetes Service and EndpointSlice as the watcher writes them
#: (``drivers/kubernetes/objects.py``: ready endpoints only, ``targetPort`` a number or a name).
K8S_SERVICE_SHAPE = Struct("K8sService", [
    ("namespace", STR), ("name", STR), ("clusterIP", STR), ("headless", BOOL), ("type", STR),
    ("ports", ListOf(Struct("K8sServicePort", [("name", STR), ("port", INT), ("targetPort", ANY),
                                               ("protocol", STR), ("nodePort", INT)]))),
    ("sessionAffinity", STR), ("affinityTimeout", INT)])
K8S_SLICE_SHAPE = Struct("K8sEndpointSlice", [
    ("namespace", STR), ("name", STR), ("service", STR), ("addressType", STR),
    ("endpoints", ListOf(Struct("K8sSliceEndpoint", [("addresses", STR_LIST), ("pod", STR)]))),
    ("ports", ListOf(Struct("K8sSlicePort", [("name", STR), ("port", INT), ("protocol", STR)])))])

#: Ranges of the numbers (0 = not allocated yet: the record is incomplete, not wrong).
_RANGES: Dict[str, Tuple[int, int]] = {
    "vrfId": (0, 0xFFFF), "netId": (0, 0xFFFF), "epgId": (0, 0xFFFF),
    "vni": (0, 0xFFFFFF), "vlan": (0, 4095), "dpid": (0, (1 << 64) - 1),
    "port": (0, 0xFFFF), "priority": (0, 100),
}
_PY_TYPES = {STR: str, INT: int, UINT64: int, STR_LIST: list}


class Unparsable:
    """Stands in for a stored value that is not JSON at all (see :func:`parse_record`)."""

    __slots__ = ("reason", "digest")

    def __init__(self, reason: str, raw: str = "") -> None:
        self.reason = reason
        self.digest = zlib.crc32(raw.encode("utf-8", "surrogatepass"))

    def __repr__(self) -> str:
        return f"<not JSON {self.digest:08x}: {self.reason}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unparsable) and (self.reason, self.digest) == (other.reason, other.digest)

    def __hash__(self) -> int:
        return hash((self.reason, self.digest))


def parse_record(raw: str) -> Any:
    """A stored record's text as plain Python, strictly (Go's parser: no NaN, bounded
    depth); text that is not JSON becomes an :class:`Unparsable` for
    :func:`build_checked` to refuse, instead of an exception that would stop a run."""
    try:
        return loads(raw)
    except DecodeError as err:
        return Unparsable(str(err), raw)


class Refusal(NamedTuple):
    """A record left out because it is wrong: what, where and why, plus a fingerprint
    of the record (so a log can tell "still the same bad record" from "changed")."""

    kind: str
    key: str
    reason: str
    fingerprint: str


class Built(NamedTuple):
    snapshot: Snapshot
    refused: Tuple[Refusal, ...]


class _Refused(Exception):
    pass


def _plan(shape: Struct) -> Tuple[Tuple[Tuple[str, type, bool], ...], Tuple[Tuple[str, int, int], ...]]:
    """Per shape, once: (field, Python type, is int64) and (field, lo, hi) to check."""
    fields = tuple((name, _PY_TYPES[t], t is INT) for name, t in shape.fields.items())
    ranges = tuple((name, *_RANGES[name]) for name in shape.fields if name in _RANGES)
    return fields, ranges


_PLANS: Dict[int, Any] = {}


def _load(shape: Struct, record: Any) -> Mapping[str, Any]:
    """The declared fields of ``record``, type-checked; raises :class:`_Refused`.

    The common case (every field absent, null or of its exact type) costs a few
    ``isinstance``; anything else goes through the shape, which refuses it in Go's
    words.  The record itself is returned when it passes: nobody mutates it.
    """
    if isinstance(record, Unparsable):
        raise _Refused(f"not JSON ({record.reason})")
    if type(record) is dict:
        plan = _PLANS.get(id(shape))
        if plan is None:
            plan = _PLANS[id(shape)] = _plan(shape)
        fields, ranges = plan
        get = record.get
        for name, pytype, int64 in fields:
            v = get(name)
            if v is not None and (type(v) is not pytype or (int64 and not -(1 << 63) <= v < 1 << 63)
                                  or (pytype is list and any(type(x) is not str for x in v))):
                break
        else:
            for name, lo, hi in ranges:
                v = get(name)
                if v is not None and not lo <= v <= hi:
                    raise _Refused(f"{name} {v} out of range {lo}..{hi}")
            return record
    if isinstance(record, dict):
        record = {n: record[n] for n in shape.fields if n in record}
    try:
        shape.coerce(record)
    except DecodeError as err:
        raise _Refused(str(err)) from None
    raise _Refused(f"not a valid {shape.go_name}")  # unreachable: the fast path accepts what Go does


#: the shape of the fields :func:`build_checked` reads, per kind
SHAPE_OF: Dict[str, Struct] = {
    "obj:global": GLOBAL_SHAPE, "tenant": TENANT_SHAPE, "obj:network": NETWORK_CFG_SHAPE,
    "network": NETWORK_SHAPE, "endpointGroup": GROUP_SHAPE, "host": HOST_SHAPE, "endpoint": ENDPOINT_SHAPE,
    "obj:endpointGroup": GROUP_CFG_SHAPE, "obj:rule": RULE_SHAPE,
}


#: values of an endpoint record's fields that build as the field's absence (any field of the view)
_EMPTY = ({}, [], "", None)


def _filled(value: Any) -> Any:
    """``value``, or None when it is empty: an endpoint's empty field is seen as its
    absence, as :func:`mirrored` keeps it."""
    return None if value in _EMPTY else value


def read_view(kind: str, record: Any) -> Any:
    """What :func:`build_checked` can see of a stored record: two records with equal
    views give equal snapshots, so a change outside the view (a host's refresh time,
    a network's ``epCount``, an endpoint's labels) needs no compile at all."""
    shape = SHAPE_OF.get(kind)
    if shape is None or type(record) is not dict:
        return record
    get = record.get
    if kind == "serviceLB":
        return tuple(repr(get(name)) for name in SERVICE_SHAPE.fields)
    if kind == "endpoint":  # labels (providers, NetworkPolicy) and a pod's named ports
        return (tuple(_hashable(_filled(get(name))) for name in shape.fields)
                + tuple(repr(_filled(get(name))) for name in _EP_K8S_FIELDS))
    return tuple(_hashable(get(name)) for name in shape.fields)


#: the fields of an endpoint record that :func:`build_checked` reads (its view)
_EP_READ = tuple(ENDPOINT_SHAPE.fields) + _EP_K8S_FIELDS


def mirrored(kind: str, record: Any) -> Any:
    """What a controller's mirror keeps of a parsed stored record: for an endpoint, the
    fields of its view (:func:`read_view`) and nothing else, so ``build_checked`` sees
    the same.  A parsed record of the agent's was 2.3 KB (ids, container and tenant
    names, each key its own string); what is kept is ~0.5 KB: the keys are the
    shape's own strings, one per field name for all records, and the host, network
    and group names are interned (a few values shared by thousands of records)."""
    if kind != "endpoint" or type(record) is not dict:
        return record
    # an empty field is built as if absent ({} labels from every agent, "" group of an
    # endpoint in none): not kept, 80 bytes each and a dict of 5 fields is 88 less than of 6
    out = {name: record[name] for name in _EP_READ
           if name in record and record[name] not in _EMPTY}
    for name in ("network", "group", "homingHost"):
        v = out.get(name)
        if type(v) is str:
            out[name] = sys.intern(v)
    return out


def _hashable(v: Any) -> Any:
    return tuple(v) if type(v) is list else v


def _network_address(subnet: str) -> str:
    """``20.1.1.5-20.1.1.9/24`` or ``20.1.1.0/24`` -> ``20.1.1.0/24``."""
    addr, _, plen = subnet.partition("/")
    addr = addr.split("-")[0]
    return str(ipaddress.IPv4Network(f"{addr}/{plen}", strict=False))


def _pair_key(key: str, what: str) -> Tuple[str, str]:
    tenant, sep, name = key.partition(":")
    if not (sep and tenant and name):
        raise _Refused(f"key {key!r} is not <tenant>:<{what}>")
    return tenant, name


def _k8s_coerce(shape: Struct, record: Any) -> Mapping[str, Any]:
    """A K8s record's declared fields decoded (Go's words on a wrong type); raises
    :class:`_Refused`."""
    if isinstance(record, Unparsable):
        raise _Refused(f"not JSON ({record.reason})")
    if not isinstance(record, dict):
        raise _Refused(f"not a JSON object: cannot be a {shape.go_name}")
    try:
        return shape.coerce({n: record[n] for n in shape.fields if n in record})
    except DecodeError as err:
        raise _Refused(str(err)) from None


def _ipv4_or_refuse(value: str, field: str) -> str:
    """A VIP in its canonical form ("" stays ""), or a refusal naming the field."""
    if not value:
        return value
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise _Refused(f"{field} {value!r} is not an IPv4 address") from None


def build_snapshot(revision: int, data: StoreData,
                   ports_by_dpid: Mapping[int, Mapping[str, int]]) -> Snapshot:
    """The compiler's input; wrong records are left out (see :func:`build_checked`)."""
    return build_checked(revision, data, ports_by_dpid).snapshot


def build_checked(revision: int, data: StoreData,
                  ports_by_dpid: Mapping[int, Mapping[str, int]]) -> Built:
    """The compiler's input and the records refused on the way (pure: nothing is logged)."""
    return SnapshotBuilder().build(revision, data, ports_by_dpid)


_GONE = object()


def _same_values(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Same keys, each to the very same object (the builder's outputs are reused)."""
    return len(a) == len(b) and all(b.get(k, _GONE) is v for k, v in a.items())


class SnapshotBuilder:
    """:func:`build_checked` that remembers what it built, for a controller that builds
    a snapshot per change.

    Why: rebuilding every record's state object per compile cost O(records) — at 100
    switches x 2,000 endpoints over a quarter of the controller's CPU per change, and
    new objects that the engine then had to compare field by field.  Here a record's
    object is built again only when its inputs changed: the stored record (the
    controller's mirror replaces a record object only when Redis changed it, so
    identity is the test) and the objects it refers to (an endpoint's network and
    group, a network's tenant and configuration, a host's port map).  Unchanged
    records keep their objects, so the engine's diff sees ``is`` and moves on.  The
    output equals a fresh build of the same data, always (a test holds it to that);
    a record refused stays refused with the same reason.
    """

    def __init__(self) -> None:
        #: kind -> key -> (inputs compared by identity, output object or None, refusals);
        #: for endpoints a flat (record, network, group, Endpoint or None, labels, refusals)
        self._memo: Dict[str, Dict[str, Tuple[Any, ...]]] = {}
        #: the last build's networks, groups, endpoints, labels and endpoint refusals
        self._last: Optional[Tuple[Dict, Dict, Dict, Dict, Dict]] = None

    def _cached(self, kind: str, key: str, inputs: Tuple[Any, ...],
                make: Callable[[], Any], refused: List[Refusal]) -> Any:
        """``make()`` once per change of ``inputs``; its refusals replayed while cached."""
        table = self._memo.setdefault(kind, {})
        hit = table.get(key)
        if hit is not None and len(hit[0]) == len(inputs) and all(
                a is b for a, b in zip(hit[0], inputs)):
            refused.extend(hit[2])
            return hit[1]
        mark = len(refused)
        out = make()
        table[key] = (inputs, out, tuple(refused[mark:]))
        return out

    def _objects(self, kind: str, raw: Mapping[str, Any],
                 inputs: Callable[[str, Any], Tuple[Any, ...]],
                 make: Callable[[str, Any], Any], refused: List[Refusal]) -> Dict[str, Any]:
        """key -> object of every record of ``kind`` that makes one (None: left out),
        each made by ``make(key, record)`` once per change of ``inputs(key, record)``."""
        out: Dict[str, Any] = {}
        for key, rec in raw.items():
            obj = self._cached(kind, key, inputs(key, rec), lambda: make(key, rec), refused)
            if obj is not None:
                out[key] = obj
        self._forget_missing(kind, raw)
        return out

    def _forget_missing(self, kind: str, present: Mapping[str, Any]) -> None:
        table = self._memo.get(kind)
        if table and len(table) > len(present):
            for key in [k for k in table if k not in present]:
                del table[key]

    def build(self, revision: int, data: StoreData,
              ports_by_dpid: Mapping[int, Mapping[str, int]],
              changed: Optional[Set[Tuple[str, str]]] = None) -> Built:
        """The snapshot of ``data``.  ``changed``: the (kind, key) of every record whose
        object was replaced, added or removed since the previous call (None: unknown);
        with it, and networks and groups unchanged, only those endpoints are looked at."""
        refused: List[Refusal] = []

        def refuse(kind: str, key: str, record: Any, reason: str) -> None:
            refused.append(Refusal(kind, key, reason, repr(record)))

        def load(kind: str, key: str, shape: Struct, record: Any) -> Optional[Mapping[str, Any]]:
            try:
                return _load(shape, record)
            except _Refused as err:
                refuse(kind, key, record, str(err))
                return None

        g: Mapping[str, Any] = {}
        record = data.get("obj:global", {}).get("global")
        if record is not None:
            try:
                g = _load(GLOBAL_SHAPE, record)
            except _Refused as err:  # defaults meanwhile; the controller holds every switch
                refuse("obj:global", "global", record, str(err))
        global_cfg = GlobalCfg(fwd_mode=g.get("fwdMode") or "bridge",
                               arp_mode=g.get("arpMode") or "proxy",
                               aci=g.get("networkInfraType") == "aci")

        def tenant(name: str, rec: Any) -> Optional[Tenant]:
            st = load("tenant", name, TENANT_SHAPE, rec)
            return Tenant(name=name, vrf_id=st["vrfId"]) if st and st.get("vrfId") else None

        def loaded(kind: str, shape: Struct) -> Dict[str, Mapping[str, Any]]:
            """The records of ``kind`` that fit ``shape`` (the others refused)."""
            out = {}
            for key, rec in data.get(kind, {}).items():
                cfg = load(kind, key, shape, rec)
                if cfg is not None:
                    out[key] = cfg
            return out

        tenants: Dict[str, Tenant] = self._objects(
            "tenant", data.get("tenant", {}), lambda name, rec: (rec,), tenant, refused)
        net_cfgs = loaded("obj:network", NETWORK_CFG_SHAPE)

        def network(key: str, rec: Any, cfg: Any) -> Optional[Network]:
            st = load("network", key, NETWORK_SHAPE, rec)
            if st is None:
                return None
            try:
                tenant, name = _pair_key(key, "network")
                if cfg is None or tenant not in tenants or not st.get("netId"):
                    return None
                encap = st.get("encap") or cfg.get("encap") or "vxlan"
                tag = (st.get("vni") or 0) if encap == "vxlan" else (st.get("vlan") or 0)
                try:
                    subnet = _network_address(st.get("subnet") or cfg.get("subnet") or "")
                except ValueError as err:
                    raise _Refused(f"unusable subnet ({err})") from None
            except _Refused as err:
                refuse("network", key, st, str(err))
                return None
            return Network(
                key=key, tenant=tenant, name=name, encap=encap, pkt_tag=tag,
                net_id=st["netId"], subnet=subnet,
                gateway=st.get("gateway") or cfg.get("gateway") or "",
            )

        networks: Dict[str, Network] = self._objects(
            "network", data.get("network", {}),
            lambda key, rec: (rec, net_cfgs.get(key), tenants.get(key.partition(":")[0])),
            lambda key, rec: network(key, rec, net_cfgs.get(key)), refused)
        group_cfgs = loaded("obj:endpointGroup", GROUP_CFG_SHAPE)

        def group(key: str, rec: Any, cfg: Any) -> Optional[Group]:
            st = load("endpointGroup", key, GROUP_SHAPE, rec)
            if st is None:
                return None
            net = st.get("network")
            if net not in networks or not st.get("epgId"):
                return None
            tenant = key.split(":", 1)[0]
            policies = tuple(sorted({f"{tenant}:{p}" for p in (cfg or {}).get("policies") or ()}))
            return Group(key=key, tenant=tenant, network=net, epg_id=st["epgId"], policies=policies,
                         vlan=st.get("vlan") or 0)

        def group_inputs(key: str, rec: Any) -> Tuple[Any, ...]:
            net = rec.get("network") if type(rec) is dict else None
            return rec, group_cfgs.get(key), networks.get(net) if type(net) is str else None

        groups: Dict[str, Group] = self._objects(
            "endpointGroup", data.get("endpointGroup", {}), group_inputs,
            lambda key, rec: group(key, rec, group_cfgs.get(key)), refused)

        def rule(key: str, rec: Any) -> Optional[Rule]:
            r = load("obj:rule", key, RULE_SHAPE, rec)
            if r is None:
                return None
            try:
                tenant, name = _pair_key(key, "policy:ruleId")
                if not r.get("policyName"):
                    raise _Refused("no policyName")
            except _Refused as err:
                refuse("obj:rule", key, r, str(err))
                return None
            return Rule(
                key=key, tenant=tenant, policy=f"{tenant}:{r['policyName']}",
                direction=r.get("direction") or "", action=r.get("action") or "",
                priority=r.get("priority") or 1, protocol=r.get("protocol") or "",
                port=r.get("port") or 0,
                from_group=r.get("fromEndpointGroup") or "", to_group=r.get("toEndpointGroup") or "",
                from_network=r.get("fromNetwork") or "", to_network=r.get("toNetwork") or "",
                from_ip=r.get("fromIpAddress") or "", to_ip=r.get("toIpAddress") or "",
            )

        rules: Dict[str, Rule] = self._objects(
            "obj:rule", data.get("obj:rule", {}), lambda key, rec: (rec,), rule, refused)

        def host(name: str, rec: Any, ports: Mapping[str, int]) -> Optional[Host]:
            st = load("host", name, HOST_SHAPE, rec)
            if st is None or not st.get("vtepIP") or not st.get("dpid"):
                return None
            return Host(
                name=name, dpid=st["dpid"], vtep_ip=st["vtepIP"], ports=_frozen(ports),
                tunnel_port=st.get("tunnelPort") or "vxlan0",
                uplink_port=st.get("uplinkPort") or None,
            )

        hosts: Dict[str, Host] = {}
        raw_hosts = data.get("host", {})
        host_memo = self._memo.setdefault("host", {})
        for name, rec in raw_hosts.items():
            dpid = rec.get("dpid") if type(rec) is dict else None
            ports = ports_by_dpid.get(dpid, {}) if type(dpid) is int else {}
            hit = host_memo.get(name)
            if hit is not None and hit[0][0] is rec and hit[0][1] == ports:
                # the port map is compared by value: the controller copies it per run
                refused.extend(hit[2])
                h = hit[1]
            else:
                mark = len(refused)
                h = host(name, rec, ports)
                host_memo[name] = ((rec, dict(ports)), h, tuple(refused[mark:]))
            if h is not None:
                hosts[name] = h
        self._forget_missing("host", raw_hosts)

        namespaces: Dict[str, K8.K8sNamespace] = {}
        for name, rec in data.get("k8sNamespace", {}).items():
            try:
                ns = _k8s_coerce(K8S_NAMESPACE_SHAPE, rec)
                if ns["name"] and ns["name"] != name:
                    raise _Refused(f"name {ns['name']!r} is not its key")
            except _Refused as err:
                refuse("k8sNamespace", name, rec, str(err))
                continue
            namespaces[name] = K8.K8sNamespace(name, tuple(sorted(ns["labels"].items())))

        policies: Dict[str, K8.K8sPolicy] = {}
        for key, rec in data.get("k8sNetworkPolicy", {}).items():
            try:
                pol = _k8s_coerce(K8S_NETPOL_SHAPE, rec)
                if key != f"{pol['namespace']}/{pol['name']}" or not pol["namespace"] or not pol["name"]:
                    raise _Refused("key is not <namespace>/<name> of the record")
                spec = rec.get("spec")
                if spec is None:
                    spec = {}
                text = K8.spec_text(spec)
                K8.parse_policy(pol["namespace"], pol["name"], text)  # refused here, not in the compiler
            except _Refused as err:
                refuse("k8sNetworkPolicy", key, rec, str(err))
                continue
            except K8.NP.NetpolError as err:
                refuse("k8sNetworkPolicy", key, rec, str(err))
                continue
            policies[key] = K8.K8sPolicy(key, pol["namespace"], pol["name"], text)

        def endpoint(eid: str, rec: Any) -> Optional[Tuple[Endpoint, Optional[Mapping[str, str]]]]:
            """The endpoint and its labels (None: no labels), or None when left out."""
            st = load("endpoint", eid, ENDPOINT_SHAPE, rec)
            if st is None:
                return None
            net = st.get("network")
            if net not in networks or not st.get("ipAddress") or not st.get("macAddress"):
                return None
            pod = None
            labels = None
            if any(st.get(f) is not None for f in _EP_K8S_FIELDS):
                try:
                    k = _k8s_coerce(ENDPOINT_K8S_SHAPE, st)
                except _Refused as err:
                    refuse("endpoint", eid, st, str(err))
                    return None
                if k["labels"]:
                    labels = k["labels"]
                if k["k8sNamespace"]:
                    pod = K8.NP.pod_key(k["k8sNamespace"], k["labels"], k["namedPorts"])
            group = st.get("group") or None
            epg_id = groups[group].epg_id if group in groups else 0
            return Endpoint(
                id=eid, host=st.get("homingHost") or "", network=net,
                ip=st["ipAddress"].split("/")[0], mac=lowered(st["macAddress"]),
                port=st.get("intfName") or "", group=group if group in groups else None,
                epg_id=epg_id,
                **({} if pod is None else {"k8s_namespace": pod.namespace, "labels": pod.labels,
                                           "named_ports": pod.named_ports}),
            ), labels

        raw_endpoints = data.get("endpoint", {})
        ep_memo = self._memo.setdefault("endpoint", {})

        def one(eid: str, rec: Any) -> Any:
            """The memoized (Endpoint, labels) of one record, or None; its refusals."""
            if type(rec) is dict:
                net = rec.get("network")
                net_obj = networks.get(net) if type(net) is str else None
                grp = rec.get("group")
                grp_obj = groups.get(grp) if type(grp) is str else None
            else:
                net_obj = grp_obj = None
            hit = ep_memo.get(eid)
            if hit is not None and hit[0] is rec and hit[1] is net_obj and hit[2] is grp_obj:
                return (None if hit[3] is None else (hit[3], hit[4])), hit[5]
            mark = len(refused)
            out = endpoint(eid, rec)
            why = tuple(refused[mark:])
            del refused[mark:]
            # one flat tuple per endpoint (inputs, Endpoint, labels, refusals): the nested
            # form was 120 bytes more per endpoint, 1.2 MB at 10k endpoints
            ep_memo[eid] = ((rec, net_obj, grp_obj, None, None, why) if out is None
                            else (rec, net_obj, grp_obj, out[0], out[1], why))
            return out, why

        last = self._last
        endpoints: Dict[str, Endpoint]
        labels_of: Dict[str, Tuple[str, Mapping[str, str]]]   # id -> (tenant, labels)
        ep_refused: Dict[str, Tuple[Refusal, ...]]
        if (changed is not None and last is not None and _same_values(last[0], networks)
                and _same_values(last[1], groups)):
            # only endpoint records changed what endpoints depend on: patch the last set
            endpoints, labels_of, ep_refused = dict(last[2]), dict(last[3]), dict(last[4])
            for kind, eid in changed:
                if kind != "endpoint":
                    continue
                endpoints.pop(eid, None)
                labels_of.pop(eid, None)
                ep_refused.pop(eid, None)
                rec = raw_endpoints.get(eid, _GONE)
                if rec is _GONE:
                    ep_memo.pop(eid, None)
                    continue
                out, why = one(eid, rec)
                if why:
                    ep_refused[eid] = why
                if out is not None:
                    endpoints[eid] = out[0]
                    if out[1] is not None:
                        labels_of[eid] = (networks[out[0].network].tenant, out[1])
        else:
            endpoints, labels_of, ep_refused = {}, {}, {}
            for eid, rec in raw_endpoints.items():
                out, why = one(eid, rec)
                if why:
                    ep_refused[eid] = why
                if out is not None:
                    endpoints[eid] = out[0]
                    if out[1] is not None:
                        labels_of[eid] = (networks[out[0].network].tenant, out[1])
            self._forget_missing("endpoint", raw_endpoints)
        for why in ep_refused.values():
            refused.extend(why)
        self._last = (networks, groups, endpoints, labels_of, ep_refused)
        #: (id, tenant, labels) of every endpoint with labels: the providers' candidates
        labelled: List[Tuple[str, str, Mapping[str, str]]] = (
            [(eid, t, lab) for eid, (t, lab) in labels_of.items()] if data.get("serviceLB") else [])

        services = _services(data, networks, labelled, refuse)
        services.update(_k8s_services(data, networks, endpoints, refuse))

        snap = Snapshot(
            revision=revision, global_cfg=global_cfg, tenants=_frozen(tenants),
            networks=_frozen(networks), groups=_frozen(groups), hosts=_frozen(hosts),
            endpoints=_frozen(endpoints), rules=_frozen(rules),
            k8s_namespaces=_frozen(namespaces), k8s_policies=_frozen(policies),
            services=_frozen(services),
        )
        return Built(snap, tuple(refused))


def _services(data: StoreData, networks: Mapping[str, Network],
              labelled: List[Tuple[str, str, Mapping[str, str]]], refuse: Any) -> Dict[str, Service]:
    """The serviceLB records as :class:`Service` s with their providers (one rule:
    ``servicelb.resolve_providers``).  A service whose network is unknown or whose VIP
    is not allocated yet is left out (incomplete); a wrong one is refused."""
    parsed: Dict[str, Tuple[str, str, str, Tuple[Tuple[int, int, int], ...], Dict[str, str]]] = {}
    for key, rec in data.get("serviceLB", {}).items():
        try:
            st = _k8s_coerce(SERVICE_SHAPE, rec)
            tenant, _name = _pair_key(key, "service")
            if st["tenant"] and st["tenant"] != tenant:
                raise _Refused(f"tenant {st['tenant']!r} is not its key's")
            net = st["network"] or f"{tenant}:{st.get('networkName') or ''}"
            vip = _ipv4_or_refuse(st["ipAddress"], "ipAddress")
            try:
                ports = tuple(sorted({SL.parse_port_spec(p) for p in st["ports"]}))
            except ValueError as err:
                raise _Refused(str(err)) from None
        except _Refused as err:
            refuse("serviceLB", key, rec, str(err))
            continue
        if not vip or net not in networks:
            continue
        parsed[key] = (tenant, net, vip, ports, dict(st["selectors"]))
    provs = SL.resolve_providers({k: (v[0], v[4]) for k, v in parsed.items()}, labelled)
    return {k: Service(k, t, net, vip, ports, tuple(sorted(sel.items())), provs[k])
            for k, (t, net, vip, ports, sel) in parsed.items()}


def _k8s_services(data: StoreData, networks: Mapping[str, Network], endpoints: Mapping[str, Endpoint],
                  refuse: Any) -> Dict[str, Service]:
    """Kubernetes Services with their EndpointSlices as :class:`Service` s (key
    ``k8s/<namespace>/<name>``: no colon, so never a serviceLB's ``tenant:name``).

    Providers: the ready addresses of the Service's slices, each the endpoint with that
    address (the one of a pod in the Service's namespace first, when tenants overlap);
    the target port of a Service port is the slice's port of the same name and
    protocol (a named ``targetPort`` is resolved there, per slice), else a numeric
    ``targetPort``.  A Service is served in one tenant, its providers' (the one most
    of them are in): a ClusterIP is a Contiv VIP in that tenant's VRF, so clients in
    other tenants do not reach it, as they reach no pod of that tenant.  Headless
    Services, ExternalName ones, ones without a clusterIP yet or without any ready
    provider compile to nothing (no VIP, no flows)."""
    by_ip: Dict[str, List[Endpoint]] = {}
    if data.get("k8sService"):  # O(endpoints): only when there is a Service to serve
        for ep in endpoints.values():
            by_ip.setdefault(ep.ip, []).append(ep)
    slices: Dict[Tuple[str, str], List[Mapping[str, Any]]] = {}
    for key, rec in sorted(data.get("k8sEndpointSlice", {}).items()):
        try:
            sl = _k8s_coerce(K8S_SLICE_SHAPE, rec)
            if key != f"{sl['namespace']}/{sl['name']}" or not sl["namespace"] or not sl["name"]:
                raise _Refused("key is not <namespace>/<name> of the record")
        except _Refused as err:
            refuse("k8sEndpointSlice", key, rec, str(err))
            continue
        if sl["service"] and sl["addressType"] in ("", "IPv4"):
            slices.setdefault((sl["namespace"], sl["service"]), []).append(sl)
    out: Dict[str, Service] = {}
    for key, rec in sorted(data.get("k8sService", {}).items()):
        try:
            svc = _k8s_coerce(K8S_SERVICE_SHAPE, rec)
            ns, name = svc["namespace"], svc["name"]
            if key != f"{ns}/{name}" or not ns or not name:
                raise _Refused("key is not <namespace>/<name> of the record")
            ports: List[Tuple[int, int, Any, str]] = []
            for p, raw in zip(svc["ports"], rec["ports"]):
                proto = SL.PROTO.get((p["protocol"] or "TCP").lower())
                if proto is None:
                    raise _Refused(f"port {p['name'] or p['port']}: protocol {p['protocol']!r} is not "
                                   "TCP, UDP or SCTP")
                if not 0 < p["port"] < 65536:
                    raise _Refused(f"port {p['port']} out of range 1..65535")
                tp = raw.get("targetPort")  # IntOrString: the plain value (ANY decodes numbers as float)
                if isinstance(tp, bool) or not isinstance(tp, (int, str)):
                    raise _Refused(f"port {p['port']}: targetPort must be a number or a port name")
                ports.append((p["port"], proto, tp, p["name"]))
            vip = _ipv4_or_refuse(svc["clusterIP"], "clusterIP")
        except _Refused as err:
            refuse("k8sService", key, rec, str(err))
            continue
        if not vip or svc["headless"] or svc["type"] == "ExternalName" or not ports:
            continue
        per_port: Dict[Tuple[int, int], set] = {}
        for port, proto, tp, pname in ports:
            got = per_port.setdefault((port, proto), set())
            for sl in slices.get((ns, name), ()):
                target = next((sp["port"] for sp in sl["ports"]
                               if sp["name"] == pname and SL.PROTO.get(sp["protocol"].lower() or "tcp") == proto
                               and sp["port"]), None)
                if target is None and isinstance(tp, int):
                    target = tp
                if target is None or not 0 < target < 65536:
                    continue
                for e in sl["endpoints"]:
                    for addr in e["addresses"]:
                        cands = by_ip.get(addr.split("/")[0], ())
                        if cands:
                            best = min(cands, key=lambda c: (c.k8s_namespace != ns, c.id))
                            got.add((best.id, target))
        tenants: Dict[str, int] = {}
        for eps in per_port.values():
            for eid, _t in eps:
                tenant = networks[endpoints[eid].network].tenant
                tenants[tenant] = tenants.get(tenant, 0) + 1
        if not tenants:
            continue
        tenant = min(tenants, key=lambda t: (-tenants[t], t))
        pp = tuple(sorted((pk, tuple(sorted((e, t) for e, t in eps
                                            if networks[endpoints[e].network].tenant == tenant)))
                          for pk, eps in per_port.items()))
        ids = tuple(sorted({e for _pk, eps in pp for e, _t in eps}))
        skey = f"k8s/{ns}/{name}"
        out[skey] = Service(skey, tenant, endpoints[ids[0]].network, vip,
                            tuple(sorted((port, 0, proto) for port, proto in per_port)), (), ids, pp,
                            (svc["affinityTimeout"] or 10800) if svc["sessionAffinity"] == "ClientIP" else 0)
    return out


__all__ = ["SNAPSHOT_KINDS", "Built", "Refusal", "SnapshotBuilder", "Unparsable", "build_checked",
           "build_snapshot", "parse_record", "read_view"]
