"""Simulated OpenFlow 1.3 switches (and the hosts around them) for scale tests and benchmarks.

Why: the controller's scale targets (issue 8: 1,000 switches × 20,000
endpoints) cannot be met or even measured with real OVS instances on one
machine, and a fake *inside* the netmaster would test a different program.  So
every simulated switch is a real TCP connection to the netmaster's OpenFlow
listener, speaking the protocol OVS speaks to it, and the hosts and endpoints
around the switches are made through the netmaster's public surfaces only: host
registration as netplugin does it, endpoints through ``/plugin/createEndpoint``
with the agent's own client, a port appearing on the switch (port-status ADD)
as the agent's OVS port would.  Nothing here reaches into the controller, so the
same harness measures today's controller and any rewrite of it.

What a switch does (all on the reactor, no threads):

* HELLO (1.3 bitmap), FEATURES (its own dpid: :func:`host_dpid` of its host
  name, as the agent's br-int), PORT_DESC (``br-int`` LOCAL, ``vxlan0`` = 1,
  one port per endpoint named :func:`port_name` of its id), ECHO both ways,
  BARRIER, GET_CONFIG;
* FLOW_MOD add / modify / modify_strict / delete / delete_strict on an in-memory
  table, honouring cookie/mask, table and (non-strict) match filters;
* multipart FLOW and AGGREGATE stats (same filters), PORT_DESC, DESC;
* ONF EXT-230 bundles as OVS implements them for 1.3: open, add (each message
  checked when added, a rejected one answered with an error and left out),
  close, discard, commit (applied all or nothing);
* PORT_STATUS when the harness adds, removes or flaps a port;
* ROLE_REQUEST as OVS answers it: a connection starts EQUAL; MASTER or SLAVE
  carry a generation id checked against the newest seen (an older one is
  refused with ``OFPRRFC_STALE``); a new MASTER makes the other connections'
  MASTER a SLAVE; a SLAVE's flow_mods and bundle messages are refused with
  ``OFPBRC_IS_SLAVE``;
* anything else is answered with an OFPT_ERROR (logged once per kind), so a
  controller that starts using something new fails loudly here.

Tables are dicts keyed by ``(table_id, priority, match)`` where ``match`` is the
canonical ``ofp_match`` bytes (OXM fields sorted), values ``(cookie,
instructions bytes)``.  Bytes, not decoded objects: a thousand switches of 60k
flows each must fit in one process; keys and values are interned, so a flow
that many switches hold (a remote endpoint's) is stored once.  Every distinct
match and instruction list is checked once by os-ken's parsers (malformed ones
are refused with an error, as OVS would); :func:`entries_of` turns compiled
:class:`~contiv_sdn.pipeline.flow.Flow` s into the same keys (through our own
encoder), and :func:`decode_entry` turns an entry back into a ``Flow`` for
readable diffs.

:class:`Cluster` ties it together: registration (:func:`register_host`), networks
and endpoints through REST, port changes, the oracle (:meth:`Cluster.oracle`:
a full compile of a store snapshot with the controller's snapshot builder) and
comparison.  :class:`NetmasterRunner` runs a netmaster process from the reactor
(start, stop, CPU time and RSS from /proc).
"""

from __future__ import annotations

import json
import os
import struct
import time
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterable, List, Optional, Set, Tuple

import treq
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.internet import defer, error as net_error, protocol
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.web.client import HTTPConnectionPool

from contiv_sdn.agent.endpoints import port_name
from contiv_sdn.agent.registration import host_dpid, host_record
from contiv_sdn.openflow import codec
from contiv_sdn.pipeline.flow import Flow

log = Logger()

OFP_VERSION = 4
HEADER = struct.Struct("!BBHI")
_FLOW_MOD = struct.Struct("!QQBBHHHIIIH2x")  # after the header; the match starts at 48
_MATCH_HDR = struct.Struct("!HH")
_MP_HDR = struct.Struct("!HH4x")  # multipart type, flags (after the header)
_FLOW_STATS_REQ = struct.Struct("!B3xII4xQQ")  # table, out_port, out_group, cookie, mask (at 16)
_FLOW_STATS = struct.Struct("!HBxIIHHHH4xQQQ")
_AGGREGATE = struct.Struct("!QQI4x")
_PORT = struct.Struct("!I4x6s2x16sIIIIIIII")
_FEATURES = struct.Struct("!QIBB2xII")
_BUNDLE_CTRL = struct.Struct("!IIIHH")  # experimenter, exp_type, bundle id, type, flags (at 8)
_BUNDLE_ADD = struct.Struct("!III2xH")  # experimenter, exp_type, bundle id, flags (at 8)
_ERROR = struct.Struct("!HH")
ONF = 0x4F4E4600
OFPP_LOCAL = 0xFFFFFFFE
OFPP_ANY = 0xFFFFFFFF
OFPG_ANY = 0xFFFFFFFF
OFPTT_ALL = 0xFF
#: the OXM in_port field as :func:`_fields` keys it (class 0x8000, field 0)
_IN_PORT = 0x8000 << 7
#: A multipart reply's body stays below this (OpenFlow messages are at most 64 KiB).
MAX_BODY = 60000
TUNNEL_PORT = "vxlan0"

Key = Tuple[int, int, bytes]  # table, priority, canonical ofp_match
Value = Tuple[int, bytes]  # cookie, instructions


class Refused(Exception):
    """A message the switch refuses: answered with OFPT_ERROR (type, code)."""

    def __init__(self, type_: int, code: int, why: str, experimenter: bool = False):
        super().__init__(why)
        self.type, self.code, self.experimenter = type_, code, experimenter


def _pad8(n: int) -> int:
    return (n + 7) // 8 * 8


# ---------------------------------------------------------------------------
# flow entries: parsing, interning, filters
# ---------------------------------------------------------------------------

class Interner:
    """Shares match keys and values between switches and checks each distinct one once.

    A remote endpoint's flows are the same bytes on every switch of its network:
    one object each, however many switches hold them.  os-ken's parsers check a
    match or an instruction list the first time it is seen (~50 us), never again.
    """

    def __init__(self) -> None:
        self.matches: Dict[bytes, bytes] = {}  # raw padded ofp_match -> canonical
        self.instructions: Dict[bytes, bytes] = {}
        self.values: Dict[Value, Value] = {}
        self.keys: Dict[Key, Key] = {}
        self.fields: Dict[bytes, Dict[int, Tuple[int, int]]] = {}

    def match(self, raw: bytes) -> bytes:
        canon = self.matches.get(raw)
        if canon is None:
            canon = _canonical_match(raw)
            canon = self.matches.setdefault(canon, canon)  # the canonical form maps to itself
            try:
                m = parser.OFPMatch.parser(canon, 0)
            except Exception as e:
                raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_FIELD, f"os-ken cannot parse the match: {e}")
            if _pad8(m.length) != len(canon):
                raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, "match length disagrees with its fields")
            self.matches[raw] = canon
        return canon

    def instruction_bytes(self, raw: bytes) -> bytes:
        known = self.instructions.get(raw)
        if known is None:
            _check_instructions(raw)
            known = self.instructions[raw] = raw
        return known

    def key(self, table: int, priority: int, match: bytes) -> Key:
        k = (table, priority, match)
        return self.keys.setdefault(k, k)

    def value(self, cookie: int, instructions: bytes) -> Value:
        v = (cookie, instructions)
        return self.values.setdefault(v, v)

    def match_fields(self, canon: bytes) -> Dict[int, Tuple[int, int]]:
        """OXM field (class and field, no mask bit) -> (value, mask) as ints, for filters."""
        f = self.fields.get(canon)
        if f is None:
            f = self.fields[canon] = _fields(canon)
        return f


