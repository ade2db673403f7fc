"""Forwarding of names that are not ours to the upstream resolvers.

Each query goes to the upstreams in order over UDP from one shared socket,
with a fresh random id (so a client cannot choose the id an upstream sees, and
ids of concurrent queries never collide); a reply counts only if it comes from
the upstream asked, carries that id and answers the same question.  A reply
with TC set is fetched again from the same upstream over TCP (the "TCP
fallback"), and the server then relays it whole (TCP client, or it fits) or
tells a UDP client to come back over TCP.  No answer from any upstream within
the timeouts → ``None`` (the server answers SERVFAIL).

Default upstreams are the nameservers of the host's ``/etc/resolv.conf``.
"""

from __future__ import annotations

import ipaddress
import secrets
import struct
from typing import Any, Dict, List, Optional, Sequence, Tuple

from twisted.internet import defer, protocol
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.logger import Logger

from contiv_sdn.dns import wire

log = Logger()

Upstream = Tuple[str, int]
RESOLV_CONF = "/etc/resolv.conf"


def parse_upstream(text: str) -> Upstream:
    """``IP``, ``IP:port`` or ``[IPv6]:port`` → (ip, port); ValueError says what is wrong."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"upstream {text!r}: expected [IPv6]:port")
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"upstream {text!r}: not an IP address (IP, IP:port or [IPv6]:port)") \
            from None
    if not 0 < port < 65536:
        raise ValueError(f"upstream {text!r}: port out of range")
    return str(ip), port


def resolv_conf_upstreams(path: str = RESOLV_CONF) -> List[Upstream]:
    """The ``nameserver`` lines of a resolv.conf (unreadable or none → [])."""
    out: List[Upstream] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    try:
                        out.append(parse_upstream(parts[1].split("%")[0]))
                    except ValueError:
                        continue
    except OSError:
        return []
    return out


class _UDP(protocol.DatagramProtocol):
    def __init__(self, owner: "Forwarder") -> None:
        self.owner = owner

    def datagramReceived(self, data: bytes, addr: Any) -> None:
        self.owner._received(data, (addr[0], addr[1]))


class _TCPQuery(protocol.Protocol):
    """One query over TCP: send it length-prefixed, read one message, hang up."""

    def __init__(self, query: bytes, done: defer.Deferred) -> None:
        self.query = query
        self.done = done
        self.buf = b""

    def connectionMade(self) -> None:
        self.transport.write(struct.pack("!H", len(self.query)) + self.query)

    def dataReceived(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) >= 2:
            n = struct.unpack_from("!H", self.buf)[0]
            if len(self.buf) >= 2 + n:
                if not self.done.called:
                    self.done.callback(self.buf[2:2 + n])
                self.transport.loseConnection()

    def connectionLost(self, reason: Any) -> None:
        if not self.done.called:
            self.done.callback(None)


class Forwarder:
    """Sends queries upstream; :meth:`forward` returns the raw reply or None."""

    def __init__(self, upstreams: Sequence[Upstream], reactor: Any = None, timeout: float = 2.0,
                 tcp_timeout: float = 4.0) -> None:
        if reactor is None:
            from twisted.internet import reactor as _reactor
            reactor = _reactor
        self.upstreams = list(upstreams)
        self.reactor = reactor
        self.timeout = timeout
        self.tcp_timeout = tcp_timeout
        self._ports: Dict[int, Any] = {}
        self._inflight: Dict[Tuple[Upstream, int], Tuple[bytes, defer.Deferred]] = {}
        self.stats = {"udp": 0, "tcp": 0, "timeouts": 0, "mismatched": 0}

    def _port(self, family: int) -> Any:
        port = self._ports.get(family)
        if port is None:
            iface = "::" if family == 6 else "0.0.0.0"
            port = self._ports[family] = self.reactor.listenUDP(0, _UDP(self), interface=iface)
        return port

    def _received(self, data: bytes, addr: Upstream) -> None:
        try:
            ip = str(ipaddress.ip_address(addr[0].split("%")[0]))
        except ValueError:
            return
        if len(data) < 12:
            return
        key = ((ip, addr[1]), struct.unpack_from("!H", data)[0])
        entry = self._inflight.get(key)
        if entry is None or not wire.matches(entry[0], data):
            self.stats["mismatched"] += 1
            return
        del self._inflight[key]
        entry[1].callback(data)

    async def _udp(self, upstream: Upstream, q: wire.Query) -> Optional[bytes]:
        family = ipaddress.ip_address(upstream[0]).version
        for _ in range(8):  # a free id (at most 65536 queries in flight per upstream)
            qid = secrets.randbits(16)
            if (upstream, qid) not in self._inflight:
                break
        else:
            return None
        data = wire.query_wire(q, qid)
        d: defer.Deferred = defer.Deferred()
        self._inflight[(upstream, qid)] = (data, d)
        self.stats["udp"] += 1
        try:
            self._port(family).write(data, upstream)
        except Exception as e:  # noqa: BLE001 - an unreachable upstream is a miss, not a bug
            self._inflight.pop((upstream, qid), None)
            log.debug("cannot send to upstream {up}: {err}", up=upstream, err=e)
            return None
        d.addTimeout(self.timeout, self.reactor)
        try:
            return await d
        except defer.TimeoutError:
            self.stats["timeouts"] += 1
            return None
        finally:
            self._inflight.pop((upstream, qid), None)

    async def _tcp(self, upstream: Upstream, q: wire.Query) -> Optional[bytes]:
        qid = secrets.randbits(16)
        data = wire.query_wire(q, qid)
        cls = TCP6ClientEndpoint if ":" in upstream[0] else TCP4ClientEndpoint
        done: defer.Deferred = defer.Deferred()
        self.stats["tcp"] += 1
        try:
            proto = await cls(self.reactor, upstream[0], upstream[1],
                              timeout=self.tcp_timeout).connect(
                protocol.Factory.forProtocol(lambda: _TCPQuery(data, done)))
        except Exception as e:  # noqa: BLE001 - refused/unreachable: try the next upstream
            log.debug("TCP to upstream {up} failed: {err}", up=upstream, err=e)
            return None
        done.addTimeout(self.tcp_timeout, self.reactor)
        try:
            reply = await done
        except defer.TimeoutError:
            proto.transport.abortConnection()
            self.stats["timeouts"] += 1
            return None
        if reply is None or not wire.matches(data, reply):
            return None
        return reply

    async def forward(self, q: wire.Query, tcp: bool = False) -> Optional[bytes]:
        """The first upstream's reply to ``q`` (over TCP if ``tcp`` or if the UDP
        reply was truncated), with the id we chose; None if none answered."""
        for upstream in self.upstreams:
            reply = None if tcp else await self._udp(upstream, q)
            if tcp or (reply is not None and wire.truncated(reply)):
                full = await self._tcp(upstream, q)
                reply = full if full is not None else reply
            if reply is not None:
                return reply
        return None

    def close(self) -> defer.Deferred:
        ports, self._ports = list(self._ports.values()), {}
        for _key, (_data, d) in list(self._inflight.items()):
            if not d.called:
                d.cancel()
        self._inflight.clear()
        return defer.DeferredList([defer.maybeDeferred(p.stopListening) for p in ports],
                                  consumeErrors=True)
