"""The Twisted DNS server (UDP and TCP) in front of the resolver.

**Who asks.**  Every listener is opened with a *scope*: a function from the
source address of a query to the asking endpoint (:class:`Asker`: tenant and
network), or None.  The serving path decides which scope a listener gets, and
that is how tenants with identical subnets stay apart:

* :func:`tenant_scope` — a listener dedicated to one tenant (the datapath
  brings that tenant's DNS packets, and only those, to this address: one
  address per VRF), so the source address is looked up in that tenant only;
* :func:`source_scope` — a shared listener that identifies the asker by
  source address alone and refuses addresses that several tenants use;
* :func:`fixed_scope` — every query as one given endpoint (tests, benchmarks).

A query from an address its scope does not know is REFUSED: the server is not
an open resolver, and never answers one tenant's names to another's endpoint.

**Never raises on input.**  Malformed queries get FORMERR (or are dropped when
they have no header or are responses); every handler is wrapped so that a bug
is logged once per query as a failure instead of killing the listener.
"""

from __future__ import annotations

import socket
import struct
import time
from typing import Any, Callable, Dict, Optional, Union

from twisted.internet import defer, protocol
from twisted.internet.error import CannotListenError
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin

from contiv_sdn.dns import wire
from contiv_sdn.dns.names import Asker
from contiv_sdn.dns.resolver import Resolver
from contiv_sdn.dns.upstream import Forwarder
from contiv_sdn.ops import metrics

log = Logger()

Scope = Callable[[str], Optional[Asker]]
Result = Union[bytes, None, defer.Deferred]


def tenant_scope(resolver: Resolver, tenant: str) -> Scope:
    """Askers of one tenant, found by source address within that tenant only."""
    return lambda ip: resolver.directory.asker(ip, tenant)


def source_scope(resolver: Resolver) -> Scope:
    """Askers found by source address across tenants; an address that more than
    one tenant uses is refused (use a per-tenant listener for those)."""
    return lambda ip: resolver.directory.asker(ip)


def fixed_scope(asker: Asker) -> Scope:
    """Every query as ``asker`` (benchmarks and tests)."""
    return lambda ip: asker