def _tlvs(match: bytes) -> List[bytes]:
    """The OXM TLVs of a padded ofp_match (type OXM), checked for framing."""
    if len(match) < 8:
        raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, "match shorter than its header")
    mtype, mlen = _MATCH_HDR.unpack_from(match)
    if mtype != ofp.OFPMT_OXM:
        raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_TYPE, f"match type {mtype}, not OXM")
    if mlen < 4 or _pad8(mlen) != len(match):
        raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, f"match length {mlen}")
    out = []
    pos = 4
    while pos < mlen:
        if mlen - pos < 4:
            raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, "truncated OXM header")
        n = 4 + match[pos + 3]
        if pos + n > mlen:
            raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, "truncated OXM field")
        out.append(match[pos:pos + n])
        pos += n
    return out


def _canonical_match(raw: bytes) -> bytes:
    """The same match with its OXM fields in byte order: two encodings of one match
    are one flow (as in OVS), and a flow-stats reply carries this form."""
    tlvs = _tlvs(raw)
    seen = set()
    for t in tlvs:
        field = int.from_bytes(t[:4], "big") >> 9
        if field in seen:
            raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_DUP_FIELD, "a field appears twice")
        seen.add(field)
    body = b"".join(sorted(tlvs))
    n = 4 + len(body)
    return _MATCH_HDR.pack(ofp.OFPMT_OXM, n) + body + bytes(_pad8(n) - n)


def _fields(canon: bytes) -> Dict[int, Tuple[int, int]]:
    out = {}
    for t in _tlvs(canon):
        header = int.from_bytes(t[:4], "big")
        payload = t[4:]
        if header & 0x100:  # has mask
            half = len(payload) // 2
            value, mask = int.from_bytes(payload[:half], "big"), int.from_bytes(payload[half:], "big")
        else:
            value, mask = int.from_bytes(payload, "big"), (1 << (8 * len(payload))) - 1
        out[header >> 9] = (value & mask, mask)
    return out


def _check_instructions(raw: bytes) -> None:
    off = 0
    while off < len(raw):
        if len(raw) - off < 4:
            raise Refused(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN, "truncated instruction")
        n = int.from_bytes(raw[off + 2:off + 4], "big")
        if n < 4 or n % 8 or off + n > len(raw):
            raise Refused(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN, f"instruction length {n}")
        try:
            inst = parser.OFPInstruction.parser(raw, off)
        except Exception as e:
            raise Refused(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_UNKNOWN_INST,
                          f"os-ken cannot parse an instruction: {e}")
        if getattr(inst, "len", n) != n:
            raise Refused(ofp.OFPET_BAD_INSTRUCTION, ofp.OFPBIC_BAD_LEN, "instruction length mismatch")
        off += n


def _subsumes(req: Dict[int, Tuple[int, int]], flow: Dict[int, Tuple[int, int]]) -> bool:
    """Whether a non-strict request match selects a flow (OpenFlow's "loose" match)."""
    for k, (rv, rm) in req.items():
        if not rm:
            continue
        f = flow.get(k)
        if f is None:
            return False
        fv, fm = f
        if fm & rm != rm or fv & rm != rv & rm:
            return False
    return True


class FlowMod:
    """A parsed, checked flow_mod (what a bundle keeps until its commit)."""

    __slots__ = ("command", "table", "priority", "match", "cookie", "cookie_mask", "instructions",
                 "out_port", "out_group", "xid")

    def __init__(self, command: int, table: int, priority: int, match: bytes, cookie: int,
                 cookie_mask: int, instructions: bytes, out_port: int, out_group: int, xid: int) -> None:
        # (plain assignments: a kwargs loop of setattr was 8 % of the harness's CPU at 500x10k)
        self.command = command
        self.table = table
        self.priority = priority
        self.match = match
        self.cookie = cookie
        self.cookie_mask = cookie_mask
        self.instructions = instructions
        self.out_port = out_port
        self.out_group = out_group
        self.xid = xid


def parse_flow_mod(data: bytes, interner: Interner) -> FlowMod:
    """One whole OFPT_FLOW_MOD message, checked; raises :class:`Refused`."""
    if len(data) < 56:
        raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "flow_mod shorter than 56 bytes")
    (cookie, cookie_mask, table, command, _idle, _hard, priority, _buffer, out_port, out_group,
     _flags) = _FLOW_MOD.unpack_from(data, 8)
    if command > ofp.OFPFC_DELETE_STRICT:
        raise Refused(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_COMMAND, f"command {command}")
    if table == OFPTT_ALL and command in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY, ofp.OFPFC_MODIFY_STRICT):
        raise Refused(ofp.OFPET_FLOW_MOD_FAILED, ofp.OFPFMFC_BAD_TABLE_ID, "table OFPTT_ALL")
    mlen = int.from_bytes(data[50:52], "big")
    end = 48 + _pad8(mlen)
    if mlen < 4 or end > len(data):
        raise Refused(ofp.OFPET_BAD_MATCH, ofp.OFPBMC_BAD_LEN, f"match length {mlen}")
    match = interner.match(data[48:end])
    instructions = b""
    if command not in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
        instructions = interner.instruction_bytes(data[end:])
    if command in (ofp.OFPFC_ADD, ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT) \
            or (out_port, out_group) == (OFPP_ANY, OFPG_ANY):
        pass
    else:
        raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_EPERM,
                      "out_port/out_group filters are not simulated")
    return FlowMod(command, table, priority, match, cookie, cookie_mask, instructions, out_port,
                   out_group, int.from_bytes(data[4:8], "big"))


def entries_of(flows: Iterable[Flow], interner: Optional[Interner] = None) -> Dict[Key, Value]:
    """Compiled flows as switch table entries (through the controller's own encoder)."""
    interner = interner or INTERNER
    out: Dict[Key, Value] = {}
    for f in flows:
        mod = parse_flow_mod(codec.encode_flow_mod(f, codec.ADD, 0), interner)
        out[interner.key(mod.table, mod.priority, mod.match)] = interner.value(mod.cookie, mod.instructions)
    return out


