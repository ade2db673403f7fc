"""The flow value type shared by the compiler (``pipeline``) and the channel (``openflow``).

A :class:`Flow` is a plain, hashable value: the compiler produces sets of them,
the controller diffs sets of them, and ``openflow`` turns them into bytes (and
turns flow-stats replies back into them).  Keeping it free of os-ken objects
makes the compiler testable with plain data and lets two compilations of the
same state compare equal, so unchanged flows are never re-sent.

Canonical form (everything that builds a Flow must respect it, because the diff
compares values, not meanings):

* ``match`` is a tuple of ``(field, value)`` pairs **sorted by field name**.  Field
  names are os-ken OXM/NXM names (``in_port``, ``eth_type``, ``eth_src``,
  ``ipv4_dst``, ``arp_tpa``, ``tunnel_id``, ``metadata``, ``reg0`` … ``reg7``,
  ``ct_state``, ``vlan_vid`` …).  A value is an ``int``, a lower-case MAC string
  or a dotted IPv4 string; a masked value is ``(value, mask)`` of the same type,
  with ``value`` already ANDed with ``mask``, and a full mask is written as the
  plain value.
* ``actions`` is the OpenFlow *apply-actions* list, as tuples (see ``ACTIONS``).
* ``goto`` is the goto-table instruction (``None`` = none); a flow with no actions
  and no goto drops the packet.
* ``cookie`` carries :data:`COOKIE_MARK` in its top 16 bits, so the controller can
  read back and delete exactly the flows it owns, by cookie mask.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple

COOKIE_MARK = 0xC0DE << 48
COOKIE_MASK = 0xFFFF << 48

#: Special port numbers (OpenFlow 1.3).
OFPP_IN_PORT = 0xFFFFFFF8
OFPP_FLOOD = 0xFFFFFFFB
OFPP_ALL = 0xFFFFFFFC
OFPP_CONTROLLER = 0xFFFFFFFD
OFPP_LOCAL = 0xFFFFFFFE

#: The action vocabulary: name -> the tuple shape after the name.
ACTIONS = {
    "output": "(port:int)",
    "set_field": "(field:str, value)",
    "push_vlan": "(ethertype:int)",
    "pop_vlan": "()",
    "move": "(src_field:str, dst_field:str, n_bits:int)  # NXActionRegMove, offsets 0",
    "ct": "(commit:bool, zone:int, table:int|None)  # NXActionCT; table None = no recirculation",
    "controller": "(max_len:int)",
    "dec_ttl": "()",
    "group": "(group_id:int)",
    # the two below serve ClientIP session affinity (servicelb.py); every parameter is
    # structure (like ``ct_nat``), so the codec encodes them whole
    "resubmit": "(table:int)  # NXActionResubmitTable, in_port kept; a miss there is no action",
    "learn": "(table:int, idle_timeout:int, priority:int, cookie:int, specs:tuple)  # NXActionLearn; "
             "specs: ('match', field, field_name|int) = match the field on the packet's value of "
             "field_name (or on an immediate int), ('load', field, field_name|int) = the learned "
             "flow's action (load the packet's field_name, or an int); "
             "every spec covers its field's full width",
}

Value = Any
Match = Tuple[Tuple[str, Value], ...]
Action = Tuple[Any, ...]


def _canon_value(field_name: str, value: Value) -> Value:
    if isinstance(value, tuple):
        v, m = value
        v, m = _canon_value(field_name, v), _canon_value(field_name, m)
        if isinstance(v, int):
            v &= m
            if m == _full_mask(field_name):
                return v
        elif isinstance(v, str) and ":" in v:
            vi, mi = int(v.replace(":", ""), 16), int(m.replace(":", ""), 16)
            if mi == (1 << 48) - 1:
                return v
            return (_mac(vi & mi), _mac(mi))
        elif isinstance(v, str):
            vi, mi = int(ipaddress.IPv4Address(v)), int(ipaddress.IPv4Address(m))
            if mi == 0xFFFFFFFF:
                return v
            return (str(ipaddress.IPv4Address(vi & mi)), m)
        return (v, m)
    if isinstance(value, str) and ":" in value and len(value) == 17:
        # an endpoint's MAC is in five of its flows: one string, not five (41k -> 10k
        # strings at 500x10k)
        return lowered(value)
    return value


def lowered(text: str) -> str:
    """``text.lower()``, or ``text`` itself when it is lower case already: ``lower()``
    always makes a new string, and a MAC kept by the snapshot, the engine and the
    flows is then one string, not one in each."""
    low = text.lower()
    return text if low == text else low


def _mac(n: int) -> str:
    return ":".join(f"{(n >> s) & 0xff:02x}" for s in range(40, -8, -8))


_WIDTHS = {"metadata": 64, "tunnel_id": 64, "vlan_vid": 13, "ct_state": 32, "ct_mark": 32}


def _full_mask(field_name: str) -> int:
    return (1 << _WIDTHS.get(field_name, 32)) - 1


#: equal small tuples made once (see :func:`shared`); cleared when it reaches
#: :data:`SHARED_MAX` entries, which only ends the sharing of what was made before
_SHARED: Dict[tuple, tuple] = {}
SHARED_MAX = 1 << 16


def shared(t: tuple) -> tuple:
    """``t``, or the equal tuple made before: for a match pair or an action whose
    values are ints (a network's register, an ethertype, a port; endpoint-specific
    MACs and addresses are left alone).  Thousands of flows carry the same such
    pairs, each made afresh by its builder: sharing them took the tuples a 100x2k
    engine's flows hold from 234k to 148k (21 -> 14.6 MB).  Masked int values
    (``("reg4", (0, 1))``) are shared too, value and pair."""
    last = t[-1]
    if type(last) is tuple:
        # a masked int (``("reg4", (0, 1))``): few distinct ones, on thousands of flows
        if len(last) != 2 or type(last[0]) is not int or type(last[1]) is not int:
            return t
        s = _SHARED.get(t)
        if s is None:
            s = share(t[:-1] + (share(last),))
        return s
    if type(last) is not int:
        return t
    for v in t[1:-1]:
        if type(v) is not int and type(v) is not str:
            return t
    return share(t)


def share(t: tuple) -> tuple:
    """``t``, or the equal tuple given before, whatever its values: for builders that
    know a value repeats across flows (:func:`shared` decides by type)."""
    s = _SHARED.get(t)
    if s is None:
        if len(_SHARED) >= SHARED_MAX:
            _SHARED.clear()
        s = _SHARED[t] = t
    return s


def shared_actions(actions: Iterable[Action]) -> Tuple[Action, ...]:
    """The actions as a tuple, each :func:`shared`; a short list made only of shared
    actions is shared itself (every endpoint of a network classifies with the same
    ``(set reg0 vrf, set reg1 net)``: 10k equal tuples at 500x10k)."""
    out = tuple(map(shared, actions))
    if 0 < len(out) <= 4:
        get = _SHARED.get
        for a in out:
            if get(a) is not a:
                return out
        return share(out)
    return out


def make_match(**fields: Value) -> Match:
    """Build a canonical match from keyword fields (``None`` values are left out)."""
    return canon_match(fields)


def canon_match(fields: Mapping[str, Value] | Iterable[Tuple[str, Value]]) -> Match:
    items = fields.items() if isinstance(fields, Mapping) else fields
    return tuple(sorted(shared((k, _canon_value(k, v))) for k, v in items if v is not None))


@functools.total_ordering
class Flow:
    """One OpenFlow flow entry, immutable, compared and hashed by value (``note``
    aside).

    Slotted, and ``table``, ``priority`` and ``match`` are read from ``identity``
    rather than kept beside it: a 500x10k netmaster holds ~84k distinct flows, and
    every slot is 8 bytes of each (100k flows under tracemalloc: 208 -> 168 bytes
    each with instance values, 308 -> 204 once hashed, 24 fewer without the three
    slots)."""

    __slots__ = ("identity", "actions", "goto", "cookie", "note", "_hash")

    #: What OpenFlow treats as the same flow entry (strict match): (table, priority, match).
    #: Made once per Flow, at its creation: every per-switch map (the engine's winners,
    #: the sync's belief) is keyed by it, so a flow shared by 500 switches has one key
    #: tuple, not 500; and it is read millions of times in a cold compile.
    identity: Tuple[int, int, Match]
    actions: Tuple[Action, ...]
    goto: Optional[int]
    cookie: int
    #: Free text for people reading dumps and test failures; not part of identity.
    note: str

    def __init__(self, table: int, priority: int, match: Match = (),
                 actions: Tuple[Action, ...] = (), goto: Optional[int] = None,
                 cookie: int = COOKIE_MARK, note: str = "") -> None:
        put = object.__setattr__
        put(self, "identity", (table, priority, match))
        put(self, "actions", actions)
        put(self, "goto", goto)
        put(self, "cookie", cookie)
        put(self, "note", note)

    @property
    def table(self) -> int:
        return self.identity[0]

    @property
    def priority(self) -> int:
        return self.identity[1]

    @property
    def match(self) -> Match:
        return self.identity[2]

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"Flow is immutable: cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Flow is immutable: cannot delete field {name!r}")

    def _key(self) -> tuple:
        """What equality and order compare: every field but ``note``."""
        return (self.identity, self.actions, self.goto, self.cookie)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not Flow:
            return NotImplemented
        return self is other or (self.identity == other.identity  # type: ignore[attr-defined]
                                 and self.actions == other.actions  # type: ignore[attr-defined]
                                 and self.goto == other.goto  # type: ignore[attr-defined]
                                 and self.cookie == other.cookie)  # type: ignore[attr-defined]

    def __lt__(self, other: "Flow") -> bool:
        if other.__class__ is not Flow:
            return NotImplemented
        return self._key() < other._key()

    def __hash__(self) -> int:
        """The hash of the compared fields, made once per Flow and kept.

        Why: a switch's desired set is a frozenset of ~20k flows and a reconnect storm
        builds one per switch; hashing the nested match/action tuples again each time was
        a large part of a 500-switch restart.  Equal flows still hash equal (the same
        fields, ``note`` excluded, as ``__eq__`` compares)."""
        try:
            return self._hash
        except AttributeError:
            h = hash(self._key())
            object.__setattr__(self, "_hash", h)
            return h

    def __repr__(self) -> str:
        return (f"Flow(table={self.table!r}, priority={self.priority!r}, match={self.match!r}, "
                f"actions={self.actions!r}, goto={self.goto!r}, cookie={self.cookie!r}, "
                f"note={self.note!r})")

    def __getstate__(self) -> tuple:
        # the cached hash is this process's (str hashes are salted per process)
        return (*self.identity, self.actions, self.goto, self.cookie, self.note)

    def __setstate__(self, state: tuple) -> None:
        Flow.__init__(self, *state)

    def __copy__(self) -> "Flow":
        return self

    def __deepcopy__(self, memo: Any) -> "Flow":
        return self

    def matches(self) -> dict:
        return dict(self.match)

    def to_ofctl(self) -> str:
        """The flow in ``ovs-ofctl add-flow`` syntax (OpenFlow 1.3), for dumps and benchmarks."""
        parts = [f"cookie={self.cookie:#x}", f"table={self.table}", f"priority={self.priority}"]
        for k, v in self.match:
            # ovs-ofctl reads port numbers in decimal only.
            parts.append(f"{_OFCTL_FIELD.get(k, k)}={v if k == 'in_port' else _ofctl_value(v)}")
        acts = [_ofctl_action(a) for a in self.actions]
        if self.goto is not None:
            acts.append(f"goto_table:{self.goto}")
        return ",".join(parts) + " actions=" + (",".join(acts) if acts else "drop")


_OFCTL_FIELD = {
    "ipv4_src": "nw_src", "ipv4_dst": "nw_dst", "eth_type": "dl_type",
    "eth_src": "dl_src", "eth_dst": "dl_dst", "ip_proto": "nw_proto",
    "tunnel_id": "tun_id", "tun_ipv4_dst": "tun_dst", "tun_ipv4_src": "tun_src",
    "arp_op": "arp_op",  # vlan_vid keeps its name: OVS's vlan_vid is the 13-bit OF1.3 field
}
_PORT_NAMES = {OFPP_IN_PORT: "in_port", OFPP_FLOOD: "flood", OFPP_ALL: "all",
               OFPP_CONTROLLER: "controller", OFPP_LOCAL: "local"}


def _ofctl_value(v: Value) -> str:
    if isinstance(v, tuple):
        return f"{_ofctl_value(v[0])}/{_ofctl_value(v[1])}"
    if isinstance(v, int):
        return hex(v) if v > 9 else str(v)
    return str(v)


def _ofctl_action(a: Action) -> str:
    name = a[0]
    if name == "output":
        return _PORT_NAMES.get(a[1]) or f"output:{a[1]}"
    if name == "set_field":
        return f"set_field:{_ofctl_value(a[2])}->{_OFCTL_FIELD.get(a[1], a[1])}"
    if name == "push_vlan":
        return f"push_vlan:{a[1]:#06x}"
    if name == "pop_vlan":
        return "pop_vlan"
    if name == "move":
        return f"move:{_NXM.get(a[1], a[1])}[0..{a[3]-1}]->{_NXM.get(a[2], a[2])}[0..{a[3]-1}]"
    if name == "ct":
        opts = (["commit"] if a[1] else []) + [f"zone={a[2]}"] + ([f"table={a[3]}"] if a[3] is not None else [])
        return "ct(" + ",".join(opts) + ")"
    if name == "ct_nat":
        # ("ct_nat", commit, zone, table, nat, mark): nat None = apply a known NAT (replies,
        # later packets); ("dst"|"src", ip, port) = set up one (port 0: address only)
        _n, commit, zone, table, nat, mark = a
        opts = (["commit"] if commit else []) + [f"zone={zone}"]
        if nat is None:
            opts.append("nat")
        else:
            kind, ip, port = nat
            opts.append(f"nat({kind}={ip}{f':{port}' if port else ''})")
        if mark:
            opts.append(f"exec(set_field:{mark:#x}->ct_mark)")
        if table is not None:
            opts.append(f"table={table}")
        return "ct(" + ",".join(opts) + ")"
    if name == "controller":
        return f"controller:{a[1]}"
    if name == "dec_ttl":
        return "dec_ttl"
    if name == "group":
        return f"group:{a[1]}"
    if name == "resubmit":
        return f"resubmit(,{a[1]})"
    if name == "learn":
        _n, table, idle, prio, cookie, specs = a
        opts = [f"table={table}", f"idle_timeout={idle}", f"priority={prio}", f"cookie={cookie:#x}"]
        for kind, dst, src in specs:
            d = _NXM.get(dst, dst)
            if kind == "load":
                opts.append(f"load:{_NXM.get(src, src)}[]->{d}[]" if isinstance(src, str)
                            else f"load:{src:#x}->{d}[]")
            elif isinstance(src, str):
                opts.append(f"{d}[]" if src == dst else f"{d}[]={_NXM.get(src, src)}[]")
            else:
                opts.append(f"{_OFCTL_FIELD.get(dst, dst)}={src:#x}")
        return "learn(" + ",".join(opts) + ")"
    raise ValueError(f"unknown action {a!r}")


_NXM = {
    "eth_src": "NXM_OF_ETH_SRC", "eth_dst": "NXM_OF_ETH_DST",
    "arp_sha": "NXM_NX_ARP_SHA", "arp_tha": "NXM_NX_ARP_THA",
    "arp_spa": "NXM_OF_ARP_SPA", "arp_tpa": "NXM_OF_ARP_TPA",
    "ipv4_src": "NXM_OF_IP_SRC", "ipv4_dst": "NXM_OF_IP_DST",
    **{f"reg{i}": f"NXM_NX_REG{i}" for i in range(9)},
    "ip_proto": "NXM_OF_IP_PROTO", "tcp_dst": "NXM_OF_TCP_DST", "udp_dst": "NXM_OF_UDP_DST",
    "sctp_dst": "OXM_OF_SCTP_DST", "eth_type": "NXM_OF_ETH_TYPE",
}
