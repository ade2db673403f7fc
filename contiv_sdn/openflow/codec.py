"""Flow <-> OpenFlow 1.3 bytes, with os-ken as the source of truth and templates for speed.

Building one FlowMod through os-ken objects costs ~60 us; a controller that pushes
100k flows to a switch cannot pay that per flow.  Flows come in few *shapes*
(same match fields, same masks, same action kinds; only values differ), so for
each shape we let os-ken encode one flow and learn where each value lands:

* the shape's first flow is encoded by os-ken (``B0``);
* every value ("slot") is then changed to a few probe values, each encoded by
  os-ken again; the only offset at which ``B0`` and the probe differ exactly by
  the slot's packed bytes is the slot's offset;
* the template is then checked: re-encoding every probe through the template
  must give os-ken's bytes, byte for byte, or the shape is never templated and
  always goes through os-ken (logged once).

After that, a flow of a known shape costs a tuple walk and one ``struct.pack``.
Long action lists (flood lists naming hundreds of VTEPs: learning such a shape
took seconds, and every new list length is a new shape) are assembled instead
from the frame's template and each action's bytes, checked against os-ken once
per shape (:meth:`FlowModEncoder._long`).
The per-slot packers (ints big-endian, MAC and IPv4 to network bytes) are
trivial; the probes check them against os-ken's own encoders for every shape.

Decoding (:func:`flow_from_stats`) goes through os-ken's parser and maps the
result back into :mod:`contiv_sdn.pipeline.flow`'s canonical form, so a flow
read back from a switch compares equal to the flow that was sent.  Anything the
vocabulary cannot express (foreign actions, unknown instructions) decodes to a
``("raw", text)`` action: it never equals a desired flow, so sync replaces it.
"""

from __future__ import annotations

from collections import OrderedDict
import socket
import struct
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from os_ken.lib import type_desc
from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.logger import Logger

from contiv_sdn.pipeline.flow import COOKIE_MASK, OFPP_CONTROLLER, Flow, canon_match

log = Logger()

ADD = ofp.OFPFC_ADD
MODIFY_STRICT = ofp.OFPFC_MODIFY_STRICT
DELETE_STRICT = ofp.OFPFC_DELETE_STRICT
_COMMANDS = (ADD, MODIFY_STRICT, DELETE_STRICT)

OFP_VERSION = ofp.OFP_VERSION  # 4 = OpenFlow 1.3


class Datapath:
    """The minimum os-ken messages need from a "datapath": its ofproto modules.

    os-ken's message classes read ``datapath.ofproto``/``ofproto_parser`` while
    encoding and store the datapath on parsed messages; nothing else is used.
    """

    ofproto = ofp
    ofproto_parser = parser

    def __init__(self, id: Optional[int] = None):
        self.id = id


DP = Datapath()


# --------------------------------------------------------------------------
# slot packers: value -> bytes; checked against os-ken for every shape
# --------------------------------------------------------------------------

class _Packer:
    """How one slot's value becomes bytes: a struct code, plus a converter unless it is an int."""

    __slots__ = ("code", "width", "conv")

    def __init__(self, code: str, width: int, conv: Optional[Callable[[Any], bytes]] = None):
        self.code, self.width, self.conv = code, width, conv

    def __call__(self, v: Any) -> bytes:
        if self.conv is None:
            return struct.pack("!" + self.code, v)
        return self.conv(v)


# The same addresses recur across flows (an endpoint's MAC and IP appear in its
# classifier, lookup and ARP flows; the router MAC everywhere), so conversions
# are memoized; the caches are simply dropped when they grow large.
_ADDR_CACHE_MAX = 1 << 17
_MAC_CACHE: Dict[str, bytes] = {}
_IPV4_CACHE: Dict[str, bytes] = {}


def _mac_bytes(v: str) -> bytes:
    b = _MAC_CACHE.get(v)
    if b is None:
        b = bytes.fromhex(v.replace(":", ""))
        if len(b) != 6:
            raise ValueError(f"bad MAC {v!r}")
        if len(_MAC_CACHE) >= _ADDR_CACHE_MAX:
            _MAC_CACHE.clear()
        _MAC_CACHE[v] = b
    return b


def _ipv4_bytes(v: str) -> bytes:
    b = _IPV4_CACHE.get(v)
    if b is None:
        b = socket.inet_pton(socket.AF_INET, v)
        if len(_IPV4_CACHE) >= _ADDR_CACHE_MAX:
            _IPV4_CACHE.clear()
        _IPV4_CACHE[v] = b
    return b


_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_P1, _P2, _P4, _P8 = (_Packer(_INT_CODES[n], n) for n in (1, 2, 4, 8))
_MAC = _Packer("6s", 6, _mac_bytes)
_IPV4 = _Packer("4s", 4, _ipv4_bytes)


def _field_packer(name: str) -> _Packer:
    """The packer of an OXM/NXM field's value, derived from os-ken's field type."""
    _num, t = _oxm_info(name)
    if t is type_desc.MacAddr:
        return _MAC
    if t is type_desc.IPv4Addr:
        return _IPV4
    size = getattr(t, "size", None)
    if isinstance(t, type_desc.IntDescr):
        if size in _INT_CODES:
            return _Packer(_INT_CODES[size], size)
        return _Packer(f"{size}s", size, lambda v, n=size: v.to_bytes(n, "big"))
    if size is None:
        return _Packer("", 0, None)  # unknown width: the shape is never templated
    return _Packer(f"{size}s", size, lambda v: bytes(t.from_user(v)))


_OXM_BY_NAME = {f.name: f for f in ofp.oxm_types}


def _oxm_info(name: str):
    f = _OXM_BY_NAME.get(name)
    if f is None:
        raise ValueError(f"unknown match field {name!r}")
    return f.num, f.type


_FIELD_PACKERS: Dict[str, _Packer] = {}


def field_packer(name: str) -> _Packer:
    p = _FIELD_PACKERS.get(name)
    if p is None:
        p = _FIELD_PACKERS[name] = _field_packer(name)
    return p


# --------------------------------------------------------------------------
# decomposition: a flow = a shape (structure) + slot values
# --------------------------------------------------------------------------

