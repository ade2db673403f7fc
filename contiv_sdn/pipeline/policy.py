"""Stateful policy: endpoint sets, rules between sets, judged once on connection tracking.

Sets and rules
--------------
A *set* is an endpoint group: its 16-bit id travels in a register, written by
the endpoint's own flows (CLASSIFY sets ``REG_SRC_EPG`` from the ingress port,
SOURCE from the source MAC/IP for remote traffic, L2 sets ``REG_DST_EPG`` from
the destination MAC).  Membership therefore costs nothing here: an endpoint
joining or leaving a group changes only that endpoint's flows.  A rule is
compiled once per group that carries it (through the group's policies, which
combine) and matches the group's id in a register, the peer group's id in the
other register, and the addresses/protocol/port the rule names: never an
endpoint.  Other set sources (Kubernetes label selectors, service backends) fit
the same mould: a set id in a register, written by membership flows.

Tables (see ``tables.py``)::

    50 POLICY         IPv4 unicast -> ct(zone=VRF, table=51) (one flow per network
                      present: the zone is the tenant's VRF id); broadcast/multicast
                      and non-IP go on unjudged; IPv4 of no known network: drop.
    51 POLICY_CT      +inv: drop.  +rpl (replies) and +rel (related, e.g. ICMP
                      errors): go on.  Anything else (+new, or +est in the opener's
                      direction) is judged: from a local port -> 52, from the
                      tunnel/uplink -> 53.
    52 POLICY_OUT     ``out`` rules of the source's group (REG_SRC_EPG).
                      allow / no match -> 53; deny -> drop.
    53 POLICY_IN      a packet leaving through the tunnel/uplink goes straight to 54
                      (the destination host judges it); otherwise the ``in`` rules
                      of the destination's group (REG_DST_EPG); allow / no match ->
                      54; deny -> drop.
    54 POLICY_COMMIT  ct(commit, zone=VRF) -> OUTPUT (one flow per network).

So a packet is judged once per direction: ``out`` rules on the source host,
``in`` rules on the destination host, whether the two are one host, two hosts
over VXLAN or VLAN, or two networks in routing mode; traffic arriving from a
tunnel is never let through unjudged.  Both hosts commit the connection in
their own conntrack, so replies pass on both.

Semantics: rule priority 1..100, higher wins; on equal priority **deny wins**
(OpenFlow priority ``1000 + 2*priority + deny``); no matching rule: allow
(Contiv's default).  An endpoint without a group (id 0) is never the protected
side of a rule: it is subject only to rules that name its address or network as
the peer.  ``igmp`` and other multicast/broadcast traffic is flooded and not
judged (there is no connection to track).  A port without a protocol means TCP
and UDP; a port with another protocol is ignored.  A rule naming a group or
network that does not exist matches nothing (an issue is reported).

Established connections when the rule that allowed them goes away: **they are
cut**.  Packets in the opener's direction are judged on every packet, not only
the first one (conntrack decides only what is a reply, related or invalid), so
after a rule is removed or a deny added above it, the next packet the opener
sends is dropped: a TCP connection stalls at once (its acks are dropped), a
ping stops.  Replies are not re-judged, so a stream that flows only in the reply
direction (UDP sent by the server only) is dropped only once the opener speaks
again or its conntrack entry expires.  This needs no conntrack flush and no
mark, touches no other connection, and costs no extra flows.

Flow count (per switch ``h``)::

    policy flows(h) = 12 + 2 * N_h + sum over groups G with an endpoint on h of
                      sum over rules r of G's policies of  p_r * s_r * d_r

``N_h``: networks with flows on ``h``; ``p_r`` = 2 for a port without a protocol
(TCP and UDP), else 1; ``s_r``/``d_r``: prefixes of the rule's source/destination
address (1 for none, a single address, a CIDR or a network; at most 14 for a
last-octet range).  It grows with networks and (group, rule) pairs, never with
endpoints: endpoint flows are the ones that exist without policy.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Iterable, List, Mapping, NamedTuple, Optional, Tuple

from . import tables as T
from .flow import Flow, make_match
from .state import Group, Network, Rule

#: Priorities of rule flows in POLICY_OUT / POLICY_IN.
P_RULE_BASE = 1000
#: POLICY_IN: packets leaving to the tunnel/uplink skip the in rules (judged remotely).
P_REMOTE_DST = 2000

PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "igmp": 2, "": 0}
#: The constant part of the formula: the policy flows of :func:`base_policy_flows`
#: with a tunnel port and an uplink.
BASE_FLOWS = 12

_IP = {"eth_type": T.ETH_TYPE_IP}
_LOCAL = (0, T.FLAG_REMOTE)
_REMOTE = (T.FLAG_REMOTE, T.FLAG_REMOTE)

Prefix = Tuple[str, str]  # (address, mask) dotted


def rule_priority(priority: int, deny: bool) -> int:
    """Higher rule priority wins; at equal priority deny wins."""
    return P_RULE_BASE + 2 * priority + (1 if deny else 0)


class PRule(NamedTuple):
    """A rule resolved to what its flows match (hashable, sortable)."""

    direction: str  # "in" | "out"
    priority: int  # OpenFlow priority
    deny: bool
    proto: int  # 0 = any
    port: int  # 0 = any
    peer: int  # the peer group's id, 0 = any
    src: Tuple[Prefix, ...]  # () = any
    dst: Tuple[Prefix, ...]
    key: str


def _prefix(net: ipaddress.IPv4Network) -> Prefix:
    return (str(net.network_address), str(net.netmask))


def parse_address(text: str) -> Tuple[Prefix, ...]:
    """Contiv's rule address: ``a.b.c.d``, ``a.b.c.d-N`` (last octet d..N) or a CIDR;
    the prefixes covering it.  Raises ValueError with what is wrong."""
    text = text.strip()
    if "-" in text:
        if "/" in text:
            raise ValueError(f"address {text!r} has both a range and a prefix length")
        first, _, last = text.partition("-")
        lo = ipaddress.IPv4Address(first)
        n = int(last)
        if not int(str(lo).rsplit(".", 1)[1]) <= n <= 255:
            raise ValueError(f"address range {text!r} ends before it starts")
        hi = ipaddress.IPv4Address((int(lo) & ~0xFF) | n)
        return tuple(_prefix(p) for p in ipaddress.summarize_address_range(lo, hi))
    return (_prefix(ipaddress.IPv4Network(text, strict=False)),)


def _protocol(text: Any) -> int:
    if not isinstance(text, str):
        raise ValueError(f"protocol {text!r} is not a string")
    if text in PROTOCOLS:
        return PROTOCOLS[text]
    if text.isdigit() and int(text) <= 255:
        return int(text)
    raise ValueError(f"unknown protocol {text!r}")


def resolve_rule(rule: Rule, groups: Mapping[str, Group], networks: Mapping[str, Network]
                 ) -> Tuple[Optional[PRule], str]:
    """A rule record resolved against the groups and networks it names, or ``(None, issue)``.

    Raises for values nobody expected (the caller leaves the rule out)."""
    if rule.direction not in ("in", "out"):
        return None, f"rule {rule.key}: unknown direction {rule.direction!r}"
    if rule.action not in ("allow", "deny"):
        return None, f"rule {rule.key}: unknown action {rule.action!r}"
    prio = rule.priority or 1
    if not isinstance(prio, int) or not 1 <= prio <= 100:
        return None, f"rule {rule.key}: priority {prio!r} out of 1..100"
    try:
        proto = _protocol(rule.protocol)
    except ValueError as err:
        return None, f"rule {rule.key}: {err}"
    port = rule.port or 0
    if not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        return None, f"rule {rule.key}: port {port!r} out of 0..65535"
    if proto not in (0, 6, 17):
        port = 0
    inbound = rule.direction == "in"
    peer_group = rule.from_group if inbound else rule.to_group
    peer_net = rule.from_network if inbound else rule.to_network
    peer_ip = rule.from_ip if inbound else rule.to_ip
    peer = 0
    if peer_group:
        g = groups.get(f"{rule.tenant}:{peer_group}")
        if g is None or not isinstance(g.epg_id, int) or not 0 < g.epg_id <= 0xFFFF:
            return None, f"rule {rule.key}: group {peer_group!r} not found: the rule matches nothing"
        peer = g.epg_id
    peer_prefixes: Tuple[Prefix, ...] = ()
    try:
        if peer_net:
            n = networks.get(f"{rule.tenant}:{peer_net}")
            if n is None:
                return None, f"rule {rule.key}: network {peer_net!r} not found: the rule matches nothing"
            peer_prefixes = (_prefix(ipaddress.IPv4Network(n.subnet, strict=False)),)
        if peer_ip:
            ips = parse_address(peer_ip)
            peer_prefixes = ips if not peer_prefixes else _intersect(peer_prefixes, ips)
            if not peer_prefixes:
                return None, f"rule {rule.key}: its network and address do not overlap: it matches nothing"
        own_ip: Tuple[Prefix, ...] = parse_address(rule.to_ip) if inbound and rule.to_ip else ()
    except ValueError as err:
        return None, f"rule {rule.key}: {err}"
    src, dst = (peer_prefixes, own_ip) if inbound else ((), peer_prefixes)
    deny = rule.action == "deny"
    return PRule(rule.direction, rule_priority(prio, deny), deny, proto, port, peer, src, dst, rule.key), ""


def _intersect(a: Tuple[Prefix, ...], b: Tuple[Prefix, ...]) -> Tuple[Prefix, ...]:
    nets_a = [ipaddress.IPv4Network(f"{ip}/{m}") for ip, m in a]
    out = []
    for ip, m in b:
        nb = ipaddress.IPv4Network(f"{ip}/{m}")
        for na in nets_a:
            if nb.subnet_of(na):
                out.append(nb)
            elif na.subnet_of(nb):
                out.append(na)
    return tuple(sorted({_prefix(n) for n in out}))


class GroupArgs(NamedTuple):
    """Everything a group's policy flows are built from (equal args, equal flows)."""

    key: str
    epg: int
    rules: Tuple[PRule, ...]


