"""DNS wire format for the server: parse a query, build an answer.

Queries are parsed by dnspython, except the plain common case — one question,
no other records, no EDNS, which is what glibc's and musl's stub resolvers and
Docker's embedded resolver send — whose fixed layout is read directly: the
fast path costs a few microseconds where dnspython's parse costs tens, and it
is what lets one Python process keep up with dnsmasq (see ``bench/dns.py``).
Anything the fast path does not fully recognise goes to dnspython, and
anything dnspython refuses is answered FORMERR (or dropped when not even a
header is there), so hostile input never raises out of :func:`parse`.

Answers are built here for both paths: the question is echoed as the client
sent it (case included, for 0x20 randomisation) and answer names are a
compression pointer to it.  An answer that does not fit the client's limit
(512 bytes, or its EDNS payload size) keeps the records that fit and sets TC:
glibc then asks again over TCP, and musl, which never does, still gets the
records that fit rather than nothing.
"""

from __future__ import annotations

import re
import struct
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode

NOERROR, FORMERR, SERVFAIL, NXDOMAIN, NOTIMP, REFUSED = 0, 1, 2, 3, 4, 5
BADVERS = 16
A, NS, CNAME, SOA, PTR, MX, TXT, AAAA, OPT, ANY = 1, 2, 5, 6, 12, 15, 16, 28, 41, 255
CLASS_IN = 1

_QR, _AA, _TC, _RD, _RA = 0x8000, 0x0400, 0x0200, 0x0100, 0x0080
#: Largest UDP answer we send to an EDNS client (the DNS flag day 2020 value:
#: no IP fragmentation on any common path).
EDNS_PAYLOAD = 1232
UDP_PLAIN = 512
TCP_LIMIT = 65535

_HEADER = struct.Struct("!HHHHHH")
_RR = struct.Struct("!HHHIH")  # pointer, type, class, ttl, rdlength
_QTAIL = struct.Struct("!HH")


class Query(NamedTuple):
    """One well-formed query."""

    id: int
    flags: int
    #: the question as the client sent it: name (uncompressed) + type + class
    question: bytes
    #: the name as text, without the final dot ("." for the root); escapes
    #: (``\\.``, ``\\032``) mean a label with bytes no name of ours has
    qname: str
    qtype: int
    qclass: int
    #: the client's EDNS UDP payload size, or None if it sent no OPT record
    edns: Optional[int]
    edns_version: int = 0


class Reply(NamedTuple):
    """An answer that needs no lookup (the query was refused as malformed)."""

    wire: bytes


Parsed = Union[Query, Reply, None]


#: Bytes of a name that dnspython's text form escapes (outside printable ASCII, and
#: ``"();@$\\``): such names take the slow path, so both paths give the same text.
_UNUSUAL = re.compile(rb'[^\x21-\x7e]|[\\"();@$]')


def _fast(data: bytes) -> Optional[Query]:
    """The plain query layout, or None (then dnspython decides)."""
    n = len(data)
    if n < 17 or n > 512:
        return None
    qid, flags, qd, an, ns, ar = _HEADER.unpack_from(data)
    if flags & 0xF800 or qd != 1 or an or ns or ar:  # QR or opcode set, or other sections
        return None
    i = 12
    labels = []
    while True:
        length = data[i]
        i += 1
        if length == 0:
            break
        if length > 63 or i + length >= n:
            return None
        labels.append(data[i:i + length])
        i += length
    if i + 4 != n or i - 12 > 255:
        return None
    qtype, qclass = _QTAIL.unpack_from(data, i)
    name = b".".join(labels)
    if _UNUSUAL.search(name) is not None or name.count(b".") != len(labels) - 1:
        return None  # a byte that needs escaping in text: dnspython's path says how
    qname = name.decode("ascii") if labels else "."
    return Query(qid, flags, data[12:], qname, qtype, qclass, None)


def _header_only(data: bytes, rcode: int) -> Optional[Reply]:
    """An error answer carrying only the query's id and opcode (for input no parser
    accepts); None for input without a header or that is itself a response."""
    if len(data) < 12:
        return None
    qid, flags = struct.unpack_from("!HH", data)
    if flags & _QR:
        return None
    return Reply(_HEADER.pack(qid, _QR | (flags & 0x7800) | (flags & _RD) | rcode, 0, 0, 0, 0))