def _decompose(flow: Flow, command: int, xid: int) -> Tuple[tuple, list]:
    """Split a flow message into its structure (hashable key) and its values.

    The key fixes everything os-ken's encoding layout depends on (field names,
    masks, action kinds and their non-value parameters); the values are what a
    template overwrites.  This runs once per flow on the hot path, hence the
    plain loop with few allocations: an unmasked field's key element is its
    name, a masked one's ``(name, mask)``; an action's is its name, or a tuple
    when it has structural parameters.
    """
    table, priority, match = flow.identity
    values = [xid, flow.cookie & COOKIE_MASK if command == DELETE_STRICT else flow.cookie,
              table, priority]
    push = values.append
    mkey = []
    kpush = mkey.append
    for k, v in match:
        if v.__class__ is tuple:
            kpush((k, v[1]))
            push(v[0])
        else:
            kpush(k)
            push(v)
    if command == DELETE_STRICT:
        return (command, tuple(mkey), (), False), values
    akey = []
    apush = akey.append
    for a in flow.actions:
        name = a[0]
        if name == "set_field":
            apush(("set_field", a[1]))
            push(a[2])
        elif name == "output":
            if a[1] == OFPP_CONTROLLER:
                raise ValueError("use ('controller', max_len) to send packets to the controller")
            apush(name)
            push(a[1])
        elif name == "move":
            apush(("move", a[1], a[2]))
            push(a[3])
        elif name == "ct":
            apush(("ct", bool(a[1]), a[3] is None))
            push(a[2])
            if a[3] is not None:
                push(a[3])
        elif name == "push_vlan" or name == "controller" or name == "group":
            apush(name)
            push(a[1])
        elif name == "pop_vlan" or name == "dec_ttl":
            apush(name)
        elif name == "ct_nat":
            # rare (service stage, a few flows per VRF): every parameter is structure,
            # so a template never has to find NAT ranges inside nested actions
            check_ct_nat(a)
            apush(a)
        elif name == "resubmit" or name == "learn":
            # ClientIP affinity only: structure as well (no slots)
            (check_learn if name == "learn" else check_resubmit)(a)
            apush(a)
        else:
            raise ValueError(f"cannot encode action {a!r}")
    goto = flow.goto
    if goto is not None:
        push(goto)
    return (command, tuple(mkey), tuple(akey), goto is not None), values


def _match_items(mkey: tuple):
    for e in mkey:
        yield (e, None) if isinstance(e, str) else e


def _slot_packers(key: tuple) -> List[_Packer]:
    command, mkey, akey, has_goto = key
    packers = [_P4, _P8, _P1, _P2]
    for k, _mask in _match_items(mkey):
        packers.append(field_packer(k))
    for a in akey:
        name = a if isinstance(a, str) else a[0]
        if name == "output":
            packers.append(_P4)
        elif name == "set_field":
            packers.append(field_packer(a[1]))
        elif name in ("push_vlan", "controller"):
            packers.append(_P2)
        elif name == "group":
            packers.append(_P4)
        elif name == "move":
            packers.append(_P2)
        elif name == "ct":
            packers.append(_P2)
            if not a[2]:
                packers.append(_P1)
        # "ct_nat": no slots (all structure)
    if has_goto:
        packers.append(_P1)
    return packers


def _osken_msg(key: tuple, values: Sequence[Any]) -> "parser.OFPFlowMod":
    """Build the os-ken FlowMod for a shape and its values (the reference encoding)."""
    command, mkey, akey, has_goto = key
    it = iter(values)
    xid, cookie, table, priority = next(it), next(it), next(it), next(it)
    fields = {}
    for k, mask in _match_items(mkey):
        v = next(it)
        fields[k] = v if mask is None else (v, mask)
    match = parser.OFPMatch(**fields)
    actions = []
    for a in akey:
        name = a if isinstance(a, str) else a[0]
        if name == "output":
            actions.append(parser.OFPActionOutput(next(it)))
        elif name == "set_field":
            actions.append(parser.OFPActionSetField(**{a[1]: next(it)}))
        elif name == "push_vlan":
            actions.append(parser.OFPActionPushVlan(next(it)))
        elif name == "pop_vlan":
            actions.append(parser.OFPActionPopVlan())
        elif name == "move":
            actions.append(parser.NXActionRegMove(src_field=a[1], dst_field=a[2], n_bits=next(it),
                                                  src_ofs=0, dst_ofs=0))
        elif name == "ct":
            zone = next(it)
            recirc = nicira_ext.NX_CT_RECIRC_NONE if a[2] else next(it)
            actions.append(parser.NXActionCT(flags=nicira_ext.NX_CT_F_COMMIT if a[1] else 0,
                                             zone_src="", zone_ofs_nbits=zone,
                                             recirc_table=recirc, alg=0, actions=[]))
        elif name == "controller":
            actions.append(parser.OFPActionOutput(ofp.OFPP_CONTROLLER, next(it)))
        elif name == "dec_ttl":
            actions.append(parser.OFPActionDecNwTtl())
        elif name == "group":
            actions.append(parser.OFPActionGroup(next(it)))
        elif name == "ct_nat":
            actions.append(ct_nat_osken(a))
        elif name == "resubmit":
            actions.append(parser.NXActionResubmitTable(in_port=_RESUBMIT_IN_PORT, table_id=a[1]))
        elif name == "learn":
            actions.append(learn_osken(a))
    insts = []
    if actions:
        insts.append(parser.OFPInstructionActions(ofp.OFPIT_APPLY_ACTIONS, actions))
    if has_goto:
        insts.append(parser.OFPInstructionGotoTable(next(it)))
    msg = parser.OFPFlowMod(
        DP, cookie=cookie, cookie_mask=COOKIE_MASK if command == DELETE_STRICT else 0,
        table_id=table, command=command, idle_timeout=0, hard_timeout=0, priority=priority,
        buffer_id=ofp.OFP_NO_BUFFER, out_port=ofp.OFPP_ANY, out_group=ofp.OFPG_ANY, flags=0,
        match=match, instructions=insts)
    msg.set_xid(xid)
    return msg