def decode_entry(key: Key, value: Value) -> Flow:
    """A table entry as a canonical :class:`Flow` (os-ken parses it; for diffs and dumps)."""
    table, priority, match = key
    cookie, raw = value
    insts = []
    off = 0
    while off < len(raw):
        inst = parser.OFPInstruction.parser(raw, off)
        insts.append(inst)
        off += inst.len
    entry = SimpleNamespace(table_id=table, priority=priority, cookie=cookie,
                            match=parser.OFPMatch.parser(match, 0), instructions=insts)
    return codec.flow_from_stats(entry)


INTERNER = Interner()


# ---------------------------------------------------------------------------
# a simulated host: its switch (table, ports) survives reconnections
# ---------------------------------------------------------------------------

class SimHost:
    """One host's br-int: its table and ports live here, connections come and go.

    ``listeners`` are called as ``listener(host, event, detail)``; events: ``"up"``
    (handshake done: the controller has our ports), ``"down"``, ``"read"`` (a flow or
    aggregate stats request answered), ``"applied"`` (``detail``: list of ``(key,
    previous value or None)`` touched by one flow_mod or one bundle commit; the new
    value is ``host.table.get(key)``).
    """

    def __init__(self, name: str, vtep_ip: str, reactor: Any, interner: Optional[Interner] = None,
                 bridge: str = "br-int", dpid: Optional[int] = None, max_backoff: float = 8.0):
        self.name = name
        self.vtep_ip = vtep_ip
        self.bridge = bridge
        self.dpid = dpid if dpid is not None else host_dpid(name)
        self.reactor = reactor
        self.interner = interner or INTERNER
        self.table: Dict[Key, Value] = {}
        #: (cookie >> 32, in_port or None) -> flows, for aggregate stats, kept in step by
        #: every flow_mod and undo (:meth:`_tally`); None = not made yet, or stale.
        #: Anything that edits ``table`` directly must call :meth:`changed`.
        self._summary: Optional[Dict[Tuple[int, Optional[int]], int]] = None
        #: port name -> [ofport, hw_addr, state]
        self.ports: Dict[str, List[Any]] = {bridge: [OFPP_LOCAL, self._mac(0), 0],
                                            TUNNEL_PORT: [1, self._mac(1), 0]}
        self._next_ofport = 2
        self.listeners: List[Callable[["SimHost", str, Any], None]] = []
        self.conn: Optional["SimSwitchProtocol"] = None
        #: every open connection (a host may dial several controllers), for roles
        self.conns: List["SimSwitchProtocol"] = []
        #: the newest generation id seen in a MASTER/SLAVE role request (None: none yet)
        self.election_id: Optional[int] = None
        #: writes refused because their connection was SLAVE
        self.slave_refusals = 0
        self.max_backoff = max_backoff
        self._backoff = min(1.0, max_backoff)
        self._retry: Any = None
        self._target: Optional[Tuple[str, int]] = None
        self._stopped = True
        self._connector: Any = None
        # counters
        self.flow_mods = 0
        self.bundles = 0
        self.reads = 0
        #: of ``reads``: aggregate (count) requests, and flow-stats (full) reads
        self.count_reads = 0
        self.flow_reads = 0
        self.handshakes = 0
        self.errors_sent = 0
        self.up_at: Optional[float] = None
        self.last_read_at: Optional[float] = None
        self.last_applied_at: Optional[float] = None

    def _mac(self, n: int) -> bytes:
        return bytes([0x0A, (self.dpid >> 16) & 0xFF, (self.dpid >> 8) & 0xFF, self.dpid & 0xFF,
                      (n >> 8) & 0xFF, n & 0xFF])

    def __repr__(self) -> str:
        return f"<SimHost {self.name} dpid {self.dpid:016x}>"

    @property
    def up(self) -> bool:
        return self.conn is not None and self.conn.up

    def port_map(self) -> Dict[str, int]:
        return {name: p[0] for name, p in self.ports.items()}

    # -- connection ----------------------------------------------------------
    def connect(self, host: str, port: int) -> None:
        """Connect to the controller and keep reconnecting (like OVS: back-off from 1 s,
        doubling up to ``max_backoff``) until :meth:`stop`."""
        self._target = (host, port)
        self._stopped = False
        self._dial()

    def _dial(self) -> None:
        self._retry = None
        if self._stopped or self._target is None:
            return
        f = _SwitchFactory(self)
        self._connector = self.reactor.connectTCP(self._target[0], self._target[1], f, timeout=10)

    def _lost(self) -> None:
        if self._stopped:
            return
        delay = self._backoff
        self._backoff = min(self.max_backoff, self._backoff * 2)
        self._retry = self.reactor.callLater(delay, self._dial)

    def stop(self) -> None:
        self._stopped = True
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.abortConnection()
        elif self._connector is not None:
            self._connector.disconnect()

    def _emit(self, event: str, detail: Any = None) -> None:
        for cb in list(self.listeners):
            try:
                cb(self, event, detail)
            except Exception:
                log.failure("simulated switch listener failed")

    # -- ports (what the agent's OVS would do) -----------------------------------
    def add_port(self, name: str) -> int:
        """A new port (an endpoint's veth on br-int): port-status ADD; its ofport."""
        if name in self.ports:
            raise ValueError(f"{self.name}: port {name} exists")
        ofport = self._next_ofport
        self._next_ofport += 1
        self.ports[name] = [ofport, self._mac(ofport), 0]
        self._port_status(ofp.OFPPR_ADD, name)
        return ofport

    def remove_port(self, name: str) -> None:
        if name not in self.ports:
            raise ValueError(f"{self.name}: no port {name}")
        self._port_status(ofp.OFPPR_DELETE, name)
        del self.ports[name]

    def set_link(self, name: str, up: bool) -> None:
        """Link down/up: port-status MODIFY, the port (and its ofport) stays."""
        self.ports[name][2] = 0 if up else ofp.OFPPS_LINK_DOWN
        self._port_status(ofp.OFPPR_MODIFY, name)

    def _port_bytes(self, name: str) -> bytes:
        ofport, mac, state = self.ports[name]
        return _PORT.pack(ofport, mac, name.encode()[:15], 0, state, 0, 0, 0, 0, 10_000_000, 10_000_000)

    def _port_status(self, reason: int, name: str) -> None:
        if self.up:
            body = struct.pack("!B7x", reason) + self._port_bytes(name)
            self.conn.send_msg(ofp.OFPT_PORT_STATUS, self.conn.next_xid(), body)

    # -- table -----------------------------------------------------------------
    def changed(self) -> None:
        """The table was edited directly (a test changing flows behind the controller's back)."""
        self._summary = None

    def count(self, table: int, match: bytes, cookie: int, mask: int) -> int:
        """An aggregate request's flow count.  The shapes a controller asks on a
        reconnect (all tables, no match or only ``in_port``, a cookie mask on the upper
        32 bits) are answered from a summary made once and kept up to date: 500
        switches × 30k flows × a few dozen counts would otherwise be the harness's
        own storm.  Anything else scans, as :meth:`_selected` does."""
        req = self.interner.match_fields(match)
        port: Optional[int] = None
        if req:
            v = req.get(_IN_PORT)
            if len(req) != 1 or v is None or v[1] != 0xFFFFFFFF:
                return len(self._selected(table, match, cookie, mask))
            port = v[0]
        if table != OFPTT_ALL or mask & 0xFFFFFFFF:
            return len(self._selected(table, match, cookie, mask))
        summary = self._summary
        if summary is None:
            summary = self._summary = {}
            fields = self.interner.match_fields
            for key, (c, _i) in self.table.items():
                hi = c >> 32
                summary[(hi, None)] = summary.get((hi, None), 0) + 1
                ip = fields(key[2]).get(_IN_PORT)
                if ip is not None and ip[1] == 0xFFFFFFFF:
                    summary[(hi, ip[0])] = summary.get((hi, ip[0]), 0) + 1
        want = cookie & mask
        return sum(n for (hi, p), n in summary.items() if p == port and (hi << 32) & mask == want)

    def _selected(self, table: int, match: bytes, cookie: int, mask: int) -> List[Key]:
        req = self.interner.match_fields(match)
        fields = self.interner.match_fields
        out = []
        for key, (c, _i) in self.table.items():
            if table != OFPTT_ALL and key[0] != table:
                continue
            if mask and c & mask != cookie & mask:
                continue
            if req and not _subsumes(req, fields(key[2])):
                continue
            out.append(key)
        return out

    def apply(self, mod: FlowMod, touched: List[Tuple[Key, Optional[Value]]]) -> None:
        """Apply one flow_mod; every entry changed is appended to ``touched`` (for undo)."""
        cmd = mod.command
        t = self.table
        if cmd == ofp.OFPFC_ADD:
            key = self.interner.key(mod.table, mod.priority, mod.match)
            old = t.get(key)
            touched.append((key, old))
            new = t[key] = self.interner.value(mod.cookie, mod.instructions)
            self._tally(key, old, -1)
            self._tally(key, new, 1)
            return
        mask = mod.cookie_mask
        if cmd in (ofp.OFPFC_MODIFY_STRICT, ofp.OFPFC_DELETE_STRICT):
            tables = range(255) if mod.table == OFPTT_ALL else (mod.table,)
            keys = [k for k in ((tb, mod.priority, mod.match) for tb in tables) if k in t]
            keys = [k for k in keys if not mask or t[k][0] & mask == mod.cookie & mask]
        else:
            keys = self._selected(mod.table, mod.match, mod.cookie, mask)
        for key in keys:
            old = t[key]
            touched.append((key, old))
            if cmd in (ofp.OFPFC_DELETE, ofp.OFPFC_DELETE_STRICT):
                del t[key]
                self._tally(key, old, -1)
            else:  # OpenFlow 1.3: a modify keeps the cookie (the summary's part), adds nothing
                t[key] = self.interner.value(old[0], mod.instructions)

    def undo(self, touched: List[Tuple[Key, Optional[Value]]]) -> None:
        for key, old in reversed(touched):
            self._tally(key, self.table.get(key), -1)
            if old is None:
                self.table.pop(key, None)
            else:
                self.table[key] = old
            self._tally(key, old, 1)

    def _tally(self, key: Key, value: Optional[Value], sign: int) -> None:
        """Keep the aggregate summary (if made) in step with one entry coming or going:
        rebuilding it after every change made each audit of 500 switches × 21k flows a
        7 s stall of the whole harness (the p99 of the 500x10k bench)."""
        summary = self._summary
        if summary is None or value is None:
            return
        hi = value[0] >> 32
        summary[(hi, None)] = summary.get((hi, None), 0) + sign
        ip = self.interner.match_fields(key[2]).get(_IN_PORT)
        if ip is not None and ip[1] == 0xFFFFFFFF:
            summary[(hi, ip[0])] = summary.get((hi, ip[0]), 0) + sign

    def flows(self) -> Set[Flow]:
        """The table as canonical flows (slow: os-ken decodes each entry)."""
        return {decode_entry(k, v) for k, v in self.table.items()}


