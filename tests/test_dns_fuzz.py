"""Robustness: over 10,000 malformed and mutated DNS packets at the server, UDP and TCP.

Bounded and deterministic: mutations come from a seeded generator applied to a
corpus of valid queries (ours, forwarded, truncating, EDNS with options), plus
pure noise and hand-made traps (compression loops, lying counts, oversized
frames).  The packets come from an endpoint's address, so they reach the
resolver and the forwarder (a real upstream on loopback), not just the parser.
Afterwards: no error or failure was logged by anyone (twisted.logger events
are captured), every packet was handled (counted by the server), and valid
queries over UDP and TCP are still answered.
"""

from __future__ import annotations

import random
import struct
from typing import List

import dns.edns
import dns.message
import dns.rcode
from twisted.internet import defer, protocol, reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.logger import LogLevel, globalLogPublisher

from contiv_sdn.testing.wait import sleep, wait_for
from tests.test_dns_fixtures import addresses, query
from tests.test_dns_server import ServerTestBase
from tests.test_fnd_helpers import async_test

SEED = 20240610
UDP_PACKETS = 6000
TCP_MESSAGES = 4500


def corpus() -> List[bytes]:
    out = []
    for name in ("web", "db", "big", "web.contiv-net", "nosuch", "nosuch.contiv-net",
                 "example.test", "huge.test", "missing.test", "WeB.CoNtIv-NeT", "."):
        for rdtype in ("A", "AAAA", "ANY", "MX", "TXT", "SOA"):
            out.append(dns.message.make_query(name, rdtype).to_wire())
            out.append(dns.message.make_query(name, rdtype, use_edns=0, payload=4096).to_wire())
        q = dns.message.make_query(name, "A", use_edns=0, options=[
            dns.edns.GenericOption(10, b"\x01" * 8)])  # a cookie, as dig sends
        out.append(q.to_wire())
    return out


def mutate(rnd: random.Random, pool: List[bytes]) -> bytes:
    data = bytearray(rnd.choice(pool))
    kind = rnd.randrange(10)
    if kind == 0:  # flip bits
        for _ in range(rnd.randint(1, 8)):
            i = rnd.randrange(len(data))
            data[i] ^= 1 << rnd.randrange(8)
    elif kind == 1:  # overwrite bytes
        for _ in range(rnd.randint(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
    elif kind == 2:  # cut
        del data[rnd.randrange(len(data)):]
    elif kind == 3:  # extend
        data += bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 300)))
    elif kind == 4:  # insert
        i = rnd.randrange(len(data))
        data[i:i] = bytes(rnd.randrange(256) for _ in range(rnd.randint(1, 20)))
    elif kind == 5 and len(data) >= 12:  # lying section counts
        struct.pack_into("!HHHH", data, 4, *(rnd.choice((0, 1, 2, 255, 65535))
                                             for _ in range(4)))
    elif kind == 6 and len(data) > 14:  # compression pointers: loops, forward, out of range
        ptr = rnd.choice((0xC00C, 0xC000, 0xFFFF, 0xC000 | rnd.randrange(len(data))))
        struct.pack_into("!H", data, 12 + rnd.randrange(len(data) - 13), ptr)
    elif kind == 7:  # noise
        data = bytearray(rnd.randrange(256) for _ in range(rnd.randint(0, 600)))
    elif kind == 8:  # splice two queries
        other = rnd.choice(pool)
        data = data[:rnd.randrange(len(data))] + other[rnd.randrange(len(other)):]
    else:  # flags/opcode/rcode garbage in an otherwise valid query
        if len(data) >= 4:
            struct.pack_into("!H", data, 2, rnd.randrange(65536))
    return bytes(data)


class _Sink(protocol.DatagramProtocol):
    def __init__(self):
        self.replies = 0

    def datagramReceived(self, data, addr):
        self.replies += 1


