"""The table layout of ``br-int`` and the register contract, in one place.

Every flow the compiler emits is checked against these declarations (what each
table may match, set, do and jump to), the way Faucet types its pipeline: a flow
that would silently mis-program a switch fails at compile time instead.  The
checks also cover what OVS itself would reject (match prerequisites, set-field
prerequisites, forward-only gotos), so a flow that passes here installs.

Pipeline (a packet walks the tables in this order; a table miss drops, because
the bridge is ``fail_mode=secure`` and no table holds a catch-all but the ones
documented below)::

    0  CLASSIFY  in_port (+ VNI / VLAN tag for tunnel / uplink) -> VRF, network,
                 source EPG, REMOTE flag; pops the uplink VLAN tag.  DNS
                 answers from a VRF's DNS port (``cdns<vrf>``) go straight to
                 the local endpoint by destination IP; anything else from a DNS
                 port is dropped (table miss).
    10 SOURCE    anti-spoofing for local ports (in_port + eth_src + IPv4/ARP
                 source address); for remote traffic, the source EPG by source
                 MAC (bridged) or source IP within the VRF (routed).  A local
                 endpoint's UDP/TCP to port 53 (any destination) leaves here for
                 its VRF's DNS port: before policy, so no ``out`` rule can cut a
                 container off its names.
    20 ARP       proxy-ARP responder (and the gateway's ARP in routing mode);
                 drops unanswered ARP requests unless ARP flooding is on.
    25..29 SVC   service load balancing (only while a service exists; see
                 ``servicelb.py``): hairpin un-SNAT, conntrack NAT in the VRF's
                 zone, new connections to a VIP:port to its select group (DNAT to
                 a provider, committed with the service's ct_mark), then the
                 provider's MAC and network.  ARP sends IPv4 of a network with
                 services here instead of L3.
    22..24 AFF   ClientIP affinity, reached only by resubmit from 27 (and from a
                 group bucket): learn a client's pin, the learned pins (idle
                 timeout, not our cookie), the pinned provider's DNAT.
    30 L3        routing mode: packets to ROUTER_MAC for an endpoint of the VRF
                 are rewritten (MACs, TTL) and moved to the destination network.
    40 L2        destination lookup by (network, eth_dst): destination EPG, the
                 output decision in REG_OUT, tunnel metadata for remote hosts.
    45..48 K8S   Kubernetes NetworkPolicy (only while one exists; L2 then goes
                 here instead of POLICY): conntrack lookup (no commit), replies
                 pass, egress of the source identity (REG_SRC_ID), ingress of
                 the destination identity (REG_DST_ID); see ``k8s.py``.
    50 POLICY    IPv4 unicast enters conntrack in its tenant's zone (REG_VRF's
                 value, one flow per network); the rest goes on unjudged.
    51 POLICY_CT after conntrack: invalid dropped, replies/related pass, the
                 rest is judged (52 from a local port, 53 from remote).
    52 POLICY_OUT ``out`` rules of the source group (REG_SRC_EPG).
    53 POLICY_IN ``in`` rules of the destination group (REG_DST_EPG), unless
                 the packet leaves for another host (judged there).
    54 POLICY_COMMIT allowed: ct(commit) in the zone, then OUTPUT.
                 (see ``policy.py`` for the semantics and the flow formula)
    60 OUTPUT    acts on REG_OUT: a local port, the tunnel, the uplink (push
                 the VLAN), or the network's flood list.  Never sends traffic
                 that came from a tunnel/uplink back to a tunnel/uplink.  A
                 group with its own VLAN (ACI mode) leaves on the uplink with
                 that VLAN: its flows match the source group (REG_SRC_EPG).

Table ids leave gaps so later issues can insert tables without renumbering.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import FrozenSet, Mapping, Optional, Tuple

from .flow import COOKIE_MARK, COOKIE_MASK, OFPP_CONTROLLER, OFPP_IN_PORT, Flow, _canon_value

# --------------------------------------------------------------------------
# Registers.  Every value is at most 16 bits except REG_OUT; all of them are
# full 32-bit NXM registers, so EPG ids up to 65535 fit without packing.
# --------------------------------------------------------------------------
REG_VRF = "reg0"  #: tenant VRF id (Tenant.vrf_id); a natural conntrack zone.
REG_NET = "reg1"  #: network id (Network.net_id); every L2 lookup is keyed by it.
REG_SRC_EPG = "reg2"  #: source endpoint group id (Endpoint.epg_id), 0 = none.
REG_DST_EPG = "reg3"  #: destination endpoint group id, 0 = none / flood.
REG_FLAGS = "reg4"  #: bit flags, see FLAG_*.
REG_OUT = "reg5"  #: output decision made by L2 for OUTPUT: an ofport or OUT_FLOOD.
REG_SRC_ID = "reg6"  #: source pod identity (Kubernetes NetworkPolicy, ``k8s.py``), 0 = not a pod.
REG_DST_ID = "reg7"  #: destination pod identity, 0 = not a pod.
#: ClientIP affinity: the provider address a client is pinned to, loaded by a learned
#: flow of :data:`SVC_AFF` (0 = not pinned); only tables SVC_CT..SVC_AFF_SEL read it.
REG_AFF = "reg8"

FLAG_REMOTE = 0x1  #: the packet entered from the tunnel or the uplink.
FLAG_HAIRPIN = 0x2  #: a provider reaching itself through its service's VIP: OUTPUT uses IN_PORT.
FLAG_HOST = 0x4  #: the packet entered from the host's own port (``hostaccess.py``).

OUT_FLOOD = 0xFFFFFFFB  #: REG_OUT value: replicate within the network.

OFPVID_PRESENT = 0x1000  #: OpenFlow 1.3 vlan_vid "a tag is present" bit.
OFPVID_NONE = 0x0000  #: vlan_vid match value for untagged frames.

#: OVS ct_state bits (for the policy stage and the simulator).
CT_NEW, CT_EST, CT_REL, CT_RPL, CT_INV, CT_TRK = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20

ETH_TYPE_IP = 0x0800
ETH_TYPE_ARP = 0x0806
ETH_TYPE_VLAN = 0x8100
ARP_REQUEST, ARP_REPLY = 1, 2

# --------------------------------------------------------------------------
# Tables.
# --------------------------------------------------------------------------
CLASSIFY = 0
SOURCE = 10
ARP = 20
#: ClientIP affinity (``servicelb.py``), reached by resubmit, not by goto:
#: SVC_AFF_LEARN (from a group bucket) learns the client's pin and starts its connection;
#: SVC_AFF holds only flows the switch learned itself (cookie without COOKIE_MARK);
#: SVC_AFF_SEL starts the pinned provider's connection or, unpinned, the group.
SVC_AFF_LEARN = 22
SVC_AFF = 23
SVC_AFF_SEL = 24
SVC = 25
SVC_VRF = 26
SVC_CT = 27
SVC_DST = 28
L3 = 30
L2 = 40
K8S = 45
K8S_CT = 46
K8S_EGRESS = 47
K8S_INGRESS = 48
POLICY = 50
POLICY_CT = 51
POLICY_OUT = 52
POLICY_IN = 53
POLICY_COMMIT = 54
OUTPUT = 60


@dataclass(frozen=True)
class FieldInfo:
    width: int
    kind: str  # "int" | "mac" | "ipv4"
    #: (field, value) pairs the match must contain to use this field (OVS prerequisites).
    prereq: Tuple[Tuple[str, int], ...] = ()


_IP = (("eth_type", ETH_TYPE_IP),)
_ARP = (("eth_type", ETH_TYPE_ARP),)

FIELDS: Mapping[str, FieldInfo] = {
    "in_port": FieldInfo(32, "int"),
    "eth_dst": FieldInfo(48, "mac"),
    "eth_src": FieldInfo(48, "mac"),
    "eth_type": FieldInfo(16, "int"),
    "vlan_vid": FieldInfo(13, "int"),
    "ip_proto": FieldInfo(8, "int", _IP),
    "ipv4_src": FieldInfo(32, "ipv4", _IP),
    "ipv4_dst": FieldInfo(32, "ipv4", _IP),
    "tcp_src": FieldInfo(16, "int", _IP + (("ip_proto", 6),)),
    "tcp_dst": FieldInfo(16, "int", _IP + (("ip_proto", 6),)),
    "udp_src": FieldInfo(16, "int", _IP + (("ip_proto", 17),)),
    "udp_dst": FieldInfo(16, "int", _IP + (("ip_proto", 17),)),
    "sctp_dst": FieldInfo(16, "int", _IP + (("ip_proto", 132),)),
    "icmpv4_type": FieldInfo(8, "int", _IP + (("ip_proto", 1),)),
    "icmpv4_code": FieldInfo(8, "int", _IP + (("ip_proto", 1),)),
    "arp_op": FieldInfo(16, "int", _ARP),
    "arp_spa": FieldInfo(32, "ipv4", _ARP),
    "arp_tpa": FieldInfo(32, "ipv4", _ARP),
    "arp_sha": FieldInfo(48, "mac", _ARP),
    "arp_tha": FieldInfo(48, "mac", _ARP),
    "tunnel_id": FieldInfo(64, "int"),
    "tun_ipv4_src": FieldInfo(32, "ipv4"),
    "tun_ipv4_dst": FieldInfo(32, "ipv4"),
    "metadata": FieldInfo(64, "int"),
    "ct_state": FieldInfo(32, "int"),
    "ct_zone": FieldInfo(16, "int"),
    "ct_mark": FieldInfo(32, "int"),
    **{f"reg{i}": FieldInfo(32, "int") for i in range(9)},
}

#: Fields that only exist in the pipeline, never on the wire of a container port.
METADATA_FIELDS = frozenset(
    ["in_port", "metadata", "tunnel_id", "tun_ipv4_src", "tun_ipv4_dst", "ct_state", "ct_zone", "ct_mark"]
    + [f"reg{i}" for i in range(9)]
)


@dataclass(frozen=True)
class TableSpec:
    """What a table may contain; anything else is a compiler bug."""

    id: int
    name: str
    match: FrozenSet[str]
    #: Match fields that may carry a mask.
    maskable: FrozenSet[str] = frozenset()
    #: Destinations of set_field / move.
    sets: FrozenSet[str] = frozenset()
    #: Action kinds (names from ``flow.ACTIONS``).
    actions: FrozenSet[str] = frozenset()
    #: Tables a goto may name (all greater than ``id``).
    goto: FrozenSet[int] = frozenset()
    #: Ports an output may name; ``None`` = any real port.
    outputs: Optional[FrozenSet[int]] = frozenset()
    #: ct(table=...) targets.
    ct_tables: FrozenSet[int] = frozenset()
    #: resubmit(,table) targets (any order: a resubmit returns).
    resubmit: FrozenSet[int] = frozenset()


_REGS_ID = frozenset([REG_VRF, REG_NET, REG_SRC_EPG, REG_DST_EPG, REG_FLAGS])
#: what a policy rule flow may match: the two group registers and the packet's
#: addresses (prefixes), protocol and destination port
_RULE_MATCH = frozenset([REG_SRC_EPG, REG_DST_EPG, "eth_type", "ip_proto", "ipv4_src", "ipv4_dst",
                         "tcp_dst", "udp_dst"])
_RULE_MASKABLE = frozenset(["ipv4_src", "ipv4_dst"])
#: what a K8s NetworkPolicy rule flow may match: identities, protocol, (ranges of) ports
_K8S_PORTS = frozenset(["tcp_dst", "udp_dst", "sctp_dst"])
_K8S_MATCH = frozenset([REG_SRC_ID, REG_DST_ID, "eth_type", "ip_proto"]) | _K8S_PORTS

TABLES: Mapping[int, TableSpec] = {
    t.id: t
    for t in (
        TableSpec(CLASSIFY, "classify",
                  match=frozenset(["in_port", "vlan_vid", "tunnel_id", "eth_type", "ipv4_dst"]),
                  sets=frozenset([REG_VRF, REG_NET, REG_SRC_EPG, REG_SRC_ID, REG_FLAGS, "eth_dst"]),
                  actions=frozenset(["set_field", "pop_vlan", "output"]),
                  goto=frozenset([SOURCE]),
                  outputs=None),
        TableSpec(SOURCE, "source",
                  match=frozenset(["in_port", "eth_src", "eth_type", "ipv4_src", "arp_spa", "arp_sha",
                                   "ip_proto", "udp_dst", "tcp_dst", REG_VRF, REG_NET, REG_FLAGS]),
                  maskable=frozenset([REG_FLAGS]),
                  sets=frozenset([REG_SRC_EPG, REG_SRC_ID, "eth_dst"]),
                  actions=frozenset(["set_field", "output"]),
                  goto=frozenset([ARP]),
                  outputs=None),
        TableSpec(ARP, "arp",
                  match=frozenset(["in_port", "eth_type", "arp_op", "arp_tpa", REG_NET, REG_FLAGS]),
                  maskable=frozenset([REG_FLAGS]),
                  sets=frozenset(["eth_src", "eth_dst", "arp_op", "arp_sha", "arp_spa", "arp_tha", "arp_tpa"]),
                  actions=frozenset(["set_field", "move", "output"]),
                  goto=frozenset([SVC, L3]),
                  outputs=frozenset([OFPP_IN_PORT])),
        TableSpec(SVC, "svc",
                  match=frozenset(["eth_type", "ipv4_dst", REG_VRF]),
                  actions=frozenset(["ct_nat"]),
                  goto=frozenset([SVC_VRF]),
                  ct_tables=frozenset([SVC_VRF])),
        TableSpec(SVC_VRF, "svc_vrf",
                  match=frozenset(["eth_type", REG_VRF]),
                  actions=frozenset(["ct_nat"]),
                  goto=frozenset([L3]),
                  ct_tables=frozenset([SVC_CT])),
        TableSpec(SVC_CT, "svc_ct",
                  match=frozenset(["ct_state", "ct_mark", REG_VRF, "eth_type", "ipv4_src", "ipv4_dst",
                                   "ip_proto", "tcp_dst", "udp_dst", "sctp_dst"]),
                  maskable=frozenset(["ct_state", "ct_mark"]),
                  actions=frozenset(["group", "resubmit"]),
                  goto=frozenset([SVC_DST, L3]),
                  resubmit=frozenset([SVC_AFF, SVC_AFF_SEL])),
        TableSpec(SVC_AFF_LEARN, "svc_aff_learn",
                  match=frozenset([REG_VRF, "eth_type", "ipv4_dst", "ip_proto", "tcp_dst", "udp_dst", "sctp_dst"]),
                  actions=frozenset(["learn", "resubmit"]),
                  resubmit=frozenset([SVC_AFF_SEL])),
        TableSpec(SVC_AFF, "svc_aff",
                  # the compiler's only flow here is the miss; the rest are learned
                  match=frozenset()),
        TableSpec(SVC_AFF_SEL, "svc_aff_sel",
                  match=frozenset(["ct_state", REG_VRF, REG_AFF, "eth_type", "ipv4_dst",
                                   "ip_proto", "tcp_dst", "udp_dst", "sctp_dst"]),
                  maskable=frozenset(["ct_state"]),
                  actions=frozenset(["group", "ct_nat"]),
                  ct_tables=frozenset([SVC_DST])),
        TableSpec(SVC_DST, "svc_dst",
                  match=frozenset(["in_port", "eth_type", "ipv4_src", "ipv4_dst", "ct_mark", REG_VRF]),
                  sets=frozenset(["eth_dst", REG_NET, REG_FLAGS]),
                  actions=frozenset(["set_field", "ct_nat"]),
                  goto=frozenset([L3]),
                  ct_tables=frozenset([SVC_DST])),
        TableSpec(L3, "l3",
                  match=frozenset(["eth_dst", "eth_type", "ipv4_dst", REG_VRF, REG_FLAGS]),
                  maskable=frozenset([REG_FLAGS]),
                  sets=frozenset(["eth_src", "eth_dst", REG_NET]),
                  actions=frozenset(["set_field", "dec_ttl"]),
                  goto=frozenset([L2])),
        TableSpec(L2, "l2",
                  match=frozenset(["eth_dst", REG_NET]),
                  maskable=frozenset(["eth_dst"]),
                  sets=frozenset([REG_DST_EPG, REG_DST_ID, REG_OUT, "tunnel_id", "tun_ipv4_dst"]),
                  actions=frozenset(["set_field"]),
                  goto=frozenset([K8S, POLICY])),
        TableSpec(K8S, "k8s",
                  match=frozenset(["eth_type", REG_VRF]),
                  actions=frozenset(["ct"]),
                  goto=frozenset([POLICY]),
                  ct_tables=frozenset([K8S_CT])),
        TableSpec(K8S_CT, "k8s_ct",
                  match=frozenset(["ct_state", REG_FLAGS]),
                  maskable=frozenset(["ct_state", REG_FLAGS]),
                  goto=frozenset([K8S_EGRESS, K8S_INGRESS, POLICY])),
        TableSpec(K8S_EGRESS, "k8s_egress",
                  match=_K8S_MATCH | frozenset(["ipv4_dst"]),
                  maskable=_K8S_PORTS | frozenset(["ipv4_dst"]),
                  goto=frozenset([K8S_INGRESS])),
        TableSpec(K8S_INGRESS, "k8s_ingress",
                  match=_K8S_MATCH | frozenset(["ipv4_src", REG_OUT, REG_FLAGS]),
                  maskable=_K8S_PORTS | frozenset(["ipv4_src", REG_FLAGS]),
                  goto=frozenset([POLICY])),
        TableSpec(POLICY, "policy",
                  match=_REGS_ID | frozenset(["eth_type", REG_OUT]),
                  maskable=frozenset([REG_FLAGS]),
                  actions=frozenset(["ct"]),
                  goto=frozenset([OUTPUT]),
                  ct_tables=frozenset([POLICY_CT])),
        TableSpec(POLICY_CT, "policy_ct",
                  match=frozenset(["ct_state", REG_FLAGS]),
                  maskable=frozenset(["ct_state", REG_FLAGS]),
                  goto=frozenset([POLICY_OUT, POLICY_IN, OUTPUT])),
        TableSpec(POLICY_OUT, "policy_out",
                  match=_RULE_MATCH,
                  maskable=_RULE_MASKABLE,
                  goto=frozenset([POLICY_IN])),
        TableSpec(POLICY_IN, "policy_in",
                  match=_RULE_MATCH | frozenset([REG_OUT, REG_FLAGS]),
                  maskable=_RULE_MASKABLE | frozenset([REG_FLAGS]),
                  goto=frozenset([POLICY_COMMIT])),
        TableSpec(POLICY_COMMIT, "policy_commit",
                  match=frozenset(["eth_type", REG_NET]),
                  actions=frozenset(["ct"]),
                  goto=frozenset([OUTPUT])),
        TableSpec(OUTPUT, "output",
                  match=frozenset([REG_OUT, REG_NET, REG_FLAGS, REG_SRC_EPG]),
                  maskable=frozenset([REG_FLAGS]),
                  sets=frozenset(["vlan_vid", "tunnel_id", "tun_ipv4_dst"]),
                  actions=frozenset(["output", "push_vlan", "set_field"]),
                  outputs=None),
    )
}


class FlowCheckError(ValueError):
    """A flow breaks its table's declaration (or what OVS would accept)."""