class _SwitchFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, host: SimHost):
        self.host = host

    def buildProtocol(self, addr: Any) -> "SimSwitchProtocol":
        return SimSwitchProtocol(self.host)

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.host._lost()


_UNSUPPORTED_LOGGED: Set[str] = set()


class SimSwitchProtocol(protocol.Protocol):
    """One connection of a :class:`SimHost`'s switch to the controller."""

    def __init__(self, host: SimHost):
        self.host = host
        self._buf = bytearray()
        self._xid = 0x40000000
        self.up = False
        self.hello = False
        #: OFPCR_ROLE_*: OVS starts every connection EQUAL
        self.role = ofp.OFPCR_ROLE_EQUAL
        #: bundle id -> {"ops": [FlowMod], "closed": bool, "flags": int}
        self.bundles: Dict[int, Dict[str, Any]] = {}
        self._pings: Dict[int, Tuple[float, defer.Deferred]] = {}

    def ping(self) -> defer.Deferred:
        """Send an ECHO_REQUEST; fires with the round trip in seconds.  The controller
        answers echoes on its reactor, so the round trip bounds how long that reactor
        was busy with something else (a stall) as seen from the wire."""
        xid = self.next_xid()
        d: defer.Deferred = defer.Deferred()
        self._pings[xid] = (self.host.reactor.seconds(), d)
        self.send_msg(ofp.OFPT_ECHO_REQUEST, xid)
        return d

    def next_xid(self) -> int:
        self._xid = (self._xid + 1) & 0xFFFFFFFF
        return self._xid

    def connectionMade(self) -> None:
        self.host.conn = self
        self.host.conns.append(self)
        bitmap = struct.pack("!HHI", ofp.OFPHET_VERSIONBITMAP, 8, 1 << OFP_VERSION)
        self.send_msg(ofp.OFPT_HELLO, self.next_xid(), bitmap)

    def connectionLost(self, reason: Any = None) -> None:
        was_up = self.up
        self.up = False
        pings, self._pings = self._pings, {}
        for _sent, d in pings.values():
            d.errback(ConnectionError(f"{self.host.name}: connection lost before the echo reply"))
        if self.host.conn is self:
            self.host.conn = None
        if self in self.host.conns:
            self.host.conns.remove(self)
        if was_up:
            self.host._emit("down")
        self.host._lost()

    def send_msg(self, mtype: int, xid: int, body: bytes = b"") -> None:
        self.transport.write(HEADER.pack(OFP_VERSION, mtype, 8 + len(body), xid) + body)

    def _error(self, xid: int, e: Refused, data: bytes) -> None:
        self.host.errors_sent += 1
        if e.experimenter:
            body = struct.pack("!HHI", ofp.OFPET_EXPERIMENTER, e.code, ONF) + data[:64]
        else:
            body = _ERROR.pack(e.type, e.code) + data[:64]
        self.send_msg(ofp.OFPT_ERROR, xid, body)

    def _unsupported(self, xid: int, what: str, data: bytes, code: int = ofp.OFPBRC_BAD_TYPE) -> None:
        if what not in _UNSUPPORTED_LOGGED:
            _UNSUPPORTED_LOGGED.add(what)
            log.warn("simulated switch: {what} is not simulated; answered with an error", what=what)
        self._error(xid, Refused(ofp.OFPET_BAD_REQUEST, code, what), data)

    # -- receiving ---------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 8:
            version, mtype, length, xid = HEADER.unpack_from(buf, pos)
            if length < 8:
                log.warn("{h}: controller sent a message of length {n}; closing", h=self.host.name, n=length)
                self.transport.abortConnection()
                return
            if n - pos < length:
                break
            msg = bytes(buf[pos:pos + length])
            pos += length
            try:
                self._dispatch(version, mtype, xid, msg)
            except Refused as e:
                self._error(xid, e, msg)
        if pos:
            del buf[:pos]

    def _dispatch(self, version: int, mtype: int, xid: int, msg: bytes) -> None:
        if mtype == ofp.OFPT_HELLO:
            self.hello = True
            return
        if not self.hello:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE, "message before HELLO")
        if version != OFP_VERSION:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_VERSION, f"version {version}")
        h = self.host
        if mtype == ofp.OFPT_ECHO_REQUEST:
            self.send_msg(ofp.OFPT_ECHO_REPLY, xid, msg[8:])
        elif mtype == ofp.OFPT_ECHO_REPLY:
            sent = self._pings.pop(xid, None)
            if sent is not None:
                sent[1].callback(h.reactor.seconds() - sent[0])
        elif mtype == ofp.OFPT_FEATURES_REQUEST:
            caps = ofp.OFPC_FLOW_STATS | ofp.OFPC_TABLE_STATS | ofp.OFPC_PORT_STATS
            self.send_msg(ofp.OFPT_FEATURES_REPLY, xid, _FEATURES.pack(h.dpid, 0, 254, 0, caps, 0))
        elif mtype == ofp.OFPT_GET_CONFIG_REQUEST:
            self.send_msg(ofp.OFPT_GET_CONFIG_REPLY, xid, struct.pack("!HH", 0, 0xFFFF))
        elif mtype == ofp.OFPT_SET_CONFIG:
            pass
        elif mtype == ofp.OFPT_BARRIER_REQUEST:
            self.send_msg(ofp.OFPT_BARRIER_REPLY, xid)
        elif mtype == ofp.OFPT_ROLE_REQUEST:
            self._role_request(xid, msg)
        elif mtype == ofp.OFPT_FLOW_MOD:
            self._reject_slave()
            mod = parse_flow_mod(msg, h.interner)
            touched: List[Tuple[Key, Optional[Value]]] = []
            h.apply(mod, touched)
            h.flow_mods += 1
            h.last_applied_at = h.reactor.seconds()
            h._emit("applied", touched)
        elif mtype == ofp.OFPT_MULTIPART_REQUEST:
            self._multipart(xid, msg)
        elif mtype == ofp.OFPT_EXPERIMENTER:
            self._experimenter(xid, msg)
        elif mtype == ofp.OFPT_ERROR:
            log.warn("{h}: controller sent OFPT_ERROR {m}", h=h.name, m=msg[8:12].hex())
        else:
            self._unsupported(xid, f"message type {mtype}", msg)

    # -- multipart ---------------------------------------------------------------
    def _reply_parts(self, xid: int, mp_type: int, items: Iterable[bytes]) -> None:
        parts: List[bytes] = []
        size = 0
        out = []
        for item in items:
            if size + len(item) > MAX_BODY and parts:
                out.append(b"".join(parts))
                parts, size = [], 0
            parts.append(item)
            size += len(item)
        out.append(b"".join(parts))
        for i, body in enumerate(out):
            flags = ofp.OFPMPF_REPLY_MORE if i < len(out) - 1 else 0
            self.send_msg(ofp.OFPT_MULTIPART_REPLY, xid, _MP_HDR.pack(mp_type, flags) + body)

    def _multipart(self, xid: int, msg: bytes) -> None:
        if len(msg) < 16:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "multipart request too short")
        mp_type, _flags = _MP_HDR.unpack_from(msg, 8)
        h = self.host
        if mp_type in (ofp.OFPMP_FLOW, ofp.OFPMP_AGGREGATE):
            if len(msg) < 56:
                raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "stats request too short")
            table, out_port, out_group, cookie, mask = _FLOW_STATS_REQ.unpack_from(msg, 16)
            if (out_port, out_group) != (OFPP_ANY, OFPG_ANY):
                self._unsupported(xid, "flow stats by out_port/out_group", msg, ofp.OFPBRC_EPERM)
                return
            mlen = int.from_bytes(msg[50:52], "big")
            match = h.interner.match(msg[48:48 + _pad8(mlen)])
            h.reads += 1
            h.last_read_at = h.reactor.seconds()
            if mp_type == ofp.OFPMP_AGGREGATE:
                h.count_reads += 1
                self._reply_parts(xid, mp_type, [_AGGREGATE.pack(0, 0, h.count(table, match, cookie, mask))])
            else:
                h.flow_reads += 1
                keys = h._selected(table, match, cookie, mask)
                t = h.table
                pack = _FLOW_STATS.pack

                def entries():
                    for k in keys:
                        c, inst = t[k]
                        yield pack(48 + len(k[2]) + len(inst), k[0], 0, 0, k[1], 0, 0, 0, c, 0, 0) \
                            + k[2] + inst
                self._reply_parts(xid, mp_type, entries())
            h._emit("read", mp_type)
        elif mp_type == ofp.OFPMP_PORT_DESC:
            self._reply_parts(xid, mp_type, [h._port_bytes(n) for n in h.ports])
            if not self.up:
                self.up = True
                h.handshakes += 1
                h._backoff = min(1.0, h.max_backoff)
                h.up_at = h.reactor.seconds()
                h._emit("up")
        elif mp_type == ofp.OFPMP_GROUP_DESC:
            # a switch without groups (group_mod is not simulated): an empty list, as an
            # OVS bridge with none answers, so the controller's group read-back is no error
            self._reply_parts(xid, mp_type, [])
        elif mp_type == ofp.OFPMP_DESC:
            desc = struct.pack("!256s256s256s32s256s", b"contiv-sdn", b"simulated switch",
                               b"simswitch", h.name.encode()[:31], h.bridge.encode())
            self._reply_parts(xid, mp_type, [desc])
        else:
            self._unsupported(xid, f"multipart type {mp_type}", msg, ofp.OFPBRC_BAD_MULTIPART)

    # -- bundles (ONF EXT-230, as OVS implements it for OpenFlow 1.3) ------------------
    def _experimenter(self, xid: int, msg: bytes) -> None:
        if len(msg) < 16:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "experimenter message too short")
        exp, exp_type = struct.unpack_from("!II", msg, 8)
        if exp != ONF or exp_type not in (ofp.ONF_ET_BUNDLE_CONTROL, ofp.ONF_ET_BUNDLE_ADD_MESSAGE):
            self._unsupported(xid, f"experimenter {exp:#x}/{exp_type}", msg, ofp.OFPBRC_BAD_EXPERIMENTER)
            return
        if len(msg) < 24:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "bundle message too short")
        self._reject_slave()
        if exp_type == ofp.ONF_ET_BUNDLE_ADD_MESSAGE:
            self._bundle_add(xid, msg)
        else:
            self._bundle_ctrl(xid, msg)

    # -- roles -------------------------------------------------------------------
    def _reject_slave(self) -> None:
        if self.role == ofp.OFPCR_ROLE_SLAVE:
            self.host.slave_refusals += 1
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_IS_SLAVE, "controller is SLAVE")

    def _role_request(self, xid: int, msg: bytes) -> None:
        if len(msg) != 24:
            raise Refused(ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_LEN, "role request length")
        role, generation = struct.unpack_from("!I4xQ", msg, 8)
        h = self.host
        if role not in (ofp.OFPCR_ROLE_NOCHANGE, ofp.OFPCR_ROLE_EQUAL, ofp.OFPCR_ROLE_MASTER,
                        ofp.OFPCR_ROLE_SLAVE):
            raise Refused(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_BAD_ROLE, f"role {role}")
        if role in (ofp.OFPCR_ROLE_MASTER, ofp.OFPCR_ROLE_SLAVE):
            if h.election_id is not None:
                diff = (generation - h.election_id) & 0xFFFFFFFFFFFFFFFF
                if diff >= 1 << 63:  # OVS compares as signed 64-bit
                    raise Refused(ofp.OFPET_ROLE_REQUEST_FAILED, ofp.OFPRRFC_STALE,
                                  f"generation {generation} older than {h.election_id}")
            h.election_id = generation
        if role == ofp.OFPCR_ROLE_MASTER:
            for other in h.conns:
                if other is not self and other.role == ofp.OFPCR_ROLE_MASTER:
                    other.role = ofp.OFPCR_ROLE_SLAVE
        if role != ofp.OFPCR_ROLE_NOCHANGE:
            self.role = role
        self.send_msg(ofp.OFPT_ROLE_REPLY, xid,
                      struct.pack("!I4xQ", self.role, h.election_id or 0))

    def _bundle_error(self, code: int, why: str) -> Refused:
        return Refused(ofp.OFPET_EXPERIMENTER, code, why, experimenter=True)

    def _bundle_add(self, xid: int, msg: bytes) -> None:
        _exp, _t, bid, flags = _BUNDLE_ADD.unpack_from(msg, 8)
        b = self.bundles.get(bid)
        if b is None:  # OVS opens a bundle implicitly on its first add
            b = self.bundles[bid] = {"ops": [], "closed": False, "flags": flags}
        if b["closed"]:
            raise self._bundle_error(ofp.ONFERR_ET_BUNDLE_CLOSED, f"bundle {bid} is closed")
        inner = msg[24:]
        if len(inner) < 8:
            raise self._bundle_error(ofp.ONFERR_ET_MSG_BAD_LEN, "no message in bundle_add")
        _v, itype, ilen, ixid = HEADER.unpack_from(inner)
        if ilen != len(inner):
            raise self._bundle_error(ofp.ONFERR_ET_MSG_BAD_LEN, "inner message length")
        if ixid != xid:
            raise self._bundle_error(ofp.ONFERR_ET_MSG_BAD_XID, "inner xid differs")
        if itype != ofp.OFPT_FLOW_MOD:
            self._unsupported(xid, f"message type {itype} in a bundle", inner)
            return
        b["ops"].append(parse_flow_mod(inner, self.host.interner))  # Refused -> error for xid, left out

    def _bundle_ctrl(self, xid: int, msg: bytes) -> None:
        _exp, _t, bid, ctype, flags = _BUNDLE_CTRL.unpack_from(msg, 8)
        b = self.bundles.get(bid)
        if ctype == ofp.ONF_BCT_OPEN_REQUEST:
            if b is not None:
                raise self._bundle_error(ofp.ONFERR_ET_BUNDLE_EXIST, f"bundle {bid} exists")
            self.bundles[bid] = {"ops": [], "closed": False, "flags": flags}
        elif b is None:
            raise self._bundle_error(ofp.ONFERR_ET_BAD_ID, f"no bundle {bid}")
        elif ctype == ofp.ONF_BCT_CLOSE_REQUEST:
            b["closed"] = True
        elif ctype == ofp.ONF_BCT_DISCARD_REQUEST:
            del self.bundles[bid]
        elif ctype == ofp.ONF_BCT_COMMIT_REQUEST:
            del self.bundles[bid]
            h = self.host
            touched: List[Tuple[Key, Optional[Value]]] = []
            try:
                for op in b["ops"]:
                    h.apply(op, touched)
            except Exception as e:  # all or nothing
                h.undo(touched)
                log.failure("{h}: bundle {bid} failed on commit; rolled back", h=h.name, bid=bid)
                raise self._bundle_error(ofp.ONFERR_ET_FAILED, f"commit failed: {e}")
            h.flow_mods += len(b["ops"])
            h.bundles += 1
            h.last_applied_at = h.reactor.seconds()
            if b["ops"]:
                h._emit("applied", touched)
        else:
            raise self._bundle_error(ofp.ONFERR_ET_BAD_TYPE, f"bundle control type {ctype}")
        body = _BUNDLE_CTRL.pack(ONF, ofp.ONF_ET_BUNDLE_CONTROL, bid, ctype + 1, flags)
        self.send_msg(ofp.OFPT_EXPERIMENTER, xid, body)