class DNSServer:
    """Answers queries from the resolver, forwards the rest; opens listeners.

    :meth:`handle` is the transport-free core (bytes in, bytes/None/Deferred
    out) that the UDP and TCP listeners share, and that any other serving path
    (packets handed over by a controller) can call with its own scope.
    """

    #: Most TCP connections open at once; more are closed at once (a client
    #: holding connections cannot exhaust the process's descriptors).
    MAX_TCP = 256
    #: Seconds a TCP connection may stay idle.
    TCP_IDLE = 10.0

    def __init__(self, resolver: Resolver, forwarder: Optional[Forwarder],
                 reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.resolver = resolver
        self.forwarder = forwarder
        self.reactor = reactor
        self.tcp_open = 0
        self.ports: list = []
        self.stats: Dict[str, int] = {k: 0 for k in (
            "queries", "answered", "nxdomain", "forwarded", "servfail", "refused", "formerr",
            "dropped", "truncated")}
        metrics.watch_dns(self)  # contiv_dns_queries_total{outcome} on --metrics-listen

    # -- the core ---------------------------------------------------------------------
    def handle(self, data: bytes, src_ip: str, scope: Scope, tcp: bool = False) -> Result:
        """The answer to one datagram/message from ``src_ip``: bytes, None (no
        answer), or a Deferred of either (forwarded queries)."""
        try:
            return self._handle(data, src_ip, scope, tcp)
        except Exception:  # a bug: log it, answer nothing (the client retries)
            log.failure("DNS query from {src} could not be handled", src=src_ip)
            return None

    def _handle(self, data: bytes, src_ip: str, scope: Scope, tcp: bool) -> Result:
        parsed = wire.parse(data)
        if parsed is None:
            self.stats["dropped"] += 1
            return None
        if isinstance(parsed, wire.Reply):
            self.stats["formerr"] += 1
            return parsed.wire
        q = parsed
        self.stats["queries"] += 1
        limit = wire.TCP_LIMIT if tcp else wire.udp_limit(q)
        asker = scope(src_ip)
        if asker is None:
            self.stats["refused"] += 1
            return wire.answer(q, wire.REFUSED, (), 0, limit, authoritative=False)
        res = self.resolver.packed(asker, q.qname, q.qtype, q.qclass)
        if res is not None:
            self.stats["answered" if res[0] == wire.NOERROR else "nxdomain"] += 1
            out = wire.answer_packed(q, res[0], res[1], limit)
            if out[2] & 0x02:
                self.stats["truncated"] += 1
            return out
        if self.forwarder is None or not self.forwarder.upstreams:
            self.stats["servfail"] += 1
            return wire.answer(q, wire.SERVFAIL, (), 0, limit, authoritative=False)
        self.stats["forwarded"] += 1
        started = time.perf_counter()
        d = defer.ensureDeferred(self.forwarder.forward(q, tcp=tcp))

        def relayed(reply: Optional[bytes]) -> bytes:
            metrics.DNS_FORWARD_SECONDS.observe(time.perf_counter() - started)
            if reply is None:
                self.stats["servfail"] += 1
                return wire.answer(q, wire.SERVFAIL, (), 0, limit, authoritative=False)
            return wire.relay(q, reply, limit)

        def failed(f: Any) -> Optional[bytes]:
            if f.check(defer.CancelledError):
                return None  # shutting down
            log.failure("forwarding {name} failed", f, name=q.qname)
            self.stats["servfail"] += 1
            return wire.answer(q, wire.SERVFAIL, (), 0, limit, authoritative=False)

        d.addCallbacks(relayed, failed)
        return d

    # -- listeners --------------------------------------------------------------------
    def listen_udp(self, port: int, interface: str, scope: Scope) -> Any:
        p = self.reactor.listenUDP(port, _UDPServer(self, scope), interface=interface)
        self.ports.append(p)
        return p

    def listen_tcp(self, port: int, interface: str, scope: Scope) -> Any:
        p = self.reactor.listenTCP(port, _TCPFactory(self, scope), interface=interface,
                                   backlog=128)
        self.ports.append(p)
        return p

    def adopt(self, udp: Any, tcp: Any, scope: Scope) -> None:
        """Serve on sockets opened elsewhere (another network namespace): the reactor
        adopts duplicates of them, the caller closes its own."""
        import socket as _socket
        self.ports.append(self.reactor.adoptDatagramPort(udp.fileno(), _socket.AF_INET,
                                                         _UDPServer(self, scope)))
        self.ports.append(self.reactor.adoptStreamPort(tcp.fileno(), _socket.AF_INET,
                                                       _TCPFactory(self, scope)))

    def listen(self, port: int, interface: str, scope: Scope) -> int:
        """UDP and TCP on the same address; returns the port (the UDP one's, if 0
        was asked the TCP listener takes the same number)."""
        for _ in range(50 if port == 0 else 1):
            udp = self.listen_udp(port, interface, scope)
            actual = udp.getHost().port
            try:
                self.listen_tcp(actual, interface, scope)
                return actual
            except CannotListenError:
                self.ports.remove(udp)
                udp.stopListening()
                if port:
                    raise
        raise CannotListenError(interface, port, OSError("no port free for both UDP and TCP"))

    def stop(self) -> defer.Deferred:
        ports, self.ports = self.ports, []
        waits = [defer.maybeDeferred(p.stopListening) for p in ports]
        if self.forwarder is not None:
            waits.append(self.forwarder.close())
        return defer.DeferredList(waits, consumeErrors=True)


class _UDPServer(protocol.DatagramProtocol):
    def __init__(self, server: DNSServer, scope: Scope) -> None:
        self.server = server
        self.scope = scope

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        out = self.server.handle(data, addr[0], self.scope)
        if out is None:
            return
        if isinstance(out, defer.Deferred):
            out.addCallback(self._send, addr)
            out.addErrback(lambda f: log.failure("DNS reply to {src} lost", f, src=addr[0]))
            return
        self._send(out, addr)

    def startProtocol(self) -> None:
        # room for a burst of queries while one is being answered (the kernel caps it)
        try:
            self.transport.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        except OSError:
            pass

    def _send(self, out: Optional[bytes], addr: Any) -> None:
        if out is None or self.transport is None:
            return
        try:
            # straight to the socket: ``addr`` is the sender's, as recvfrom gave it, so
            # Twisted's per-write address validation (several parses) is not needed
            self.transport.socket.sendto(out, addr)
        except InterruptedError:
            self._send(out, addr)
        except OSError as e:  # a full send buffer or an unreachable asker: a lost datagram
            log.debug("DNS reply to {src} not sent: {err}", src=addr[0], err=e)


class _TCPServer(protocol.Protocol, TimeoutMixin):
    """Length-prefixed messages (RFC 1035 4.2.2), pipelined; answers in any order."""

    def __init__(self, server: DNSServer, scope: Scope) -> None:
        self.server = server
        self.scope = scope
        self.buf = b""
        self.src = ""

    def connectionMade(self) -> None:
        self.server.tcp_open += 1
        peer = self.transport.getPeer()
        self.src = getattr(peer, "host", "")
        if self.server.tcp_open > DNSServer.MAX_TCP:
            self.transport.abortConnection()
            return
        self.setTimeout(DNSServer.TCP_IDLE)

    def connectionLost(self, reason: Any = None) -> None:
        self.server.tcp_open -= 1
        self.connected = 0
        self.setTimeout(None)

    def dataReceived(self, data: bytes) -> None:
        self.resetTimeout()
        self.buf += data
        while len(self.buf) >= 2:
            n = struct.unpack_from("!H", self.buf)[0]
            if len(self.buf) < 2 + n:
                break
            message, self.buf = self.buf[2:2 + n], self.buf[2 + n:]
            out = self.server.handle(message, self.src, self.scope, tcp=True)
            if isinstance(out, defer.Deferred):
                out.addCallback(self._send)
                out.addErrback(lambda f: log.failure("DNS reply over TCP lost", f))
            else:
                self._send(out)

    def _send(self, out: Optional[bytes]) -> None:
        if out is None or self.transport is None or not self.connected:
            return
        self.transport.write(struct.pack("!H", len(out)) + out)

    def timeoutConnection(self) -> None:
        self.transport.loseConnection()


class _TCPFactory(protocol.Factory):
    def __init__(self, server: DNSServer, scope: Scope) -> None:
        self.server = server
        self.scope = scope

    def buildProtocol(self, addr: Any) -> _TCPServer:
        p = _TCPServer(self.server, self.scope)
        p.factory = self
        return p