_MAC_RE = re.compile(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}")
_ACTION_ARITY = {"output": 1, "set_field": 2, "push_vlan": 1, "pop_vlan": 0, "move": 3, "ct": 3,
                 "controller": 1, "dec_ttl": 0, "group": 1, "ct_nat": 5, "resubmit": 1, "learn": 5}
_MAX_PORT = 0xFFFFFF00  # OFPP_MAX


def _fail(flow: Flow, why: str) -> None:
    raise FlowCheckError(f"{why}: table={flow.table} priority={flow.priority} "
                         f"match={dict(flow.match)} actions={list(flow.actions)} goto={flow.goto}"
                         + (f" ({flow.note})" if flow.note else ""))


def _check_value(flow: Flow, name: str, value: object, info: FieldInfo) -> None:
    if info.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < (1 << info.width):
            _fail(flow, f"{name} value {value!r} is not a {info.width}-bit integer")
    elif info.kind == "mac":
        if not isinstance(value, str) or not _MAC_RE.fullmatch(value):
            _fail(flow, f"{name} value {value!r} is not a lower-case MAC")
    elif not (isinstance(value, str) and _is_dotted_ipv4(value)):
        _fail(flow, f"{name} value {value!r} is not a dotted IPv4 address")


@functools.lru_cache(maxsize=65536)
def _is_dotted_ipv4(value: str) -> bool:
    try:
        return str(ipaddress.IPv4Address(value)) == value
    except ValueError:
        return False