def group_args(key: str, group: Group, rules: Iterable[Rule], groups: Mapping[str, Group],
               networks: Mapping[str, Network]) -> Tuple[Optional[GroupArgs], List[str]]:
    """A group's resolved rules (those of all its policies), or ``(None, issues)`` when the
    group itself is unusable.  A rule that cannot be resolved is left out with an issue."""
    epg = group.epg_id
    if not isinstance(epg, int) or isinstance(epg, bool) or not 0 < epg <= 0xFFFF:
        return None, [f"group {key}: epg id {epg!r} out of range"]
    issues: List[str] = []
    out = set()
    for r in rules:
        try:
            pr, issue = resolve_rule(r, groups, networks)
        except Exception as err:  # a rule record nobody expected: that rule only
            pr, issue = None, f"rule {getattr(r, 'key', '?')}: left out: {type(err).__name__}: {err}"
        if issue:
            issues.append(f"group {key}: {issue}")
        if pr is not None:
            out.add(pr)
    args = GroupArgs(key, epg, tuple(sorted(out)))
    hash(args)
    return args, issues


def rules_of(group: Group, rules_by_policy: Mapping[Any, Iterable[str]], rules: Mapping[str, Rule]
             ) -> List[Rule]:
    """The rule records of a group's policies, in key order."""
    keys = set()
    for p in group.policies:
        try:
            keys.update(rules_by_policy.get(p, ()))
        except TypeError:
            continue
    return [rules[k] for k in sorted(keys) if k in rules]