def encode_flow_mod_osken(flow: Flow, command: int, xid: int) -> bytes:
    """The reference: the flow_mod exactly as os-ken encodes it (slow; tests and fallback)."""
    if command not in _COMMANDS:
        raise ValueError(f"unsupported flow_mod command {command}")
    key, values = _decompose(flow, command, xid)
    msg = _osken_msg(key, values)
    msg.serialize()
    return bytes(msg.buf)


# --------------------------------------------------------------------------
# templates
# --------------------------------------------------------------------------

class _Template:
    """A shape's os-ken bytes with holes: one generated ``struct.pack`` call fills them."""

    __slots__ = ("encode",)

    def __init__(self, base: bytes, offsets: List[int], packers: List[_Packer]):
        order = sorted(range(len(offsets)), key=offsets.__getitem__)
        fmt = ["!"]
        args = []
        ns: Dict[str, Any] = {}
        pos = 0
        for n, i in enumerate(order):
            off, p = offsets[i], packers[i]
            if off > pos:
                fmt.append(f"{off - pos}s")
                ns[f"c{n}"] = base[pos:off]
                args.append(f"c{n}")
            fmt.append(p.code)
            if p.conv is None:
                args.append(f"v[{i}]")
            else:
                ns[f"f{i}"] = p.conv
                args.append(f"f{i}(v[{i}])")
            pos = off + p.width
        if pos < len(base):
            fmt.append(f"{len(base) - pos}s")
            ns["tail"] = base[pos:]
            args.append("tail")
        ns["pack"] = struct.Struct("".join(fmt)).pack
        # generated from indices and names chosen here only (no outside text)
        src = "def encode(v):\n    return pack(" + ", ".join(args) + ")\n"
        exec(src, ns)
        self.encode = ns["encode"]


def _probes(value: Any, pack: _Packer) -> List[Any]:
    """Values of the same type whose packed bytes differ from ``value``'s, for locating a slot."""
    raw = pack(value)
    n = int.from_bytes(raw, "big")
    bits = len(raw) * 8
    full = (1 << bits) - 1
    out = []
    for x in (full, 0x5555555555555555 & full, 0xAAAAAAAAAAAAAAAA & full):
        p = n ^ x
        if isinstance(value, int):
            out.append(p)
        elif isinstance(value, str) and ":" in value:
            out.append(":".join(f"{(p >> s) & 0xff:02x}" for s in range(bits - 8, -8, -8)))
        elif isinstance(value, str):
            out.append(socket.inet_ntop(socket.AF_INET, p.to_bytes(4, "big")))
        else:
            return []
    return out


def _masked_probe(value: Any, mask: Any) -> Any:
    """Probes of a masked field keep the value ANDed (os-ken normalizes it that way)."""
    if isinstance(value, int):
        return value & mask
    if isinstance(value, str) and ":" in value:
        v, m = int(value.replace(":", ""), 16), int(mask.replace(":", ""), 16)
        p = v & m
        return ":".join(f"{(p >> s) & 0xff:02x}" for s in range(40, -8, -8))
    v = int.from_bytes(socket.inet_aton(value), "big") & int.from_bytes(socket.inet_aton(mask), "big")
    return socket.inet_ntop(socket.AF_INET, v.to_bytes(4, "big"))


def _learn(key: tuple, values: list) -> Optional[_Template]:
    packers = _slot_packers(key)
    if len(packers) != len(values) or any(not p.width for p in packers):
        return None
    masks = [None, None, None, None] + [m for _k, m in _match_items(key[1])]
    masks += [None] * (len(values) - len(masks))
    base = bytes(_encode_ref(key, values))
    offsets: List[int] = []
    probes_done: List[Tuple[list, bytes]] = []
    for i, (v, pack) in enumerate(zip(values, packers)):
        p0 = pack(v)
        w = len(p0)
        cands: Optional[set] = None
        for probe in _probes(v, pack):
            if masks[i] is not None:
                probe = _masked_probe(probe, masks[i])
            pv = list(values)
            pv[i] = probe
            try:
                other = bytes(_encode_ref(key, pv))
            except Exception:  # a probe os-ken refuses: try the next one
                continue
            if len(other) != len(base):
                return None
            p1 = pack(probe)
            if p1 == p0:
                continue
            diff = [j for j in range(len(base)) if base[j] != other[j]]
            if not diff:  # os-ken ignored the value: the slot is not where we think
                return None
            lo, hi = diff[0], diff[-1]
            found = {off for off in range(max(0, hi - w + 1), lo + 1)
                     if base[off:off + w] == p0 and other[off:off + w] == p1}
            cands = found if cands is None else cands & found
            probes_done.append((pv, other))
            if len(cands) == 1:  # located; the final check re-encodes every probe anyway
                break
        if not cands or len(cands) != 1:
            return None
        offsets.append(cands.pop())
    spans = sorted((o, o + packers[i].width) for i, o in enumerate(offsets))
    if any(a[1] > b[0] for a, b in zip(spans, spans[1:])):
        return None
    tmpl = _Template(base, offsets, packers)
    if tmpl.encode(values) != base:
        return None
    for pv, other in probes_done:
        if tmpl.encode(pv) != other:
            return None
    return tmpl


def _encode_ref(key: tuple, values: Sequence[Any]) -> bytearray:
    msg = _osken_msg(key, values)
    msg.serialize()
    return msg.buf