class _TCPClient(protocol.Protocol):
    def __init__(self):
        self.received = 0
        self.closed = defer.Deferred()

    def dataReceived(self, data):
        self.received += len(data)

    def connectionLost(self, reason=None):
        if not self.closed.called:
            self.closed.callback(None)


class FuzzTests(ServerTestBase):
    def setUp(self):
        super().setUp()
        self.events = []

        def observe(event):
            if event.get("log_failure") is not None or \
                    event.get("log_level") in (LogLevel.error, LogLevel.critical, LogLevel.warn):
                self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.forwarder.timeout = 0.3  # mutated names the upstream ignores time out quickly

    def handled(self) -> int:
        s = self.server.stats
        return s["queries"] + s["formerr"] + s["dropped"]

    async def _udp(self, rnd, pool):
        sink = _Sink()
        port = reactor.listenUDP(0, sink, interface="127.0.1.2")  # the red endpoint's address
        try:
            for start in range(0, UDP_PACKETS, 50):
                for _ in range(50):
                    port.write(mutate(rnd, pool), ("127.0.0.2", self.red))
                before = self.handled()
                # let the server drain the batch before the next (bounded, no loss)
                await wait_for(lambda: self.handled() >= before + 50 or None, timeout=10,
                               what="the server handling a batch of mutated datagrams",
                               every=0.001)
        finally:
            await port.stopListening()
        return sink.replies

    async def _tcp(self, rnd, pool):
        sent = 0
        while sent < TCP_MESSAGES:
            client = _TCPClient()
            p = await connectProtocol(
                TCP4ClientEndpoint(reactor, "127.0.0.2", self.red, bindAddress=("127.0.1.2", 0)),
                client)
            stream = b""
            for _ in range(rnd.randint(1, 100)):
                msg = mutate(rnd, pool)
                shape = rnd.randrange(8)
                if shape == 0:  # a length prefix that lies (longer than what follows)
                    stream += struct.pack("!H", len(msg) + rnd.randint(1, 5000)) + msg
                    break  # the connection now waits for bytes that never come
                stream += struct.pack("!H", len(msg)) + msg
                sent += 1
            if rnd.randrange(4) == 0:
                stream += b"\x00"  # half a length prefix
            # written in random pieces (framing must not depend on segment boundaries)
            i = 0
            while i < len(stream):
                n = rnd.randint(1, 700)
                p.transport.write(stream[i:i + n])
                i += n
            await sleep(0.002)
            p.transport.loseConnection()
            await client.closed
        return sent

    @async_test
    async def test_mutated_packets_udp_and_tcp(self):
        rnd = random.Random(SEED)
        pool = corpus()
        before = self.handled()
        replies = await self._udp(rnd, pool)
        tcp_sent = await self._tcp(rnd, pool)
        await wait_for(lambda: self.server.tcp_open == 0, timeout=10,
                       what="every fuzzing TCP connection closed on the server side")
        self.assertGreaterEqual(self.handled() - before, UDP_PACKETS + tcp_sent)
        self.assertGreaterEqual(UDP_PACKETS + tcp_sent, 10_000)
        self.assertGreater(replies, 0)
        # both kinds of input were seen: refused as malformed, and answered
        self.assertGreater(self.server.stats["formerr"], 100)
        self.assertGreater(self.server.stats["answered"], 100)
        self.assertGreater(self.server.stats["forwarded"], 10)
        # still serving, both transports, ours and forwarded
        m = await self.ask("web")
        self.assertEqual(sorted(addresses(m)), ["127.0.1.2", "127.0.1.3"])
        m = await self.ask("db", tcp=True)
        self.assertEqual(addresses(m), ["127.0.1.2"])
        m = await self.ask("example.test")
        self.assertEqual(addresses(m), ["192.0.2.10"])
        m = await self.ask("nosuch")
        self.assertEqual(m.rcode(), dns.rcode.NXDOMAIN)
        self.assertEqual(self.events, [], "errors were logged while fuzzing")
