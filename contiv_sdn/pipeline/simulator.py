"""A packet-walk oracle over compiled flows: where does this packet go?

Tests (and later the controller's tests) use it to check behaviour — reachability,
isolation, ARP answers, no loops — instead of comparing flow text.  It follows
OpenFlow 1.3 semantics closely enough to catch real mistakes:

* per table, the highest-priority matching flow wins; two matching flows at the
  same priority that *do different things* (actions or goto) raise
  :class:`AmbiguousMatch` (OpenFlow leaves the choice undefined, so a pipeline
  that relies on it is wrong); overlapping flows with one outcome (two allow
  rules of one priority) are fine; a miss drops;
* masks, apply-actions in order (an output sends the packet as it is at that
  moment), goto forward only, output to the ingress port is dropped unless it
  names ``IN_PORT``;
* the tunnel port delivers to the host whose ``vtep_ip`` equals ``tun_ipv4_dst``,
  entering on its tunnel port with ``tunnel_id`` and the tunnel addresses and
  nothing else of the pipeline metadata; the uplink is one shared L2 segment:
  every other host with an uplink receives the frame as sent (VLAN tag included);
* ``dec_ttl`` on a TTL of 0 or 1 drops (OVS would only tell a controller that
  asked); ``ct(...)``: the tracker is :class:`ConnTrack`, per (host, zone) —
  a connection is ``+trk+new`` until committed (or marked established by the
  test), then ``+trk+est`` (``+rpl`` in the reply direction); a packet the test
  marked related is ``+trk+rel``; non-IPv4, and a TCP SYN+ACK (``tcp_flags``)
  or a packet marked invalid that opens nothing, are ``+trk+inv`` (as OVS's
  userspace tracker does).  A connection committed in one zone is unknown in
  every other zone (tenants with identical addresses do not see each other's).
  ``ct(table=N)`` forks like OVS: the original continues untracked, a copy with
  the ct fields resumes at table N.  ``ct`` without a table only commits.

Packets are dicts of header fields named like match fields (``eth_src``,
``ipv4_dst``, ``arp_tpa`` …; ``vlan_vid`` with OFPVID_PRESENT when tagged,
absent when untagged) plus ``ip_ttl`` for ``dec_ttl``.  Pipeline metadata
(registers, tunnel fields, ct fields) starts at zero on every switch arrival.
"""

from __future__ import annotations

import ipaddress
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, Iterable, List, Mapping, Optional, Tuple, Union

from . import tables as T
from .flow import OFPP_CONTROLLER, OFPP_IN_PORT, Flow, canon_match
from .state import Host

Packet = Dict[str, Any]

_DEFAULT_ZERO = T.METADATA_FIELDS | {"vlan_vid"}


class SimulationError(Exception):
    """The flows did something this switch model (or OpenFlow) does not allow."""


class AmbiguousMatch(SimulationError):
    """Two different flows of one priority match the same packet."""


class LoopDetected(SimulationError):
    """The packet kept travelling between switches beyond the hop limit."""


@dataclass(frozen=True)
class Delivery:
    """A packet leaving a switch on a non-tunnel, non-uplink port (or to the controller)."""

    host: str
    port: int
    port_name: Optional[str]
    packet: Mapping[str, Any]


@dataclass(frozen=True)
class Transmission:
    """A packet put on the underlay: the tunnel or the uplink."""

    host: str
    port_name: str
    receivers: Tuple[str, ...]
    packet: Mapping[str, Any]


@dataclass(frozen=True)
class Drop:
    host: str
    table: Optional[int]
    reason: str


@dataclass
class Trace:
    deliveries: List[Delivery] = field(default_factory=list)
    transmissions: List[Transmission] = field(default_factory=list)
    drops: List[Drop] = field(default_factory=list)
    #: Human-readable steps, for test failure messages.
    steps: List[str] = field(default_factory=list)

    def delivered_to(self) -> List[Tuple[str, Optional[str]]]:
        """(host, port name) of every delivery, sorted."""
        return sorted((d.host, d.port_name or "") for d in self.deliveries)

    def __str__(self) -> str:
        return "\n".join(self.steps)


def _as_int(value: Any) -> int:
    if isinstance(value, int):
        return value
    if isinstance(value, str) and ":" in value:
        return int(value.replace(":", ""), 16)
    if isinstance(value, str):
        return int(ipaddress.IPv4Address(value))
    raise SimulationError(f"cannot compare value {value!r}")