class FlowModEncoder:
    """Encodes flow_mods through learned templates; os-ken for shapes it cannot template.

    One process-wide instance (:data:`ENCODER`) is enough: templates depend only on
    the shape, never on the switch.
    """

    #: shapes with more actions than this are encoded in parts (see :meth:`_long`)
    LONG = 8

    def __init__(self, templates: bool = True):
        self.templates_enabled = templates
        self._templates: Dict[tuple, Optional[_Template]] = {}
        #: long shapes whose assembly was checked against os-ken (True) or refused (False)
        self._long_ok: Dict[tuple, bool] = {}
        #: action -> its encoded bytes (flood lists repeat the same actions on every switch)
        self._actions: Dict[tuple, bytes] = {}
        self.stats = {"template": 0, "osken": 0, "shapes": 0, "untemplatable": 0, "assembled": 0}

    def encode(self, flow: Flow, command: int, xid: int) -> bytes:
        if command not in _COMMANDS:
            raise ValueError(f"unsupported flow_mod command {command}")
        if self.templates_enabled and command != DELETE_STRICT and len(flow.actions) > self.LONG:
            out = self._long(flow, command, xid)
            if out is not None:
                return out
        key, values = _decompose(flow, command, xid)
        if self.templates_enabled:
            try:
                tmpl = self._templates[key]
            except KeyError:
                tmpl = self._templates[key] = _learn(key, values)
                self.stats["shapes"] += 1
                if tmpl is None:
                    self.stats["untemplatable"] += 1
                    log.warn("flow shape {key} cannot be templated; using os-ken for it", key=key)
            if tmpl is not None:
                self.stats["template"] += 1
                return tmpl.encode(values)
        self.stats["osken"] += 1
        return bytes(_encode_ref(key, values))

    def shape_count(self) -> int:
        return len(self._templates)

    # -- long action lists: frame + actions -------------------------------------------
    def _long(self, flow: Flow, command: int, xid: int) -> Optional[bytes]:
        """A flow_mod with a long action list (a flood list naming hundreds of VTEPs),
        assembled from parts instead of one template per whole shape.

        Learning a whole shape costs a few os-ken encodings per value: with 500 VTEPs
        (1,000 actions) ~5 s, and every new list length is a new shape.  Its layout is
        simple, though: the flow_mod without actions (its *frame*: header, match, goto),
        then an APPLY_ACTIONS instruction (type, length, 4 pad bytes) holding each
        action's own bytes, inserted after the match (os-ken puts it before the goto),
        with the message length patched.  The frame and each action kind are templates
        learned as usual (small shapes); each action's bytes are kept, since the same
        actions recur on every switch.  The first flow of each whole shape is checked
        against os-ken byte for byte (one encoding); a shape that differs always goes
        through the general path (logged once).  ``None``: use the general path.
        """
        key, values = _decompose(flow, command, xid)
        ok = self._long_ok.get(key)
        if ok is False:
            return None
        nmatch = len(key[1])
        has_goto = key[3]
        frame_key = (command, key[1], (), has_goto)
        frame_vals = values[:4 + nmatch]
        if has_goto:
            frame_vals.append(values[-1])
        frame = self._template_bytes(frame_key, frame_vals)
        if frame is None:
            self._long_ok[key] = False
            return None
        cache = self._actions
        parts = []
        for a in flow.actions:
            b = cache.get(a)
            if b is None:
                b = self._action_bytes(a)
                if b is None:
                    self._long_ok[key] = False
                    return None
                if len(cache) >= _ADDR_CACHE_MAX:
                    cache.clear()
                cache[a] = b
            parts.append(b)
        acts = b"".join(parts)
        mlen = _MATCH_LEN.unpack_from(frame, 50)[0]
        end = 48 + (mlen + 7) // 8 * 8
        total = len(frame) + 8 + len(acts)
        out = b"".join((frame[:2], _LEN.pack(total), frame[4:end],
                        _INST_HDR.pack(ofp.OFPIT_APPLY_ACTIONS, 8 + len(acts)), acts, frame[end:]))
        if ok is None:
            ref = bytes(_encode_ref(key, values))
            self._long_ok[key] = ref == out
            self.stats["shapes"] += 1
            if ref != out:
                self.stats["untemplatable"] += 1
                log.warn("long flow shape {key} cannot be assembled from parts; using the general path",
                         key=key)
                return None
        self.stats["assembled"] += 1
        return out

    def _template_bytes(self, key: tuple, values: list) -> Optional[bytes]:
        try:
            tmpl = self._templates[key]
        except KeyError:
            tmpl = self._templates[key] = _learn(key, values)
        return None if tmpl is None else tmpl.encode(values)

    def _action_bytes(self, action: tuple) -> Optional[bytes]:
        """One action's bytes: a one-action flow_mod without match (its template learned
        once per action kind) minus the 64 bytes before its actions."""
        probe = Flow(table=0, priority=0, actions=(action,), cookie=0)
        key, values = _decompose(probe, ADD, 0)
        full = self._template_bytes(key, values)
        if full is None or len(full) <= _ACTIONS_AT:
            return None
        return full[_ACTIONS_AT:]


_LEN = struct.Struct("!H")
_MATCH_LEN = struct.Struct("!H")
_INST_HDR = struct.Struct("!HH4x")
#: a flow_mod's actions start after 48 bytes (header and fixed part), an empty match
#: padded to 8 bytes, and the 8-byte APPLY_ACTIONS instruction header
_ACTIONS_AT = 48 + 8 + 8

ENCODER = FlowModEncoder()


def encode_flow_mod(flow: Flow, command: int, xid: int) -> bytes:
    """The OpenFlow 1.3 flow_mod for ``flow``: ADD, MODIFY_STRICT or DELETE_STRICT.

    ADD and MODIFY_STRICT carry the flow's cookie with cookie_mask 0 (MODIFY_STRICT
    then keeps the flow's counters and duration; note that OpenFlow 1.3 MODIFY
    never changes a cookie, so a cookie change must be sent as ADD, which OVS
    turns into a replacement that keeps the counters). DELETE_STRICT is limited
    to our cookie mark (cookie & COOKIE_MASK under COOKIE_MASK), so it never
    removes a foreign flow with the same match.
    """
    return ENCODER.encode(flow, command, xid)


_XID = struct.Struct("!I").pack