def _prereqs_met(match: Mapping[str, object], info: FieldInfo) -> bool:
    return all(match.get(f) == v for f, v in info.prereq)


def check_flow(flow: Flow) -> None:
    """Raise :class:`FlowCheckError` unless ``flow`` fits its table's declaration.

    Cheap enough to run on every flow the compiler emits.
    """
    spec = TABLES.get(flow.table)
    if spec is None:
        _fail(flow, f"table {flow.table} is not declared")
    if not 0 <= flow.priority <= 0xFFFF:
        _fail(flow, "priority out of range")
    if flow.cookie & COOKIE_MASK != COOKIE_MARK or not 0 <= flow.cookie < (1 << 64):
        _fail(flow, f"cookie {flow.cookie:#x} lacks COOKIE_MARK")
    names = [k for k, _ in flow.match]
    if len(set(names)) != len(names):
        _fail(flow, "a match field appears twice")
    if names != sorted(names):
        _fail(flow, "match is not in canonical form (use make_match): fields not sorted")
    match = dict(flow.match)
    for name, value in flow.match:
        if _canon_value(name, value) != value:
            _fail(flow, f"match is not in canonical form (use make_match): {name}={value!r}")
        info = FIELDS.get(name)
        if info is None:
            _fail(flow, f"unknown match field {name}")
        if name not in spec.match:
            _fail(flow, f"table {spec.name} may not match {name}")
        if isinstance(value, tuple):
            if name not in spec.maskable:
                _fail(flow, f"table {spec.name} may not mask {name}")
            _check_value(flow, name, value[0], info)
            _check_value(flow, name, value[1], info)
        else:
            _check_value(flow, name, value, info)
        if not _prereqs_met(match, info):
            _fail(flow, f"match on {name} lacks its prerequisite {dict(info.prereq)}")
    vlan_present = isinstance(match.get("vlan_vid"), int) and bool(match["vlan_vid"] & OFPVID_PRESENT)
    for action in flow.actions:
        if not isinstance(action, tuple) or not action:
            _fail(flow, f"malformed action {action!r}")
        kind = action[0]
        if kind not in _ACTION_ARITY or len(action) != 1 + _ACTION_ARITY[kind]:
            _fail(flow, f"malformed action {action!r}")
        if kind not in spec.actions:
            _fail(flow, f"table {spec.name} may not use action {kind}")
        if kind == "output":
            port = action[1]
            allowed = spec.outputs
            if not isinstance(port, int) or not (0 < port < _MAX_PORT or port in (OFPP_IN_PORT, OFPP_CONTROLLER)):
                _fail(flow, f"bad output port {port!r}")
            if allowed is not None and port not in allowed:
                _fail(flow, f"table {spec.name} may not output to {port:#x}")
        elif kind in ("set_field", "move"):
            dsts = [action[1]] if kind == "set_field" else [action[2]]
            srcs = [action[1]] if kind == "move" else []
            for name in dsts + srcs:
                info = FIELDS.get(name)
                if info is None:
                    _fail(flow, f"unknown field {name} in {kind}")
                if not _prereqs_met(match, info):
                    _fail(flow, f"{kind} on {name} lacks its prerequisite {dict(info.prereq)}")
            for name in dsts:
                if name not in spec.sets:
                    _fail(flow, f"table {spec.name} may not set {name}")
            if kind == "set_field":
                _check_value(flow, action[1], action[2], FIELDS[action[1]])
                if action[1] == "vlan_vid":
                    if not vlan_present:
                        _fail(flow, "set_field vlan_vid without a VLAN header (push_vlan first)")
                    if not action[2] & OFPVID_PRESENT:
                        _fail(flow, "set_field vlan_vid without OFPVID_PRESENT")
            else:
                n_bits = action[3]
                if not isinstance(n_bits, int) or not 0 < n_bits <= min(FIELDS[action[1]].width,
                                                                      FIELDS[action[2]].width):
                    _fail(flow, f"move of {n_bits!r} bits does not fit")
        elif kind == "push_vlan":
            if action[1] != ETH_TYPE_VLAN:
                _fail(flow, "push_vlan with an ethertype other than 0x8100")
            vlan_present = True
        elif kind == "pop_vlan":
            if not vlan_present:
                _fail(flow, "pop_vlan without a VLAN header in the match")
            vlan_present = False
        elif kind == "dec_ttl":
            if match.get("eth_type") != ETH_TYPE_IP:
                _fail(flow, "dec_ttl needs eth_type=0x0800 in the match")
        elif kind in ("ct", "ct_nat"):
            if match.get("eth_type") != ETH_TYPE_IP:
                _fail(flow, f"{kind} needs eth_type=0x0800 in the match")
            if action[3] is not None and action[3] not in spec.ct_tables | spec.goto:
                _fail(flow, f"{kind} recirculates to undeclared table {action[3]}")
        elif kind == "resubmit":
            if action[1] not in spec.resubmit:
                _fail(flow, f"table {spec.name} may not resubmit to table {action[1]}")
    if flow.goto is not None:
        if flow.goto not in spec.goto or flow.goto <= flow.table:
            _fail(flow, f"table {spec.name} may not go to table {flow.goto}")


def check_flows(flows) -> None:
    """Check every flow and that no two share an identity (OVS would keep only one)."""
    seen = {}
    for f in flows:
        check_flow(f)
        other = seen.setdefault(f.identity, f)
        if other is not f and other != f:
            _fail(f, f"same table/priority/match as another flow ({other.actions})")