def parse(data: bytes) -> Parsed:
    """A query, a ready error answer, or None (drop: no header, or a response)."""
    q = _fast(data)
    if q is not None:
        return q
    try:
        msg = dns.message.from_wire(data)
    except dns.message.BadEDNS:
        return _header_only(data, FORMERR)
    except Exception:  # noqa: BLE001 - any parser failure on hostile bytes is FORMERR, not a bug
        return _header_only(data, FORMERR)
    if msg.flags & dns.flags.QR:
        return None  # never answer an answer (reflection loops)
    if msg.opcode() != dns.opcode.QUERY:
        return _header_only(data, NOTIMP)
    if len(msg.question) != 1:
        return _header_only(data, FORMERR)
    rrset = msg.question[0]
    name = rrset.name
    qname = "." if name == dns.name.root else name.to_text(omit_final_dot=True)
    question = name.to_wire() + _QTAIL.pack(rrset.rdtype, rrset.rdclass)
    edns = None
    version = 0
    if msg.edns >= 0:
        edns, version = max(UDP_PLAIN, int(msg.payload)), int(msg.edns)
    q = Query(msg.id, int(msg.flags) & 0xFFFF, question, qname, int(rrset.rdtype),
              int(rrset.rdclass), edns, version)
    if version > 0:
        return Reply(answer(q, BADVERS, (), 0, TCP_LIMIT))
    return q


def udp_limit(q: Query) -> int:
    """The largest UDP answer this client takes."""
    return UDP_PLAIN if q.edns is None else min(q.edns, EDNS_PAYLOAD)


def _opt(rcode: int) -> bytes:
    # root name, type OPT, class = our payload size, ttl = extended rcode/version/flags
    return b"\x00" + struct.pack("!HHIH", OPT, EDNS_PAYLOAD, (rcode >> 4) << 24, 0)


def answer(q: Query, rcode: int, records: Sequence[Tuple[int, bytes]], ttl: int, limit: int,
           authoritative: bool = True) -> bytes:
    """The answer to ``q``: ``records`` are (type, rdata) owned by the question's name,
    as many as fit in ``limit`` bytes (TC set if some did not)."""
    flags = _QR | (q.flags & _RD) | _RA | (rcode & 0xF) | (_AA if authoritative else 0)
    opt = _opt(rcode) if q.edns is not None else b""
    size = 12 + len(q.question) + len(opt)
    parts = []
    for rtype, rdata in records:
        rr = _RR.pack(0xC00C, rtype, CLASS_IN, ttl, len(rdata)) + rdata
        if size + len(rr) > limit:
            flags |= _TC
            break
        parts.append(rr)
        size += len(rr)
    head = _HEADER.pack(q.id, flags, 1, len(parts), 0, 1 if opt else 0)
    return b"".join((head, q.question, *parts, opt))


def answer_packed(q: Query, rcode: int, rrs: Sequence[bytes], limit: int) -> bytes:
    """:func:`answer` for records already encoded as answer RRs (the query path)."""
    flags = _QR | (q.flags & _RD) | _RA | (rcode & 0xF) | _AA
    opt = _opt(rcode) if q.edns is not None else b""
    size = 12 + len(q.question) + len(opt) + sum(map(len, rrs))
    if size > limit:
        size -= sum(map(len, rrs))
        kept = []
        for rr in rrs:
            if size + len(rr) > limit:
                break
            kept.append(rr)
            size += len(rr)
        rrs, flags = kept, flags | _TC
    return b"".join((_HEADER.pack(q.id, flags, 1, len(rrs), 0, 1 if opt else 0), q.question,
                     *rrs, opt))


def relay(q: Query, reply: bytes, limit: int) -> bytes:
    """An upstream's ``reply`` to ``q`` as ours (the client's id); if it is longer
    than ``limit``, a TC answer with the upstream's rcode so the client asks over TCP."""
    if len(reply) <= limit:
        return struct.pack("!H", q.id) + reply[2:]
    flags = struct.unpack_from("!H", reply, 2)[0]
    opt = _opt(0) if q.edns is not None else b""
    head = _HEADER.pack(q.id, (flags | _TC) & ~_AA & 0xFFFF, 1, 0, 0, 1 if opt else 0)
    return head + q.question + opt


def truncated(reply: bytes) -> bool:
    """Whether an upstream reply has TC set (ask again over TCP)."""
    return len(reply) >= 4 and bool(struct.unpack_from("!H", reply, 2)[0] & _TC)


def matches(query_wire: bytes, reply: bytes) -> bool:
    """Whether ``reply`` answers ``query_wire``: same id, QR set, same question
    (compared case-insensitively: some servers do not keep the case)."""
    if len(reply) < 12 or reply[:2] != query_wire[:2] or not reply[2] & 0x80:
        return False
    try:
        sent = dns.message.from_wire(query_wire, question_only=True).question
        got = dns.message.from_wire(reply, question_only=True).question
    except Exception:  # noqa: BLE001 - a reply we cannot read does not answer us
        return False
    return len(sent) == len(got) == 1 and sent[0].name == got[0].name and \
        sent[0].rdtype == got[0].rdtype and sent[0].rdclass == got[0].rdclass


def query_wire(q: Query, new_id: int) -> bytes:
    """``q`` re-encoded for an upstream with a fresh id (RD set; EDNS if the client used it)."""
    head = _HEADER.pack(new_id, _RD | (q.flags & 0x0010), 1, 0, 0, 1 if q.edns is not None else 0)
    opt = b""
    if q.edns is not None:
        opt = b"\x00" + struct.pack("!HHIH", OPT, EDNS_PAYLOAD, 0, 0)
    return head + q.question + opt