class RecentEncodings:
    """The flow_mods encoded last, by flow object, to be sent again with another xid.

    A change's flows are the same objects for every switch that gets them (the
    engine's shared layers: a remote endpoint's flows on 500 switches), so one
    encoding serves them all and each further switch costs a copy with its own xid:
    0.23 us instead of 1.45 us per flow (measured on random flows).  Bounded (FIFO):
    a first push streams thousands of distinct flows through it, and what a change
    sends is reused within the same run, right away.  Keyed by ``id()`` with the flow
    kept alongside, so a recycled id never answers for another flow (flows are
    immutable, so bytes once right stay right)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        #: an OrderedDict: its popitem(last=False) is O(1), where deleting a plain dict's
        #: first key (``next(iter(d))``) scans past every key deleted before it (5 us a
        #: miss at this size, on each of the 10.5M flows of a 500x10k fill)
        self._recent: "OrderedDict[Tuple[int, int], Tuple[Flow, bytes]]" = OrderedDict()
        self.hits = 0

    def encode(self, flow: Flow, command: int, xid: int) -> bytes:
        key = (id(flow), command)
        recent = self._recent
        hit = recent.get(key)
        if hit is not None and hit[0] is flow:
            self.hits += 1
            data = hit[1]
            return data[:4] + _XID(xid) + data[8:]
        data = encode_flow_mod(flow, command, xid)
        if len(recent) >= self.size and hit is None:
            recent.popitem(last=False)
        recent[key] = (flow, data)
        return data


# --------------------------------------------------------------------------
# other messages (rare: plain os-ken)
# --------------------------------------------------------------------------

ONF_EXPERIMENTER_ID = 0x4F4E4600
_BUNDLE_ADD = struct.Struct("!BBHIIIIxxH")
BUNDLE_ADD_HEADER = _BUNDLE_ADD.size  # 24 = 8 header + 8 experimenter + 8 bundle add


def encode_bundle_add(inner: bytes, bundle_id: int, flags: int) -> bytes:
    """ONF EXT-230 bundle_add wrapping an encoded message (same xid as the inner message).

    Byte-equal to ``ONFBundleAddMsg`` without properties (checked in the tests).
    """
    xid = int.from_bytes(inner[4:8], "big")
    return _BUNDLE_ADD.pack(OFP_VERSION, ofp.OFPT_EXPERIMENTER, BUNDLE_ADD_HEADER + len(inner),
                            xid, ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_ADD_MESSAGE, bundle_id,
                            flags) + inner


_BUNDLE_CTRL = struct.Struct("!BBHIIIIHH")
BUNDLE_CTRL_SIZE = _BUNDLE_CTRL.size  # 24 = 8 header + 8 experimenter + 8 bundle control


def encode_bundle_ctrl(bundle_id: int, type_: int, flags: int, xid: int) -> bytes:
    """ONF EXT-230 bundle control without properties.

    Byte-equal to ``ONFBundleCtrlMsg`` (checked in the tests); packed here because a
    change at 500 switches sends 1,000 of them, and building each through os-ken's
    message classes was ~3 us of a switch's ~100 us share of the change."""
    return _BUNDLE_CTRL.pack(OFP_VERSION, ofp.OFPT_EXPERIMENTER, BUNDLE_CTRL_SIZE, xid,
                             ONF_EXPERIMENTER_ID, ofp.ONF_ET_BUNDLE_CONTROL, bundle_id, type_, flags)


def encode_barrier(xid: int) -> bytes:
    """OFPT_BARRIER_REQUEST (a header only): byte-equal to ``OFPBarrierRequest``."""
    return _HDR.pack(OFP_VERSION, ofp.OFPT_BARRIER_REQUEST, 8, xid)


def serialize(msg: Any, xid: int) -> bytes:
    msg.set_xid(xid)
    msg.serialize()
    return bytes(msg.buf)


_HDR = struct.Struct("!BBHI")


def parse_message(data: bytes, datapath: Any = DP) -> Any:
    """Parse one complete OpenFlow 1.3 message with os-ken; raises on anything it cannot parse.

    (``os_ken.ofproto.ofproto_parser.msg`` would log and return None instead.)
    Only for bytes we produced or checked with :mod:`~contiv_sdn.openflow.validate`.
    """
    version, msg_type, msg_len, xid = _HDR.unpack_from(data)
    if version != OFP_VERSION:
        raise ValueError(f"not an OpenFlow 1.3 message (version {version})")
    msg = parser.msg_parser(datapath, version, msg_type, msg_len, xid, data) \
        if parser._MSG_PARSERS.get(msg_type) else None
    if msg is None:
        raise ValueError(f"os-ken has no parser for message type {msg_type}")
    return msg


# --------------------------------------------------------------------------
# packet-in (hot path of the packet-in benchmark, DNS and ARP)
# --------------------------------------------------------------------------

_PI = struct.Struct(ofp.OFP_PACKET_IN_PACK_STR)  # buffer_id, total_len, reason, table_id, cookie
_PI_MATCH_AT = ofp.OFP_PACKET_IN_SIZE - ofp.OFP_MATCH_SIZE  # 24


class PacketIn:
    """A decoded OFPT_PACKET_IN, with the attributes of os-ken's ``OFPPacketIn``.

    ``OFPPacketIn.parser`` builds an ``OFPMatch``, whose constructor and legacy
    decoding cost more than the rest of a packet-in's handling.  Here the
    match fields go through the same os-ken OXM codecs (``oxm_parse``,
    ``oxm_to_user``) into a plain dict, so ``msg.match["in_port"]``,
    ``msg.match.get(...)`` and ``in`` behave as with os-ken.  Input must have
    passed :func:`contiv_sdn.openflow.validate.check_packet_in`.
    """

    __slots__ = ("xid", "buffer_id", "total_len", "reason", "table_id", "cookie", "match", "data")

    def __repr__(self) -> str:
        return (f"PacketIn(xid={self.xid}, table_id={self.table_id}, reason={self.reason}, "
                f"cookie={self.cookie:#x}, match={self.match}, {len(self.data)} bytes)")


def parse_packet_in(data: bytes) -> PacketIn:
    msg = PacketIn()
    msg.xid = int.from_bytes(data[4:8], "big")
    msg.buffer_id, msg.total_len, msg.reason, msg.table_id, msg.cookie = _PI.unpack_from(data, 8)
    mlen = int.from_bytes(data[_PI_MATCH_AT + 2:_PI_MATCH_AT + 4], "big")
    match = {}
    pos, end = _PI_MATCH_AT + 4, _PI_MATCH_AT + mlen
    oxm_parse, oxm_to_user = ofp.oxm_parse, ofp.oxm_to_user
    while pos < end:
        n, value, mask, field_len = oxm_parse(data, pos)
        k, uv = oxm_to_user(n, value, mask)
        match[k] = uv
        pos += field_len
    msg.match = match
    start = _PI_MATCH_AT + (mlen + 7) // 8 * 8 + 2
    msg.data = data[start:start + msg.total_len] if msg.total_len < len(data) - start else data[start:]
    return msg