def group_flows(args: GroupArgs, cookie: int) -> List[Flow]:
    """A group's policy flows (owner: the group; the same on every switch that needs them)."""
    flows: List[Flow] = []
    for r in args.rules:
        if r.direction == "in":
            table, nxt = T.POLICY_IN, T.POLICY_COMMIT
            regs = {T.REG_DST_EPG: args.epg, T.REG_SRC_EPG: r.peer or None}
        else:
            table, nxt = T.POLICY_OUT, T.POLICY_IN
            regs = {T.REG_SRC_EPG: args.epg, T.REG_DST_EPG: r.peer or None}
        if r.port and not r.proto:
            protos = [(6, "tcp_dst"), (17, "udp_dst")]
        elif r.port:
            protos = [(r.proto, "tcp_dst" if r.proto == 6 else "udp_dst")]
        else:
            protos = [(r.proto or None, None)]
        goto = None if r.deny else nxt
        note = f"{args.key}: rule {r.key} ({'deny' if r.deny else 'allow'} {r.direction})"
        for proto, pfield in protos:
            for src in r.src or (None,):
                for dst in r.dst or (None,):
                    match = dict(_IP, **regs, ip_proto=proto, ipv4_src=src, ipv4_dst=dst)
                    if pfield:
                        match[pfield] = r.port
                    flows.append(Flow(table, r.priority, make_match(**match), (), goto, cookie, note))
    return flows