def _from_int(name: str, n: int) -> Any:
    info = T.FIELDS.get(name)
    kind = info.kind if info else "int"
    if kind == "mac":
        return ":".join(f"{(n >> s) & 0xff:02x}" for s in range(40, -8, -8))
    if kind == "ipv4":
        return str(ipaddress.IPv4Address(n))
    return n


def _width(name: str) -> int:
    info = T.FIELDS.get(name)
    return info.width if info else 32


def _five_tuple(pkt: Packet) -> Tuple:
    proto = pkt.get("ip_proto", 0)
    sport = pkt.get("tcp_src", pkt.get("udp_src", pkt.get("sctp_src", 0)))
    dport = pkt.get("tcp_dst", pkt.get("udp_dst", pkt.get("sctp_dst", 0)))
    return (pkt.get("ipv4_src"), pkt.get("ipv4_dst"), proto, sport, dport)


def _reverse(t: Tuple) -> Tuple:
    return (t[1], t[0], t[2], t[4], t[3])


TCP_SYN, TCP_ACK = 0x02, 0x10


class ConnTrack:
    """Committed connections per (host, zone); deliberately simple, see the module doc.

    NAT (``ct_nat``): a connection committed with NAT remembers its original and its
    translated tuple; a packet with either (forward) is ``+new`` until a reply was
    seen, then ``+est``, and gets the translated addresses; a packet with the reverse
    of either is ``+est+rpl`` and gets the original's reverse (reverse NAT), as OVS."""

    def __init__(self) -> None:
        self._conns: Dict[Tuple[str, int], set] = {}
        #: (host, zone) -> [orig tuple, translated tuple, replied?, ct_mark]
        self._nat: Dict[Tuple[str, int], List[list]] = {}
        self._related: set = set()
        self._invalid: set = set()
        #: (host, zone, ct_state) of every lookup, for tests
        self.log: List[Tuple[str, int, int]] = []

    def relate(self, packet: Mapping[str, Any]) -> None:
        """Mark packets with ``packet``'s 5-tuple related (an ICMP error, an FTP data channel)."""
        self._related.add(_five_tuple(dict(packet)))

    def invalidate(self, packet: Mapping[str, Any]) -> None:
        """Mark packets with ``packet``'s 5-tuple invalid when they open nothing."""
        self._invalid.add(_five_tuple(dict(packet)))

    def flush(self, host: Optional[str] = None, zone: Optional[int] = None) -> None:
        """Forget committed connections (of one host / zone, or all)."""
        for k in [k for k in self._conns if (host is None or k[0] == host) and (zone is None or k[1] == zone)]:
            del self._conns[k]

    def connections(self, host: str, zone: int) -> int:
        return len(self._conns.get((host, zone), ()))

    def establish(self, host: str, zone: int, packet: Mapping[str, Any]) -> None:
        """Mark the connection of ``packet`` (in its direction) as committed."""
        self._conns.setdefault((host, zone), set()).add(_five_tuple(dict(packet)))

    def lookup(self, host: str, zone: int, pkt: Packet) -> int:
        state = self._lookup(host, zone, pkt)
        self.log.append((host, zone, state))
        return state

    def nat_entry(self, host: str, zone: int, pkt: Packet) -> Tuple[Optional[list], bool]:
        """The NAT'ed connection of ``pkt`` in the zone and whether it is a reply."""
        t = _five_tuple(pkt)
        for e in self._nat.get((host, zone), ()):
            if t == e[0] or t == e[1]:
                return e, False
            if t == _reverse(e[0]) or t == _reverse(e[1]):
                return e, True
        return None, False

    def nat(self, host: str, zone: int, pkt: Packet, commit: bool, nat: Any, mark: int) -> Tuple[int, int]:
        """``ct(nat...)`` on ``pkt`` (rewritten in place): returns (ct_state, ct_mark)."""
        if pkt.get("eth_type") != T.ETH_TYPE_IP:
            return T.CT_TRK | T.CT_INV, 0
        e, reply = self.nat_entry(host, zone, pkt)
        if e is not None:
            if reply:
                e[2] = True
                _set_tuple(pkt, _reverse(e[0]))
                return T.CT_TRK | T.CT_EST | T.CT_RPL, e[3]
            _set_tuple(pkt, e[1])
            return T.CT_TRK | (T.CT_EST if e[2] else T.CT_NEW), e[3]
        state = self.lookup(host, zone, pkt)
        if commit and state & T.CT_NEW:
            t = _five_tuple(pkt)
            if nat is None:
                self.commit(host, zone, pkt)
                return state, mark
            kind, ip, port = nat
            x = (t[0], ip, t[2], t[3], port or t[4]) if kind == "dst" else (ip, t[1], t[2], t[3], t[4])
            self._nat.setdefault((host, zone), []).append([t, x, False, mark])
            _set_tuple(pkt, x)
            return state, mark
        return state, 0

    def _lookup(self, host: str, zone: int, pkt: Packet) -> int:
        if pkt.get("eth_type") != T.ETH_TYPE_IP:
            return T.CT_TRK | T.CT_INV
        conns = self._conns.get((host, zone), set())
        t = _five_tuple(pkt)
        e, reply = self.nat_entry(host, zone, pkt)
        if e is not None:
            return T.CT_TRK | T.CT_EST | T.CT_RPL if reply else T.CT_TRK | (T.CT_EST if e[2] else T.CT_NEW)
        if t in conns:
            return T.CT_TRK | T.CT_EST
        if _reverse(t) in conns:
            return T.CT_TRK | T.CT_EST | T.CT_RPL
        if t in self._related:
            return T.CT_TRK | T.CT_REL
        flags = pkt.get("tcp_flags", 0)
        if t in self._invalid or (pkt.get("ip_proto") == 6 and flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK):
            return T.CT_TRK | T.CT_INV
        return T.CT_TRK | T.CT_NEW

    def commit(self, host: str, zone: int, pkt: Packet) -> None:
        t = _five_tuple(pkt)
        conns = self._conns.setdefault((host, zone), set())
        if _reverse(t) not in conns:
            conns.add(t)


