"""The state snapshot the flow compiler reads: plain frozen data, no I/O.

The controller builds a :class:`Snapshot` from Redis (intent, allocations,
hosts, endpoints) plus what each switch reported (port name -> OpenFlow port
number), and hands it to the compiler.  Everything here is hashable and
immutable so that compilation is a pure function and results can be cached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping, Optional, Tuple

ROUTER_MAC = "00:00:11:11:11:11"  # Contiv's gateway/router MAC, kept for compatibility.
#: The MAC of the agent's DNS ports' peers (it only ever meets br-int's flows).
DNS_MAC = "02:00:00:00:00:53"
#: The agent's DNS serving port of a VRF is ``cdns<vrfId>`` (``contiv_sdn.agent.dnsport``);
#: flows to it exist only while the switch has it.
DNS_PORT_PREFIX = "cdns"


def dns_port_name(vrf: int) -> str:
    return f"{DNS_PORT_PREFIX}{vrf}"


def _frozen(d: Optional[Mapping] = None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class GlobalCfg:
    fwd_mode: str = "bridge"  # "bridge" | "routing"
    arp_mode: str = "proxy"  # "proxy" | "flood"
    #: ACI mode (global ``networkInfraType`` "aci"): the fabric enforces group policy,
    #: so OVS compiles no group rule flows (as Contiv's ``isPolicyEnabled`` false)
    aci: bool = False


@dataclass(frozen=True)
class Tenant:
    name: str
    vrf_id: int  # 1..65535, allocated persistently by the store


@dataclass(frozen=True)
class Network:
    key: str  # "tenant:name"
    tenant: str
    name: str
    encap: str  # "vxlan" | "vlan"
    pkt_tag: int  # VNI for vxlan, VLAN id on the uplink for vlan
    net_id: int  # 1..65535, unique per network, allocated persistently (register value)
    subnet: str  # "20.1.1.0/24" (network address form)
    gateway: str = ""  # "" when none
    mtu: int = 1450  # container MTU (underlay MTU minus VXLAN overhead for vxlan)


@dataclass(frozen=True)
class Group:
    key: str  # "tenant:group"
    tenant: str
    network: str  # network key
    epg_id: int  # 1..65535, persistent
    #: attached policies, as "tenant:policy" keys (their rules combine)
    policies: Tuple[str, ...] = ()
    #: the group's own VLAN on the uplink (ACI mode: one per group from the VLAN pool,
    #: so the fabric can tell groups apart); 0 = the network's tag
    vlan: int = 0


@dataclass(frozen=True)
class Rule:
    """A policy rule as configured (Contiv's ``Rule`` object); see ``pipeline/policy.py``."""

    key: str  # "tenant:policy:ruleId"
    tenant: str
    policy: str  # policy key "tenant:policy"
    direction: str  # "in" | "out"
    action: str  # "allow" | "deny"
    priority: int = 1  # 1..100, higher wins
    protocol: str = ""  # "tcp" | "udp" | "icmp" | "igmp" | a number | "" (any)
    port: int = 0  # 0 = any
    from_group: str = ""  # group names (within the tenant)
    to_group: str = ""
    from_network: str = ""  # network names (within the tenant)
    to_network: str = ""
    from_ip: str = ""  # "a.b.c.d", "a.b.c.d-N" (last octet range) or "a.b.c.d/len"
    to_ip: str = ""


@dataclass(frozen=True)
class Host:
    name: str
    dpid: int
    vtep_ip: str
    #: OVS port name -> OpenFlow port number, as the switch reported it.
    ports: Mapping[str, int] = field(default_factory=_frozen)
    tunnel_port: str = "vxlan0"
    uplink_port: Optional[str] = None  # for vlan encapsulation


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: str
    host: str
    network: str  # network key
    ip: str
    mac: str
    port: str  # OVS port name on the host's br-int
    group: Optional[str] = None  # group key
    epg_id: int = 0  # 0 = no group
    #: a Kubernetes pod's namespace ("" = not a pod), its labels (sorted pairs, the CNI
    #: plugin's own left out) and named container ports (sorted (name, protocol, port))
    k8s_namespace: str = ""
    labels: Tuple[Tuple[str, str], ...] = ()
    named_ports: Tuple[Tuple[str, str, int], ...] = ()


@dataclass(frozen=True)
class Service:
    """A load-balanced service (Contiv's serviceLB) with its providers resolved
    (``pipeline/servicelb.py``: endpoints of the tenant whose labels include every
    selector, decided when the snapshot is built)."""

    key: str  # "tenant:service"
    tenant: str
    network: str  # network key holding the VIP
    vip: str
    ports: Tuple[Tuple[int, int, int], ...] = ()  # (service port, provider port, IP protocol)
    selectors: Tuple[Tuple[str, str], ...] = ()
    providers: Tuple[str, ...] = ()  # endpoint ids, sorted
    #: A Kubernetes Service (``drivers/kubernetes``): per (service port, protocol) its
    #: providers, each with its own target port (EndpointSlices resolve a named
    #: targetPort per slice): ``(((port, proto), ((endpoint id, target), ...)), ...)``.
    #: When set, ``ports`` hold (port, 0, proto) and ``providers`` the union of the ids.
    port_providers: Tuple[Tuple[Tuple[int, int], Tuple[Tuple[str, int], ...]], ...] = ()
    #: ClientIP session affinity: its timeout in seconds (0: no affinity)
    affinity_timeout: int = 0


@dataclass(frozen=True)
class Snapshot:
    revision: int = 0
    global_cfg: GlobalCfg = GlobalCfg()
    tenants: Mapping[str, Tenant] = field(default_factory=_frozen)
    networks: Mapping[str, Network] = field(default_factory=_frozen)
    groups: Mapping[str, Group] = field(default_factory=_frozen)
    hosts: Mapping[str, Host] = field(default_factory=_frozen)
    endpoints: Mapping[str, Endpoint] = field(default_factory=_frozen)
    rules: Mapping[str, Rule] = field(default_factory=_frozen)
    #: Kubernetes: namespace name -> ``k8s.K8sNamespace``; "ns/name" -> ``k8s.K8sPolicy``
    k8s_namespaces: Mapping[str, object] = field(default_factory=_frozen)
    k8s_policies: Mapping[str, object] = field(default_factory=_frozen)
    #: serviceLB key "tenant:name" -> :class:`Service`
    services: Mapping[str, Service] = field(default_factory=_frozen)
