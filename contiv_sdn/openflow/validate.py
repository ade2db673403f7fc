"""Length checks on switch messages, before os-ken's parsers see them.

os-ken's parsers walk nested lists (flow-stats entries, instructions,
actions, group buckets, meter bands, bundle properties) by the length each
element claims.  A hostile or broken switch that claims length 0 sends them
into an endless loop, which on a single-threaded controller takes everything
down.  Every message we hand to os-ken that contains such lists is checked
here first: each element's length is at least its fixed part, a multiple of 8
where the spec says so, and inside its parent.  A message that fails raises
:class:`Malformed`, and the protocol drops that connection.
"""

from __future__ import annotations

import struct

from os_ken.ofproto import nicira_ext
from os_ken.ofproto import ofproto_v1_3 as ofp

_H = struct.Struct("!H")
_HH = struct.Struct("!HH")

NX_EXPERIMENTER_ID = 0x00002320
MP_HEADER = 16  # ofp_header + type, flags, pad[4]


class Malformed(ValueError):
    """The switch sent a message whose inner lengths do not add up."""


def _need(cond: bool, what: str) -> None:
    if not cond:
        raise Malformed(what)


def check_match(buf: bytes, start: int, end: int) -> int:
    """Check an ``ofp_match`` at ``start``; returns its padded length."""
    _need(start + 4 <= end, "match header truncated")
    mtype, mlen = _HH.unpack_from(buf, start)
    _need(mtype == ofp.OFPMT_OXM, f"match type {mtype}")
    _need(mlen >= 4, f"match length {mlen}")
    padded = (mlen + 7) // 8 * 8
    _need(start + padded <= end, "match longer than its container")
    pos, mend = start + 4, start + mlen
    while pos < mend:
        _need(pos + 4 <= mend, "OXM header truncated")
        oxm_class = _H.unpack_from(buf, pos)[0]
        plen = buf[pos + 3]
        if oxm_class == 0xFFFF:
            _need(plen >= 4, "experimenter OXM too short")
        pos += 4 + plen
        _need(pos <= mend, "OXM longer than its match")
    return padded


def check_actions(buf: bytes, start: int, end: int) -> None:
    pos = start
    while pos < end:
        _need(pos + 4 <= end, "action header truncated")
        atype, alen = _HH.unpack_from(buf, pos)
        _need(alen >= 8 and alen % 8 == 0, f"action length {alen}")
        _need(pos + alen <= end, "action longer than its list")
        if atype == ofp.OFPAT_EXPERIMENTER and alen >= 16:
            exp = struct.unpack_from("!I", buf, pos + 4)[0]
            subtype = _H.unpack_from(buf, pos + 8)[0]
            if exp == NX_EXPERIMENTER_ID and subtype == nicira_ext.NXAST_CT:
                _need(alen >= 24, "ct action too short")
                check_actions(buf, pos + 24, pos + alen)
        pos += alen


def check_instructions(buf: bytes, start: int, end: int) -> None:
    pos = start
    while pos < end:
        _need(pos + 4 <= end, "instruction header truncated")
        itype, ilen = _HH.unpack_from(buf, pos)
        _need(ilen >= 8 and ilen % 8 == 0, f"instruction length {ilen}")
        _need(pos + ilen <= end, "instruction longer than its flow")
        if itype in (ofp.OFPIT_APPLY_ACTIONS, ofp.OFPIT_WRITE_ACTIONS, ofp.OFPIT_CLEAR_ACTIONS):
            check_actions(buf, pos + 8, pos + ilen)
        pos += ilen


def _entries(buf: bytes, start: int, end: int, len_at: int, minimum: int, what: str):
    pos = start
    while pos < end:
        _need(pos + len_at + 2 <= end, f"{what} header truncated")
        n = _H.unpack_from(buf, pos + len_at)[0]
        _need(n >= minimum, f"{what} length {n} < {minimum}")
        _need(pos + n <= end, f"{what} longer than its message")
        yield pos, n
        pos += n


def _flow_stats(buf: bytes, start: int, end: int) -> None:
    for pos, n in _entries(buf, start, end, 0, 56, "flow stats entry"):
        mlen = check_match(buf, pos + 48, pos + n)
        check_instructions(buf, pos + 48 + mlen, pos + n)


def _group_desc(buf: bytes, start: int, end: int) -> None:
    for pos, n in _entries(buf, start, end, 0, 8, "group desc entry"):
        for bpos, bn in _entries(buf, pos + 8, pos + n, 0, 16, "bucket"):
            check_actions(buf, bpos + 16, bpos + bn)


def _group_stats(buf: bytes, start: int, end: int) -> None:
    for _pos, n in _entries(buf, start, end, 0, 40, "group stats entry"):
        _need((n - 40) % 16 == 0, "group stats bucket counters")


def _meter_stats(buf: bytes, start: int, end: int) -> None:
    for _pos, n in _entries(buf, start, end, 4, 40, "meter stats entry"):
        _need((n - 40) % 16 == 0, "meter band stats")


def _meter_config(buf: bytes, start: int, end: int) -> None:
    for pos, n in _entries(buf, start, end, 0, 8, "meter config entry"):
        for _bpos, _bn in _entries(buf, pos + 8, pos + n, 2, 12, "meter band"):
            pass


def _port_desc(buf: bytes, start: int, end: int) -> None:
    _need((end - start) % ofp.OFP_PORT_SIZE == 0, "port desc body not a whole number of ports")


def _aggregate(buf: bytes, start: int, end: int) -> None:
    _need(end - start == 24, "aggregate stats body is not 24 bytes")


_MULTIPART = {
    ofp.OFPMP_FLOW: _flow_stats,
    ofp.OFPMP_AGGREGATE: _aggregate,
    ofp.OFPMP_GROUP_DESC: _group_desc,
    ofp.OFPMP_GROUP: _group_stats,
    ofp.OFPMP_METER: _meter_stats,
    ofp.OFPMP_METER_CONFIG: _meter_config,
    ofp.OFPMP_PORT_DESC: _port_desc,
}

MULTIPART_TYPES = frozenset(_MULTIPART)


def multipart_type(data: bytes) -> int:
    _need(len(data) >= MP_HEADER, "multipart reply shorter than its header")
    return _H.unpack_from(data, 8)[0]


def check_multipart_reply(data: bytes) -> None:
    """Raise :class:`Malformed` unless the reply's body is safe to give to os-ken."""
    check = _MULTIPART.get(multipart_type(data))
    _need(check is not None, "multipart reply of a type we never request")
    check(data, MP_HEADER, len(data))


def check_packet_in(data: bytes) -> None:
    # header 8 + buffer_id 4 + total_len 2 + reason 1 + table 1 + cookie 8 = 24, then the match
    _need(len(data) >= 24 + 8, "packet-in too short")
    mlen = check_match(data, 24, len(data))
    _need(24 + mlen + 2 <= len(data), "packet-in without its pad")


def check_fixed(data: bytes, size: int, what: str) -> None:
    _need(len(data) >= size, f"{what} shorter than {size} bytes")