def _text(flow: Flow) -> str:
    """The flow for a trace step (``ct_nat`` has no ovs-ofctl text in ``flow.py`` yet)."""
    try:
        return flow.to_ofctl()
    except ValueError:
        return f"table={flow.table} priority={flow.priority} match={dict(flow.match)} " \
               f"actions={list(flow.actions)} goto={flow.goto}"


def _set_tuple(pkt: Packet, t: Tuple) -> None:
    pkt["ipv4_src"], pkt["ipv4_dst"] = t[0], t[1]
    for proto in ("tcp", "udp", "sctp"):
        if f"{proto}_dst" in pkt or f"{proto}_src" in pkt:
            pkt[f"{proto}_src"], pkt[f"{proto}_dst"] = t[3], t[4]


def _headers(pkt: Packet) -> Dict[str, Any]:
    return {k: v for k, v in pkt.items() if k not in T.METADATA_FIELDS}


class Fabric:
    """Several switches joined by a VXLAN underlay and a shared VLAN segment."""

    def __init__(self, flows_by_host: Mapping[str, Iterable[Flow]], hosts: Mapping[str, Host],
                 *, conntrack: Optional[ConnTrack] = None, max_hops: int = 16,
                 groups_by_host: Optional[Mapping[str, Iterable[Any]]] = None,
                 select: Optional[Any] = None, clock: Optional[Callable[[], float]] = None) -> None:
        """``groups_by_host``: the OpenFlow groups of each switch (``servicelb.Group``);
        ``select(host, group, packet) -> bucket index`` chooses a select group's bucket
        (default: a hash of the 5-tuple, as OVS's dp_hash); ``clock()`` is the time in
        seconds that ages learned flows (default: :attr:`now`, which tests advance)."""
        self.now = 0.0
        self.clock = clock or (lambda: self.now)
        #: flows the switches learned (``learn``): host -> table -> match -> [flow, idle, last hit]
        self.learned: Dict[str, Dict[int, Dict[Any, list]]] = {}
        self.groups = {h: {g.group_id: g for g in gs} for h, gs in (groups_by_host or {}).items()}
        self.select = select or (lambda host, group, pkt: zlib.crc32(repr(_five_tuple(pkt)).encode()))
        self.hosts = hosts
        self.conntrack = conntrack if conntrack is not None else ConnTrack()
        self.max_hops = max_hops
        # host -> table -> [(priority, [flows])] sorted by priority, highest first.
        self._tables: Dict[str, Dict[int, List[Tuple[int, List[Flow]]]]] = {}
        for name, flows in flows_by_host.items():
            by_table: Dict[int, Dict[int, List[Flow]]] = {}
            for f in flows:
                by_table.setdefault(f.table, {}).setdefault(f.priority, []).append(f)
            self._tables[name] = {t: sorted(prios.items(), key=lambda kv: -kv[0]) for t, prios in by_table.items()}
        self._port_names = {name: {no: pn for pn, no in h.ports.items()} for name, h in hosts.items()}

    # ---- public
    def trace(self, start_host: str, in_port: Union[int, str], packet: Mapping[str, Any]) -> Trace:
        """Inject ``packet`` on ``start_host``'s ``in_port`` (ofport or port name) and follow it."""
        if isinstance(in_port, str):
            in_port = self.hosts[start_host].ports[in_port]
        tr = Trace()
        queue: Deque[Tuple[str, Packet, int]] = deque()
        first = dict(packet)
        first["in_port"] = in_port
        queue.append((start_host, first, 0))
        hops = 0
        while queue:
            host, pkt, table = queue.popleft()
            hops += 1
            if hops > self.max_hops:
                raise LoopDetected(f"more than {self.max_hops} switch passes:\n{tr}")
            self._run(tr, queue, host, pkt, table)
        return tr

    def walk(self, start_host: str, in_port: Union[int, str], packet: Mapping[str, Any]) -> List[Delivery]:
        return self.trace(start_host, in_port, packet).deliveries

    # ---- one pass through one switch
    def _lookup(self, host: str, table: int, pkt: Packet) -> Optional[Flow]:
        learned = self._learned_hit(host, table, pkt)
        static = self._static_lookup(host, table, pkt)
        if learned is not None and (static is None or learned.priority >= static.priority):
            return learned
        return static

    def learned_flows(self, host: str) -> List[Flow]:
        """The learned flows of ``host`` alive now (idle ones expire as OVS's do)."""
        now = self.clock()
        out = []
        for entries in self.learned.get(host, {}).values():
            for key, (flow, idle, last) in list(entries.items()):
                if idle and now - last >= idle:
                    del entries[key]
                else:
                    out.append(flow)
        return out

    def _learned_hit(self, host: str, table: int, pkt: Packet) -> Optional[Flow]:
        entries = self.learned.get(host, {}).get(table)
        if not entries:
            return None
        now = self.clock()
        best = None
        for key, entry in list(entries.items()):
            flow, idle, last = entry
            if idle and now - last >= idle:
                del entries[key]
            elif self._matches(flow, pkt) and (best is None or flow.priority > best[0].priority):
                best = entry
        if best is None:
            return None
        best[2] = now  # a hit refreshes the idle timer
        return best[0]

    def _learn(self, host: str, pkt: Packet, action: Tuple) -> Flow:
        """Install the flow a ``learn`` action describes, from this packet's fields
        (replacing a learned flow with the same table, priority and match, as OVS does)."""
        _, table, idle, prio, cookie, specs = action
        match, loads = [], []
        for kind, dst, src in specs:
            if kind == "load":
                loads.append(("set_field", dst, _from_int(dst, _as_int(pkt.get(src, 0))) if isinstance(src, str)
                              else src))
            elif isinstance(src, str):
                match.append((dst, _from_int(dst, _as_int(pkt.get(src, 0)))))
            else:
                match.append((dst, _from_int(dst, src)))
        flow = Flow(table, prio, canon_match(match), tuple(loads), None, cookie, "learned")
        self.learned.setdefault(host, {}).setdefault(table, {})[(prio, flow.match)] = [flow, idle, self.clock()]
        return flow

    def _static_lookup(self, host: str, table: int, pkt: Packet) -> Optional[Flow]:
        for prio, flows in self._tables.get(host, {}).get(table, ()):
            hits = [f for f in flows if self._matches(f, pkt)]
            if len(hits) > 1 and len({(h.actions, h.goto) for h in hits}) > 1:
                raise AmbiguousMatch(f"{host} table {table} priority {prio}: {len(hits)} flows match "
                                     f"{pkt}: {[h.to_ofctl() for h in hits]}")
            if hits:
                return hits[0]
        return None

    @staticmethod
    def _matches(flow: Flow, pkt: Packet) -> bool:
        for name, want in flow.match:
            if name in pkt:
                have = _as_int(pkt[name])
            elif name in _DEFAULT_ZERO:
                have = 0
            else:
                return False
            if isinstance(want, tuple):
                value, mask = _as_int(want[0]), _as_int(want[1])
                if have & mask != value & mask:
                    return False
            elif have != _as_int(want):
                return False
        return True

    def _run(self, tr: Trace, queue: Deque, host: str, pkt: Packet, table: int) -> None:
        current: Optional[int] = table
        lookups = 0
        while current is not None:
            lookups += 1
            if lookups > 256:
                raise LoopDetected(f"{host}: more than 256 table lookups")
            flow = self._lookup(host, current, pkt)
            if flow is None:
                tr.drops.append(Drop(host, current, "table miss"))
                tr.steps.append(f"{host} t{current}: miss -> drop")
                return
            tr.steps.append(f"{host} t{current}: {_text(flow)}" + (f"  # {flow.note}" if flow.note else ""))
            if not self._apply(tr, queue, host, pkt, flow):
                return
            if flow.goto is not None and flow.goto <= current:
                raise SimulationError(f"{host}: goto from table {current} back to {flow.goto}")
            current = flow.goto

    def _apply(self, tr: Trace, queue: Deque, host: str, pkt: Packet, flow: Flow) -> bool:
        """Apply the flow's actions in order; False when the packet is gone (e.g. TTL expired)."""
        for action in flow.actions:
            kind = action[0]
            if kind == "output":
                self._output(tr, queue, host, pkt, action[1])
            elif kind == "set_field":
                name, value = action[1], action[2]
                if name == "vlan_vid" and not pkt.get("vlan_vid", 0) & T.OFPVID_PRESENT:
                    raise SimulationError(f"{host}: set_field vlan_vid on an untagged packet")
                pkt[name] = value
            elif kind == "push_vlan":
                if pkt.get("vlan_vid", 0) & T.OFPVID_PRESENT:
                    raise SimulationError(f"{host}: push_vlan on a tagged packet (QinQ is not modelled)")
                pkt["vlan_vid"] = T.OFPVID_PRESENT
            elif kind == "pop_vlan":
                if not pkt.get("vlan_vid", 0) & T.OFPVID_PRESENT:
                    raise SimulationError(f"{host}: pop_vlan on an untagged packet")
                del pkt["vlan_vid"]
            elif kind == "move":
                src, dst, n_bits = action[1], action[2], action[3]
                if src not in pkt and src not in _DEFAULT_ZERO:
                    raise SimulationError(f"{host}: move from {src}, absent in {pkt}")
                mask = (1 << n_bits) - 1
                value = _as_int(pkt.get(src, 0)) & mask
                old = _as_int(pkt.get(dst, 0)) & ((1 << _width(dst)) - 1)
                pkt[dst] = _from_int(dst, (old & ~mask) | value)
            elif kind == "dec_ttl":
                ttl = pkt.get("ip_ttl", 64)
                if ttl <= 1:
                    tr.drops.append(Drop(host, flow.table, "TTL expired"))
                    tr.steps.append(f"{host}: TTL expired")
                    return False
                pkt["ip_ttl"] = ttl - 1
            elif kind == "ct":
                _, commit, zone, table = action
                state = self.conntrack.lookup(host, zone, pkt)
                if commit and state & T.CT_NEW:
                    self.conntrack.commit(host, zone, pkt)
                if table is not None:
                    fork = dict(pkt, ct_state=state, ct_zone=zone)
                    queue.append((host, fork, table))
            elif kind == "ct_nat":
                _, commit, zone, table, nat, mark = action
                fork = dict(pkt)
                state, ct_mark = self.conntrack.nat(host, zone, fork, commit, nat, mark)
                if table is not None:
                    fork.update(ct_state=state, ct_zone=zone, ct_mark=ct_mark)
                    queue.append((host, fork, table))
            elif kind == "group":
                group = self.groups.get(host, {}).get(action[1])
                if group is None:
                    raise SimulationError(f"{host}: group {action[1]} does not exist (OVS refuses the flow)")
                if not group.buckets:
                    tr.drops.append(Drop(host, flow.table, f"group {action[1]} has no buckets"))
                    tr.steps.append(f"{host}: group {action[1]}: no buckets -> drop")
                    return False
                i = self.select(host, group, pkt) % len(group.buckets)
                tr.steps.append(f"{host}: group {action[1]} bucket {i}")
                bucket = Flow(flow.table, flow.priority, flow.match, group.buckets[i], None, flow.cookie)
                if not self._apply(tr, queue, host, dict(pkt), bucket):
                    return False
            elif kind == "resubmit":
                sub = self._lookup(host, action[1], pkt)
                if sub is None:  # a miss in a resubmitted table does nothing
                    tr.steps.append(f"{host} resubmit t{action[1]}: miss")
                    continue
                tr.steps.append(f"{host} resubmit t{action[1]}: {_text(sub)}" + (f"  # {sub.note}" if sub.note else ""))
                if sub.goto is not None:
                    raise SimulationError(f"{host}: goto in a resubmitted flow is not modelled")
                if not self._apply(tr, queue, host, pkt, sub):
                    return False
            elif kind == "learn":
                learned = self._learn(host, pkt, action)
                tr.steps.append(f"{host}: learned {learned.to_ofctl()}")
            elif kind == "controller":
                tr.deliveries.append(Delivery(host, OFPP_CONTROLLER, "controller", _headers(pkt)))
            else:
                raise SimulationError(f"{host}: action {kind} is not modelled")
        return True

    def _output(self, tr: Trace, queue: Deque, host: str, pkt: Packet, port: int) -> None:
        in_port = pkt["in_port"]
        if port == OFPP_IN_PORT:
            port = in_port
        elif port == in_port:
            tr.steps.append(f"{host}: output to the ingress port {port} is dropped")
            return
        if port == OFPP_CONTROLLER:
            tr.deliveries.append(Delivery(host, port, "controller", _headers(pkt)))
            return
        h = self.hosts[host]
        name = self._port_names[host].get(port)
        if name is None:
            tr.drops.append(Drop(host, None, f"output to unknown port {port}"))
            return
        if name == h.tunnel_port:
            self._tunnel(tr, queue, host, pkt)
        elif h.uplink_port is not None and name == h.uplink_port:
            self._uplink(tr, queue, host, pkt)
        else:
            tr.deliveries.append(Delivery(host, port, name, _headers(pkt)))
            tr.steps.append(f"{host}: delivered on {name}")

    def _tunnel(self, tr: Trace, queue: Deque, host: str, pkt: Packet) -> None:
        dst = pkt.get("tun_ipv4_dst")
        receivers = tuple(sorted(n for n, h in self.hosts.items() if dst and h.vtep_ip == dst and n != host))
        sent = dict(_headers(pkt), tunnel_id=pkt.get("tunnel_id", 0),
                    tun_ipv4_src=self.hosts[host].vtep_ip, tun_ipv4_dst=dst)
        tr.transmissions.append(Transmission(host, self.hosts[host].tunnel_port, receivers, sent))
        tr.steps.append(f"{host}: VXLAN vni={sent['tunnel_id']} to {dst} -> {receivers or 'nobody'}")
        if not receivers:
            tr.drops.append(Drop(host, None, f"no host has VTEP {dst}"))
        for r in receivers:
            ofport = self.hosts[r].ports.get(self.hosts[r].tunnel_port)
            if ofport is None:
                tr.drops.append(Drop(r, None, "tunnel port not on the switch"))
                continue
            queue.append((r, dict(sent, in_port=ofport), T.CLASSIFY))

    def _uplink(self, tr: Trace, queue: Deque, host: str, pkt: Packet) -> None:
        frame = _headers(pkt)
        receivers = []
        for r in sorted(self.hosts):
            h = self.hosts[r]
            if r == host or h.uplink_port is None or h.uplink_port not in h.ports:
                continue
            receivers.append(r)
            queue.append((r, dict(frame, in_port=h.ports[h.uplink_port]), T.CLASSIFY))
        tr.transmissions.append(Transmission(host, self.hosts[host].uplink_port or "", tuple(receivers), frame))
        tr.steps.append(f"{host}: uplink vlan={frame.get('vlan_vid')} -> {receivers}")


def trace(flows_by_host: Mapping[str, Iterable[Flow]], hosts: Mapping[str, Host], start_host: str,
          in_port: Union[int, str], packet: Mapping[str, Any], *, conntrack: Optional[ConnTrack] = None,
          max_hops: int = 16) -> Trace:
    """Everything that happens to ``packet``: deliveries, underlay transmissions, drops, steps."""
    return Fabric(flows_by_host, hosts, conntrack=conntrack, max_hops=max_hops).trace(start_host, in_port, packet)


def walk(flows_by_host: Mapping[str, Iterable[Flow]], hosts: Mapping[str, Host], start_host: str,
         in_port: Union[int, str], packet: Mapping[str, Any], *, conntrack: Optional[ConnTrack] = None,
         max_hops: int = 16) -> List[Delivery]:
    """Where ``packet``, entering ``start_host`` on ``in_port``, ends up."""
    return trace(flows_by_host, hosts, start_host, in_port, packet, conntrack=conntrack,
                 max_hops=max_hops).deliveries