# --------------------------------------------------------------------------
# decoding flow stats -> Flow
# --------------------------------------------------------------------------

# os-ken names NXM_OF_* / NXM_NX_* headers that duplicate an OXM field "<oxm>_nxm"
# (OVS writes NXM headers in, e.g., reg_move actions); the canonical form uses the OXM name.
_NXM_ALIASES = {f.name: f.name[:-4] for f in ofp.oxm_types if f.name.endswith("_nxm")}


def _field_name(name: str) -> str:
    return _NXM_ALIASES.get(name, name)


def _action_tuple(a: Any) -> tuple:
    if isinstance(a, parser.OFPActionOutput):
        if a.port == ofp.OFPP_CONTROLLER:
            return ("controller", a.max_len)
        return ("output", a.port)
    if isinstance(a, parser.OFPActionSetField):
        k = _field_name(a.key)
        return ("set_field", k, canon_match({k: a.value})[0][1])
    if isinstance(a, parser.OFPActionPushVlan):
        return ("push_vlan", a.ethertype)
    if isinstance(a, parser.OFPActionPopVlan):
        return ("pop_vlan",)
    if isinstance(a, parser.OFPActionDecNwTtl):
        return ("dec_ttl",)
    if isinstance(a, parser.OFPActionGroup):
        return ("group", a.group_id)
    if isinstance(a, parser.NXActionRegMove) and a.src_ofs == 0 and a.dst_ofs == 0:
        return ("move", _field_name(a.src_field), _field_name(a.dst_field), a.n_bits)
    if (isinstance(a, parser.NXActionCT) and not a.zone_src and not a.actions and a.alg == 0
            and a.flags in (0, nicira_ext.NX_CT_F_COMMIT)):
        table = None if a.recirc_table == nicira_ext.NX_CT_RECIRC_NONE else a.recirc_table
        return ("ct", bool(a.flags & nicira_ext.NX_CT_F_COMMIT), a.zone_ofs_nbits, table)
    if isinstance(a, parser.NXActionCT):
        nat = _ct_nat_tuple(a)
        if nat is not None:
            return nat
    if isinstance(a, parser.NXActionResubmitTable) and a.in_port == _RESUBMIT_IN_PORT:
        return ("resubmit", a.table_id)
    if isinstance(a, parser.NXActionLearn):
        learn = _learn_tuple(a)
        if learn is not None:
            return learn
    return ("raw", str(a))


# --------------------------------------------------------------------------
# learn and resubmit (ClientIP session affinity, pipeline/servicelb.py)
# --------------------------------------------------------------------------

#: NXAST_RESUBMIT_TABLE's in_port meaning "keep the packet's" (OFPP_IN_PORT, 16 bits)
_RESUBMIT_IN_PORT = 0xFFF8
#: the fields a learn spec may name, with their widths (a spec covers the whole field)
LEARN_FIELDS = {"eth_type": 16, "ip_proto": 8, "ipv4_src": 32, "ipv4_dst": 32, "tcp_dst": 16,
                "udp_dst": 16, "sctp_dst": 16, **{f"reg{i}": 32 for i in range(9)}}


def check_resubmit(a: tuple) -> None:
    if len(a) != 2 or not isinstance(a[1], int) or not 0 <= a[1] < 255:
        raise ValueError(f"resubmit needs (table 0..254): {a!r}")


def check_learn(a: tuple) -> None:
    """Refuse a ``learn`` outside the canonical form (see ``flow.ACTIONS``): a compiler
    bug otherwise (it would read back as something else and be re-sent forever)."""
    if len(a) != 6:
        raise ValueError(f"learn needs (table, idle_timeout, priority, cookie, specs): {a!r}")
    _, table, idle, prio, cookie, specs = a
    for name, v, top in (("table", table, 254), ("idle_timeout", idle, 0xFFFF), ("priority", prio, 0xFFFF),
                         ("cookie", cookie, (1 << 64) - 1)):
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= top:
            raise ValueError(f"learn {name} must be an integer 0..{top}: {a!r}")
    if not isinstance(specs, tuple) or not specs:
        raise ValueError(f"learn needs a tuple of specs: {a!r}")
    for spec in specs:
        if not isinstance(spec, tuple) or len(spec) != 3 or spec[0] not in ("match", "load"):
            raise ValueError(f"learn spec must be ('match'|'load', field, source): {spec!r}")
        kind, dst, src = spec
        if dst not in LEARN_FIELDS:
            raise ValueError(f"learn spec names field {dst!r}, not one of {sorted(LEARN_FIELDS)}")
        if isinstance(src, str):
            if LEARN_FIELDS.get(src) != LEARN_FIELDS[dst]:
                raise ValueError(f"learn spec {spec!r}: a field source must be as wide as its field")
        elif isinstance(src, bool) or not isinstance(src, int) or not 0 <= src < (1 << LEARN_FIELDS[dst]):
            raise ValueError(f"learn spec {spec!r}: value must fit {LEARN_FIELDS[dst]} bits")


def learn_osken(a: tuple) -> Any:
    """The os-ken NXActionLearn of a canonical ``learn`` action (hard timeout 0, no flags)."""
    check_learn(a)
    _, table, idle, prio, cookie, specs = a
    out: List[Any] = []
    for kind, dst, src in specs:
        n_bits = LEARN_FIELDS[dst]
        s = (src, 0) if isinstance(src, str) else src
        cls = parser.NXFlowSpecMatch if kind == "match" else parser.NXFlowSpecLoad
        out.append(cls(src=s, dst=(dst, 0), n_bits=n_bits))
    return parser.NXActionLearn(table_id=table, specs=out, idle_timeout=idle, hard_timeout=0,
                                priority=prio, cookie=cookie, flags=0, fin_idle_timeout=0,
                                fin_hard_timeout=0)