# ---------------------------------------------------------------------------
# the netmaster process, run from the reactor
# ---------------------------------------------------------------------------

class _Exit(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: defer.Deferred = defer.Deferred()

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(getattr(reason.value, "exitCode", None))


class NetmasterRunner:
    """Runs a :class:`~contiv_sdn.testing.netmaster.NetmasterProcess`'s command from the
    reactor (its own ``start`` blocks, which would starve the simulated switches).

    ``start`` returns once ``GET /version`` answers; ``stop`` sends SIGTERM and waits.
    The process's CPU time and RSS are read from /proc (the netmaster is the process
    itself: ``twistd -n``)."""

    def __init__(self, spec: Any, reactor: Any):
        self.spec = spec
        self.reactor = reactor
        self.transport: Any = None
        self._exit: Optional[_Exit] = None
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @property
    def pid(self) -> Optional[int]:
        return self.transport.pid if self.transport is not None else None

    async def start(self, timeout: float = 60.0) -> None:
        spec = self.spec
        os.makedirs(spec.state_dir, exist_ok=True)
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env = dict(os.environ)
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        env.update(spec.env)
        argv = spec.command()
        self._exit = _Exit()
        self.transport = self.reactor.spawnProcess(self._exit, argv[0], argv, env=env, path=spec.state_dir,
                                                   childFDs={0: "w", 1: "r", 2: "r"})
        deadline = self.reactor.seconds() + timeout
        while self.reactor.seconds() < deadline:
            if self._exit.ended.called:
                raise RuntimeError(f"netmaster exited at start:\n{spec.log_tail()}")
            try:
                r = await treq.get(spec.url + "/version", pool=self.pool, timeout=2, reactor=self.reactor)
                await treq.content(r)
                if r.code == 200:
                    return
            except Exception:
                pass
            await deferLater(self.reactor, 0.05, lambda: None)
        await self.stop()
        raise RuntimeError(f"netmaster did not answer /version in {timeout}s:\n{spec.log_tail()}")

    async def stop(self, timeout: float = 30.0) -> None:
        if self.transport is None or self._exit is None:
            return
        transport, ended = self.transport, self._exit.ended
        self.transport = None
        if not ended.called:
            try:
                transport.signalProcess("TERM")
            except net_error.ProcessExitedAlready:
                pass
            timer = self.reactor.callLater(timeout, self._kill, transport)
            await ended
            if timer.active():
                timer.cancel()

    @staticmethod
    def _kill(transport: Any) -> None:
        try:
            transport.signalProcess("KILL")
        except net_error.ProcessExitedAlready:
            pass

    def cpu_seconds(self) -> float:
        """User + system CPU time of the netmaster process so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


# ---------------------------------------------------------------------------
# registration, as netplugin does it
# ---------------------------------------------------------------------------

async def register_host(record: Dict[str, Any], netmaster_url: str, store: Any,
                        pool: Any = None, refresh: float = 30.0, reactor: Any = None) -> str:
    """Register a host the way netplugin does: ``POST /plugin/registerHost`` when the
    netmaster has that route, else (it answers 404) the ``state:host`` record written
    with :meth:`Store.put_state`, as ``contiv_sdn.agent.registration`` wrote it before
    the route existed.  Returns ``"route"`` or ``"store"``."""
    body = {k: v for k, v in record.items() if k != "updated"}
    body["refresh"] = refresh
    kw: Dict[str, Any] = {"headers": {b"Content-Type": [b"application/json"]}, "timeout": 30}
    if pool is not None:
        kw["pool"] = pool
    if reactor is not None:
        kw["reactor"] = reactor
    r = await treq.post(netmaster_url + "/plugin/registerHost", data=json.dumps(body).encode(), **kw)
    text = await treq.content(r)
    if r.code == 200:
        return "route"
    if r.code != 404:
        raise RuntimeError(f"registerHost for {record.get('name')}: HTTP {r.code}: "
                           f"{text.decode('utf-8', 'replace')[:300]}")
    stored = dict(body)
    stored["updated"] = int(time.time())
    await store.put_state("host", record["name"], stored)
    return "store"


# ---------------------------------------------------------------------------
# the cluster
# ---------------------------------------------------------------------------

class Cluster:
    """Simulated hosts against one netmaster: registration, endpoints, ports, the oracle.

    ``ofp`` is ``(host, port)`` of the netmaster's OpenFlow listener.
    """

    def __init__(self, netmaster_url: str, ofp_address: Tuple[str, int], redis_url: str,
                 reactor: Any = None, max_backoff: float = 8.0, tenant: str = "default"):
        if reactor is None:
            from twisted.internet import reactor as _r
            reactor = _r
        self.url = netmaster_url
        self.ofp = ofp_address
        self.redis_url = redis_url
        self.reactor = reactor
        self.max_backoff = max_backoff
        self.tenant = tenant
        self.interner = Interner()
        self.hosts: Dict[str, SimHost] = {}
        #: endpoint id -> {"host", "network", "port", "ofport", "ip", "mac", "group"}
        self.endpoints: Dict[str, Dict[str, Any]] = {}
        self.store: Any = None
        self.client: Any = None
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 32
        self.registration: Optional[str] = None
        self.listeners: List[Callable[[SimHost, str, Any], None]] = []

    async def start(self) -> "Cluster":
        from contiv_sdn.agent.netmaster import NetmasterClient
        from contiv_sdn.store import Store
        self.store = await Store.connect(self.redis_url)
        self.client = NetmasterClient(self.url, reactor=self.reactor)
        return self

    async def close(self) -> None:
        for h in self.hosts.values():
            h.stop()
        if self.client is not None:
            await self.client.close()
        await self.pool.closeCachedConnections()
        if self.store is not None:
            await self.store.close()

    # -- REST --------------------------------------------------------------------
    async def rest(self, method: str, path: str, body: Any = None) -> Any:
        kw: Dict[str, Any] = {"pool": self.pool, "timeout": 60, "reactor": self.reactor}
        if body is not None:
            kw["data"] = json.dumps(body).encode()
            kw["headers"] = {b"Content-Type": [b"application/json"]}
        r = await treq.request(method, self.url + path, **kw)
        text = await treq.content(r)
        if r.code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {r.code}: {text.decode('utf-8', 'replace')[:300]}")
        return json.loads(text) if text.strip() else None

    async def create_network(self, name: str, subnet: str, encap: str = "vxlan",
                             gateway: str = "") -> Any:
        body = {"tenantName": self.tenant, "networkName": name, "encap": encap, "subnet": subnet}
        if gateway:
            body["gateway"] = gateway
        return await self.rest("POST", f"/api/v1/networks/{self.tenant}:{name}/", body)

    # -- hosts -------------------------------------------------------------------
    def vtep_of(self, index: int) -> str:
        return f"172.{16 + (index >> 16)}.{(index >> 8) & 0xFF}.{index & 0xFF}"

    async def add_host(self, name: str, vtep_ip: str, connect: bool = True) -> SimHost:
        """Register the host (as netplugin does), then (optionally) connect its switch."""
        h = SimHost(name, vtep_ip, self.reactor, self.interner, max_backoff=self.max_backoff)
        h.listeners.append(self._relay)
        self.hosts[name] = h
        record = dict(host_record(name, vtep_ip, h.dpid, h.bridge, None, 1500))
        if self.registration == "store":
            await register_store(self.store, record)
        else:
            self.registration = await register_host(record, self.url, self.store, pool=self.pool,
                                                    reactor=self.reactor)
        if connect:
            h.connect(*self.ofp)
        return h

    def _relay(self, host: SimHost, event: str, detail: Any) -> None:
        for cb in list(self.listeners):
            cb(host, event, detail)

    def connect_all(self) -> None:
        for h in self.hosts.values():
            if h._stopped:
                h.connect(*self.ofp)

    async def wait(self, predicate: Callable[[], bool], timeout: float, what: str,
                   every: float = 0.05) -> None:
        """Wait on the reactor until ``predicate()``; raise naming ``what`` after ``timeout``."""
        deadline = self.reactor.seconds() + timeout
        while not predicate():
            if self.reactor.seconds() > deadline:
                raise TimeoutError(f"{what}: not reached within {timeout:g}s")
            await deferLater(self.reactor, every, lambda: None)

    async def wait_all_up(self, timeout: float = 120.0, since: Optional[float] = None) -> None:
        def ok() -> bool:
            return all(h.up and (since is None or (h.up_at or 0) >= since) for h in self.hosts.values())
        await self.wait(ok, timeout, f"all {len(self.hosts)} switches connected")

    # -- endpoints (the agent's calls, the agent's port names) ----------------------------
    async def create_endpoint(self, host: str, network: str, ep_id: str, group: str = "",
                              attach: bool = True) -> Dict[str, Any]:
        """``/plugin/createEndpoint`` exactly as the agent calls it, then (``attach``) the
        endpoint's port appears on the host's switch, as the agent's OVS port would."""
        name = port_name(ep_id)
        config = await self.client.create_endpoint(
            self.tenant, network, group, ep_id, ep_id[:12], ep_id, host, "", name, {},
            vtep_ip=self.hosts[host].vtep_ip)
        self.endpoints[ep_id] = {"host": host, "network": network, "group": group, "port": name,
                                 "ofport": None, "ip": config.get("ipAddress", ""),
                                 "mac": config.get("macAddress", "")}
        if attach:
            self.attach(ep_id)
        return config

    def attach(self, ep_id: str) -> int:
        ep = self.endpoints[ep_id]
        ep["ofport"] = self.hosts[ep["host"]].add_port(ep["port"])
        return ep["ofport"]

    async def delete_endpoint(self, ep_id: str) -> None:
        """As the agent: its port goes first, then the allocation is released."""
        ep = self.endpoints.pop(ep_id)
        if ep["ofport"] is not None:
            self.hosts[ep["host"]].remove_port(ep["port"])
        await self.client.delete_endpoint(self.tenant, ep["network"], ep["group"], ep_id)

    def flap(self, ep_id: str) -> int:
        """The endpoint's port removed and added again (it gets a new ofport)."""
        ep = self.endpoints[ep_id]
        h = self.hosts[ep["host"]]
        h.remove_port(ep["port"])
        ep["ofport"] = h.add_port(ep["port"])
        return ep["ofport"]

    # -- the oracle ------------------------------------------------------------------
    async def oracle(self) -> Dict[str, Dict[Key, Value]]:
        """What every simulated switch must hold: a full compile of a store snapshot,
        with the controller's snapshot builder and the switches' port maps."""
        from contiv_sdn.controller.snapshot import build_checked
        from contiv_sdn.pipeline.compiler import compile_hosts
        rev, data = await self.store.snapshot()
        ports = {h.dpid: h.port_map() for h in self.hosts.values()}
        snap = build_checked(rev, data, ports).snapshot
        compiled = compile_hosts(snap, [n for n in self.hosts if n in snap.hosts])
        return {name: entries_of(flows, self.interner) for name, flows in compiled.flows.items()}

    def differences(self, expected: Dict[str, Dict[Key, Value]], limit: int = 5) -> List[str]:
        """Every switch whose table is not exactly ``expected`` (readable, a few flows each)."""
        out = []
        for name, h in sorted(self.hosts.items()):
            want = expected.get(name)
            if want is None:
                out.append(f"{name}: no compiled flows (host unknown to the oracle)")
                continue
            if h.table == want:
                continue
            missing = [k for k in want if k not in h.table]
            extra = [k for k in h.table if k not in want]
            wrong = [k for k in want if k in h.table and h.table[k] != want[k]]
            lines = [f"{name}: {len(missing)} missing, {len(extra)} extra, {len(wrong)} different"]
            lines += [f"  missing {decode_entry(k, want[k]).to_ofctl()}" for k in missing[:limit]]
            lines += [f"  extra   {decode_entry(k, h.table[k]).to_ofctl()}" for k in extra[:limit]]
            lines += [f"  has     {decode_entry(k, h.table[k]).to_ofctl()}\n  wants   "
                      f"{decode_entry(k, want[k]).to_ofctl()}" for k in wrong[:limit]]
            out.append("\n".join(lines))
        return out

    async def wait_matching(self, expected: Dict[str, Dict[Key, Value]], timeout: float) -> None:
        """Wait until every switch holds exactly ``expected``; raise with the differences."""
        def ok() -> bool:
            return all(h.table == expected.get(n) for n, h in self.hosts.items())
        try:
            await self.wait(ok, timeout, "every switch holding the full compile's flows", every=0.1)
        except TimeoutError as e:
            diffs = self.differences(expected)
            raise AssertionError(f"{e}; {len(diffs)} switches differ:\n" + "\n".join(diffs[:10]))

    def totals(self) -> Dict[str, int]:
        hs = self.hosts.values()
        return {"flow_mods": sum(h.flow_mods for h in hs), "bundles": sum(h.bundles for h in hs),
                "reads": sum(h.reads for h in hs), "flows": sum(len(h.table) for h in hs),
                "count_reads": sum(h.count_reads for h in hs), "flow_reads": sum(h.flow_reads for h in hs),
                "errors_sent": sum(h.errors_sent for h in hs)}


async def register_store(store: Any, record: Dict[str, Any], refresh: float = 30.0) -> None:
    """The store half of :func:`register_host` (once the route is known to be absent)."""
    stored = {k: v for k, v in record.items()}
    stored["refresh"] = refresh
    stored["updated"] = int(time.time())
    await store.put_state("host", record["name"], stored)


def endpoint_id(n: int, salt: str = "sim") -> str:
    """A Docker-style 64-hex endpoint id, distinct in its first 12 characters (the
    agent's port name keeps those, see :func:`port_name`)."""
    import hashlib
    return hashlib.sha256(f"{salt}:{n}".encode()).hexdigest()


def in_port_tlv(ofport: int) -> bytes:
    """The OXM bytes of ``in_port=<ofport>``: a local endpoint's flows carry them."""
    return struct.pack("!II", (ofp.OXM_OF_IN_PORT), ofport)


__all__ = ["Cluster", "FlowMod", "INTERNER", "Interner", "NetmasterRunner", "Refused", "SimHost",
           "SimSwitchProtocol", "decode_entry", "endpoint_id", "entries_of", "in_port_tlv", "parse_flow_mod",
           "register_host", "register_store"]