def base_policy_flows(tun: Optional[int], upl: Optional[int], cookie: int) -> List[Flow]:
    """The per-host policy flows (owner: the host's base)."""
    ct_state = "ct_state"
    out = [
        Flow(T.POLICY, 40, make_match(eth_type=T.ETH_TYPE_IP, **{T.REG_OUT: T.OUT_FLOOD}), (), T.OUTPUT,
             cookie, "IPv4 broadcast/multicast: flooded, not judged"),
        Flow(T.POLICY, 1, make_match(eth_type=T.ETH_TYPE_IP), (), None, cookie,
             "IPv4 of no network known here: no zone to judge it in, drop"),
        Flow(T.POLICY, 0, (), (), T.OUTPUT, cookie, "not IPv4: no policy"),
        Flow(T.POLICY_CT, 40, make_match(**{ct_state: (T.CT_TRK | T.CT_INV, T.CT_TRK | T.CT_INV)}), (), None,
             cookie, "conntrack: invalid, drop"),
        Flow(T.POLICY_CT, 30, make_match(**{ct_state: (T.CT_TRK | T.CT_RPL, T.CT_TRK | T.CT_RPL)}), (),
             T.OUTPUT, cookie, "conntrack: a reply, pass"),
        Flow(T.POLICY_CT, 20, make_match(**{ct_state: (T.CT_TRK | T.CT_REL, T.CT_TRK | T.CT_REL)}), (),
             T.OUTPUT, cookie, "conntrack: related, pass"),
        Flow(T.POLICY_CT, 10, make_match(**{ct_state: (T.CT_TRK, T.CT_TRK), T.REG_FLAGS: _LOCAL}), (),
             T.POLICY_OUT, cookie, "new or opener's direction, from a local port: judge out, then in"),
        Flow(T.POLICY_CT, 10, make_match(**{ct_state: (T.CT_TRK, T.CT_TRK), T.REG_FLAGS: _REMOTE}), (),
             T.POLICY_IN, cookie, "new or opener's direction, from remote: judged out at the source, judge in"),
        Flow(T.POLICY_OUT, 0, (), (), T.POLICY_IN, cookie, "no out rule matched: allow"),
        Flow(T.POLICY_IN, 0, (), (), T.POLICY_COMMIT, cookie, "no in rule matched: allow"),
    ]
    for port in (tun, upl):
        if port is not None:
            out.append(Flow(T.POLICY_IN, P_REMOTE_DST, make_match(**{T.REG_OUT: port, T.REG_FLAGS: _LOCAL}),
                            (), T.POLICY_COMMIT, cookie, "to another host: its in rules are judged there"))
    return out


def net_policy_flows(net_id: int, vrf: int, key: str, cookie: int) -> List[Flow]:
    """A network's conntrack entry and commit (owner: the network): zone = its tenant's VRF."""
    return [
        Flow(T.POLICY, 20, make_match(eth_type=T.ETH_TYPE_IP, **{T.REG_NET: net_id}),
             (("ct", False, vrf, T.POLICY_CT),), None, cookie, f"{key}: conntrack in zone {vrf}"),
        Flow(T.POLICY_COMMIT, 10, make_match(eth_type=T.ETH_TYPE_IP, **{T.REG_NET: net_id}),
             (("ct", True, vrf, None),), T.OUTPUT, cookie, f"{key}: allowed: commit in zone {vrf}"),
    ]


def formula(n_networks: int, rules_per_group: Iterable[Iterable[PRule]]) -> int:
    """The policy flows of a switch, by the module formula (for tests and the benchmark)."""
    total = BASE_FLOWS + 2 * n_networks
    for rules in rules_per_group:
        for r in rules:
            total += (2 if r.port and not r.proto else 1) * max(1, len(r.src)) * max(1, len(r.dst))
    return total