def _learn_field(name: str) -> str:
    """A learn spec's field as OVS gives it back (NXM names: ``eth_type_nxm``) in our name."""
    name = _field_name(name)
    return name[:-4] if name.endswith("_nxm") and name[:-4] in LEARN_FIELDS else name


def _learn_tuple(a: Any) -> Optional[tuple]:
    """A read-back NXActionLearn in ``learn`` form, or None if it is not one we write."""
    if a.hard_timeout or a.flags or a.fin_idle_timeout or a.fin_hard_timeout:
        return None
    specs = []
    for sp in a.specs:
        if isinstance(sp, parser.NXFlowSpecMatch):
            kind = "match"
        elif isinstance(sp, parser.NXFlowSpecLoad):
            kind = "load"
        else:
            return None
        dst, dofs = sp.dst
        dst = _learn_field(dst)
        if dofs or LEARN_FIELDS.get(dst) != sp.n_bits:
            return None
        src = sp.src
        if isinstance(src, tuple):
            if src[1]:
                return None
            src = _learn_field(src[0])
        specs.append((kind, dst, src))
    return ("learn", a.table_id, a.idle_timeout, a.priority, a.cookie, tuple(specs))


# --------------------------------------------------------------------------
# conntrack with NAT (the service stage) and groups
# --------------------------------------------------------------------------

#: OVS's NXAST_NAT flags (os-ken has no names for them)
NX_NAT_F_SRC, NX_NAT_F_DST = 0x1, 0x2


def check_ct_nat(a: tuple) -> None:
    """Refuse a ``ct_nat`` action outside the canonical form (a compiler bug otherwise:
    such an action would read back as something else and be re-sent forever).

    ``("ct_nat", commit, zone, table, nat, mark)``: ``nat`` is None (apply an existing
    connection's NAT, i.e. un-NAT replies) or ``(kind, ip, port)`` with kind "src" or
    "dst" and port 0 for none; ``mark`` a ct_mark to set (0: none; only with commit,
    as OVS requires).  Without NAT and mark it is a plain ``ct`` and must be written so."""
    if len(a) != 6:
        raise ValueError(f"ct_nat needs (commit, zone, table, nat, mark): {a!r}")
    _, commit, zone, table, nat, mark = a
    if not isinstance(commit, bool) or not isinstance(zone, int) or not 0 <= zone <= 0xFFFF:
        raise ValueError(f"ct_nat commit/zone: {a!r}")
    if table is not None and not (isinstance(table, int) and 0 <= table < 255):
        raise ValueError(f"ct_nat table: {a!r}")
    if not isinstance(mark, int) or not 0 <= mark <= 0xFFFFFFFF or (mark and not commit):
        raise ValueError(f"ct_nat mark needs commit and 32 bits: {a!r}")
    if nat is None:
        return  # plain "nat": un-NAT replies / apply the NAT of a known connection
    if (not isinstance(nat, tuple) or len(nat) != 3 or nat[0] not in ("src", "dst")
            or not isinstance(nat[2], int) or not 0 <= nat[2] <= 0xFFFF):
        raise ValueError(f"ct_nat nat must be (src|dst, ip, port): {a!r}")
    if not commit:
        raise ValueError(f"ct_nat with a NAT range needs commit: {a!r}")
    socket.inet_pton(socket.AF_INET, nat[1])


class _NATAction(parser.NXActionNAT):
    """os-ken's NXActionNAT declares its length rounded up to 8 but writes the unpadded
    body (os-ken 2.x ``NXAction.serialize``): with a NAT address and port that is two
    bytes short, and the next action (or bucket) starts inside it.  OVS refuses such a
    message; this pads the body so the bytes match the declared length."""

    def serialize_body(self) -> bytearray:
        data = super().serialize_body()
        head = ofp.OFP_ACTION_EXPERIMENTER_HEADER_SIZE + 2  # + the NX subtype
        data += b"\0" * (-(head + len(data)) % 8)
        return data


def ct_nat_osken(a: tuple) -> Any:
    """The os-ken NXActionCT of a canonical ``ct_nat`` action."""
    check_ct_nat(a)
    _, commit, zone, table, nat, mark = a
    inner: List[Any] = []
    if nat is None:
        inner.append(_NATAction(flags=0))
    else:
        kind, ip, port = nat
        inner.append(_NATAction(flags=NX_NAT_F_SRC if kind == "src" else NX_NAT_F_DST,
                                 range_ipv4_min=ip, range_proto_min=port or None))
    if mark:
        inner.append(parser.OFPActionSetField(ct_mark=mark))
    return parser.NXActionCT(flags=nicira_ext.NX_CT_F_COMMIT if commit else 0, zone_src="",
                             zone_ofs_nbits=zone,
                             recirc_table=nicira_ext.NX_CT_RECIRC_NONE if table is None else table,
                             alg=0, actions=inner)


def _ct_nat_tuple(a: Any) -> Optional[tuple]:
    """A read-back NXActionCT in ``ct_nat`` form, or None if it is not one we write."""
    if a.zone_src or a.alg != 0 or a.flags not in (0, nicira_ext.NX_CT_F_COMMIT):
        return None
    nat: Any = None
    mark = 0
    seen_nat = False
    for inner in a.actions:
        if isinstance(inner, parser.NXActionNAT) and not seen_nat:
            seen_nat = True
            if inner.flags == 0:
                continue
            if inner.flags not in (NX_NAT_F_SRC, NX_NAT_F_DST) or not inner.range_ipv4_min:
                return None
            if inner.range_ipv4_max not in ("", None, inner.range_ipv4_min):
                return None
            if inner.range_proto_max not in (None, 0, inner.range_proto_min):
                return None
            nat = ("src" if inner.flags == NX_NAT_F_SRC else "dst", inner.range_ipv4_min,
                   inner.range_proto_min or 0)
        elif isinstance(inner, parser.OFPActionSetField) and inner.key == "ct_mark" and not mark:
            value = inner.value
            if isinstance(value, tuple):
                if value[1] != 0xFFFFFFFF:
                    return None
                value = value[0]
            mark = value
        else:
            return None
    if not seen_nat:
        return None
    table = None if a.recirc_table == nicira_ext.NX_CT_RECIRC_NONE else a.recirc_table
    return ("ct_nat", bool(a.flags & nicira_ext.NX_CT_F_COMMIT), a.zone_ofs_nbits, table, nat, mark)


