"""Helpers of the DNS tests: a real upstream DNS server on loopback, a client, records.

The upstream is a small authoritative server (dnspython messages over Twisted
UDP and TCP sockets) that the test controls: it counts what it was asked over
which transport, and answers names with more records than fit in 512 bytes
with TC over UDP and in full over TCP, like a real server, so the forwarder's
TCP fallback is exercised on the wire.
"""

from __future__ import annotations

import socket
import struct
from typing import Any, Dict, List, Optional, Tuple

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset
from twisted.internet import defer, protocol, reactor, threads
from twisted.internet.error import CannotListenError

from contiv_sdn.dns.names import Directory


def ep(tenant: str, network: str, ip: str, group: str = "", name: str = "", ip6: str = "",
       key: Optional[str] = None) -> Tuple[str, Dict[str, Any]]:
    """An endpoint record as the netmaster stores it (the fields DNS reads)."""
    return (key or f"{tenant}-{network}-{ip}"), {
        "id": key or ip, "tenant": tenant, "network": f"{tenant}:{network}",
        "networkName": network, "group": f"{tenant}:{group}" if group else "",
        "groupName": group, "ipAddress": ip, "ipv6Address": ip6, "containerName": name}


def net(tenant: str, network: str) -> Tuple[str, Dict[str, Any]]:
    return f"{tenant}:{network}", {"key": f"{tenant}:{network}", "tenant": tenant,
                                   "networkName": network}


def directory(*endpoints: Tuple[str, Dict[str, Any]], networks=(), services=(),
              domain: str = "") -> Directory:
    return Directory(dict(endpoints), dict(networks), dict(services), domain=domain)


class Upstream:
    """A loopback DNS server with fixed answers; ``asked`` lists (transport, name, type)."""

    def __init__(self, records: Dict[str, List[str]]) -> None:
        #: name (lower, with final dot) -> A addresses
        self.records = records
        self.asked: List[Tuple[str, str, str]] = []
        self.udp: Any = None
        self.tcp: Any = None
        self.silent = False

    def answer(self, data: bytes, transport: str) -> Optional[bytes]:
        try:
            return self._answer(data, transport)
        except Exception:  # a fuzzed query the fixture cannot answer: silence, like a server
            return None

    def _answer(self, data: bytes, transport: str) -> Optional[bytes]:
        q = dns.message.from_wire(data)
        name = q.question[0].name.to_text().lower()
        self.asked.append((transport, name, dns.rdatatype.to_text(q.question[0].rdtype)))
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        addrs = self.records.get(name)
        if addrs is None:
            r.set_rcode(dns.rcode.NXDOMAIN)
        elif q.question[0].rdtype == dns.rdatatype.A:
            r.answer.append(dns.rrset.from_text_list(q.question[0].name, 300, "IN", "A", addrs))
        wire = r.to_wire(max_size=65535)
        limit = max(512, q.payload) if q.edns >= 0 else 512
        if transport == "udp" and len(wire) > limit:
            r.answer = []
            r.flags |= dns.flags.TC
            wire = r.to_wire()
        return wire

    def start(self) -> "Upstream":
        owner = self

        class U(protocol.DatagramProtocol):
            def datagramReceived(self, data, addr):
                if owner.silent:
                    return
                out = owner.answer(data, "udp")
                if out is not None:
                    self.transport.write(out, addr)

        class T(protocol.Protocol):
            buf = b""

            def dataReceived(self, data):
                self.buf += data
                while len(self.buf) >= 2:
                    n = struct.unpack_from("!H", self.buf)[0]
                    if len(self.buf) < 2 + n:
                        return
                    msg, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
                    out = owner.answer(msg, "tcp")
                    if out is not None:
                        self.transport.write(struct.pack("!H", len(out)) + out)

        for _ in range(50):  # UDP and TCP on one port number (a UDP port's TCP twin may be taken)
            self.udp = reactor.listenUDP(0, U(), interface="127.0.0.1")
            try:
                self.tcp = reactor.listenTCP(self.port, protocol.Factory.forProtocol(T),
                                             interface="127.0.0.1")
                return self
            except CannotListenError:
                self.udp.stopListening()
        raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")

    @property
    def port(self) -> int:
        return self.udp.getHost().port

    @property
    def address(self) -> Tuple[str, int]:
        return ("127.0.0.1", self.port)

    def stop(self) -> defer.Deferred:
        return defer.DeferredList([defer.maybeDeferred(self.udp.stopListening),
                                   defer.maybeDeferred(self.tcp.stopListening)])


def query(name: str, rdtype: str = "A", port: int = 53, tcp: bool = False, source: str = "127.0.0.1",
          host: str = "127.0.0.1", edns: int = -1, timeout: float = 5.0) -> defer.Deferred:
    """One query with dnspython's own client, in a thread (the server runs on the reactor).
    Fires with the parsed answer."""
    q = dns.message.make_query(name, rdtype, use_edns=edns)

    def ask():
        if tcp:
            return dns.query.tcp(q, host, port=port, timeout=timeout, source=source)
        return dns.query.udp(q, host, port=port, timeout=timeout, source=source,
                             ignore_trailing=False)

    return threads.deferToThread(ask)


def addresses(msg: dns.message.Message, rdtype: str = "A") -> List[str]:
    """The addresses of an answer, in the order sent."""
    out = []
    for rrset in msg.answer:
        if rrset.rdtype == dns.rdatatype.from_text(rdtype):
            out.extend(r.address for r in rrset)
    return out


def raw_udp(data: bytes, port: int, host: str = "127.0.0.1", timeout: float = 2.0) -> bytes:
    """Send bytes, return the first datagram back (blocking: run in a thread)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, (host, port))
        return s.recv(65535)