GROUP_ADD, GROUP_MODIFY, GROUP_DELETE = ofp.OFPGC_ADD, ofp.OFPGC_MODIFY, ofp.OFPGC_DELETE


def encode_group_mod(group: Any, command: int, xid: int) -> bytes:
    """The OpenFlow 1.3 group_mod for ``group`` (a ``pipeline.servicelb.Group``): ADD,
    MODIFY (replaces the buckets; OVS keeps the group's flows and, for conntrack-based
    buckets, every established connection) or DELETE (by id; also deletes the flows
    that point at it, so the sync deletes them first).

    Plain os-ken (groups are few: one per service port per switch); every bucket has
    weight 1 and OVS's default selection method (see ``pipeline/servicelb.py``)."""
    if command not in (GROUP_ADD, GROUP_MODIFY, GROUP_DELETE):
        raise ValueError(f"unsupported group_mod command {command}")
    if group.type != "select":
        raise ValueError(f"group {group.group_id}: only select groups are written, not {group.type!r}")
    buckets = []
    if command != GROUP_DELETE:
        for acts in group.buckets:
            key, values = _decompose(Flow(table=0, priority=0, actions=tuple(acts), cookie=0), ADD, 0)
            msg = _osken_msg(key, values)
            actions = msg.instructions[0].actions if msg.instructions else []
            buckets.append(parser.OFPBucket(weight=1, actions=actions))
    msg = parser.OFPGroupMod(DP, command=command, type_=ofp.OFPGT_SELECT, group_id=group.group_id,
                             buckets=buckets)
    return serialize(msg, xid)


def group_from_desc(entry: Any) -> Any:
    """A group-desc entry (os-ken ``OFPGroupDescStats``) as a ``pipeline.servicelb.Group``;
    a type or bucket we do not write reads back as something that never equals a desired
    group (type "raw" / a ``("raw", text)`` action), so the sync replaces it."""
    from contiv_sdn.pipeline.servicelb import Group
    kind = "select" if entry.type == ofp.OFPGT_SELECT else f"raw:{entry.type}"
    buckets = []
    for b in entry.buckets:
        acts = tuple(_action_tuple(a) for a in b.actions)
        if b.weight != 1 or b.watch_port != ofp.OFPP_ANY or b.watch_group != ofp.OFPG_ANY:
            acts += (("raw", f"weight={b.weight} watch={b.watch_port}/{b.watch_group}"),)
        buckets.append(acts)
    return Group(entry.group_id, tuple(buckets), kind)


def groups_from_desc(entries: Iterable[Any]) -> List[Any]:
    """The groups of group-desc entries (what ``OpenFlowProtocol.group_desc`` fires with)."""
    return [group_from_desc(e) for e in entries]


def flow_from_stats(entry: Any) -> Flow:
    """A flow-stats entry (os-ken ``OFPFlowStats``) in :mod:`~contiv_sdn.pipeline.flow`'s canonical form."""
    match = canon_match((_field_name(k), v) for k, v in entry.match._fields2)
    actions: List[tuple] = []
    goto = None
    for inst in entry.instructions:
        if isinstance(inst, parser.OFPInstructionActions) and inst.type == ofp.OFPIT_APPLY_ACTIONS:
            actions.extend(_action_tuple(a) for a in inst.actions)
        elif isinstance(inst, parser.OFPInstructionGotoTable):
            goto = inst.table_id
        else:
            actions.append(("raw", str(inst)))
    return Flow(table=entry.table_id, priority=entry.priority, match=match,
                actions=tuple(actions), goto=goto, cookie=entry.cookie)


def flows_from_stats(entries: Iterable[Any]) -> List[Flow]:
    return [flow_from_stats(e) for e in entries]


#: flow-stats entry bytes that decoding reads (table, priority, cookie, match and
#: instructions; not durations or counters) -> the decoded Flow
_DECODED: Dict[bytes, Flow] = {}
_DECODED_MAX = 1 << 18
_FLOW_STATS_LEN = struct.Struct("!H")


def flows_from_raw(replies: Iterable[bytes], known: Optional[Any] = None) -> Iterable[Flow]:
    """The flows of flow-stats multipart replies (checked bytes, see
    ``OpenFlowProtocol.read_flows_raw``), decoded through a cache.

    What :func:`flow_from_stats` reads of an entry (table, priority, cookie, match,
    instructions) is its key: an entry seen before, on any switch, costs a slice and
    a look-up instead of an os-ken parse (~56 us), and every switch holding it gets
    the same Flow object (beliefs share it).  A generator, so the caller can yield
    between entries.

    ``known``: what the caller expects (identity -> Flow, anything with ``get``).  A
    decoded flow equal to the expected one is answered, and cached, as that object:
    the cache then holds the engine's flows, not a decoded copy of each (the copies
    were 27.6 MB of a 500x10k netmaster, 2.8 KiB per endpoint), and the caller's
    comparison finds the same object.
    """
    cache = _DECODED
    unpack = _FLOW_STATS_LEN.unpack_from
    for data in replies:
        pos, end = 16, len(data)  # ofp header, multipart type/flags, pad
        while pos < end:
            n = unpack(data, pos)[0]
            key = data[pos + 48:pos + n] + data[pos + 24:pos + 32] + data[pos + 12:pos + 14] + data[pos + 2:pos + 3]
            f = cache.get(key)
            if f is None:
                entry = parser.OFPFlowStats.parser(data, pos)
                f = flow_from_stats(entry)
                if known is not None:
                    k = known.get(f.identity)
                    if k is not None and k == f:
                        f = k
                if len(cache) >= _DECODED_MAX:
                    cache.clear()
                cache[key] = f
            elif known is not None:
                k = known.get(f.identity)
                if k is not None and k is not f and k == f:
                    f = cache[key] = k
            yield f
            pos += n
