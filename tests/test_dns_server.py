"""The DNS server on real loopback sockets (UDP and TCP), asked by dnspython's client.

Endpoints are given loopback addresses (127.0.1.x) so that the test's client
can send from them: the server identifies the asker by source address, exactly
as it does for containers.  The upstream is a real DNS server the test runs on
loopback (tests.test_dns_fixtures.Upstream).
"""

from __future__ import annotations

import random
import struct

import dns.flags
import dns.message
import dns.rcode
from twisted.internet import threads
from twisted.trial import unittest

from contiv_sdn.dns import wire
from contiv_sdn.dns.names import Asker
from contiv_sdn.dns.resolver import Resolver
from contiv_sdn.dns.server import DNSServer, fixed_scope, source_scope, tenant_scope
from contiv_sdn.dns.upstream import Forwarder, parse_upstream, resolv_conf_upstreams
from tests.test_dns_fixtures import Upstream, addresses, directory, ep, net, query, raw_udp
from tests.test_fnd_helpers import async_test

BIG = 60  # members of the big group: more A records than fit in 512 bytes


def records():
    eps = [ep("red", "contiv-net", "127.0.1.2", group="web", name="db", ip6="2001:db8::2"),
           ep("red", "contiv-net", "127.0.1.3", group="web", name="web2"),
           ep("red", "backend", "127.0.2.2", group="cache", name="c1"),
           ep("blue", "contiv-net", "127.0.1.2", group="web", name="db"),
           ep("blue", "contiv-net", "127.0.1.9", group="blue-only")]
    eps += [ep("red", "contiv-net", f"127.0.3.{i}", group="big") for i in range(1, BIG + 1)]
    return directory(*eps, networks=[net("red", "contiv-net"), net("blue", "contiv-net")])


class ServerTestBase(unittest.TestCase):
    def setUp(self):
        self.upstream = Upstream({
            "example.test.": ["192.0.2.10"],
            "huge.test.": [f"198.51.100.{i}" for i in range(1, BIG + 1)],
        }).start()
        self.addCleanup(self.upstream.stop)
        self.resolver = Resolver(records())
        self.forwarder = Forwarder([self.upstream.address], timeout=1.0)
        self.server = DNSServer(self.resolver, self.forwarder)
        self.addCleanup(self.server.stop)
        # one listener per tenant (identical subnets), one shared by source address
        self.red = self.server.listen(0, "127.0.0.2", tenant_scope(self.resolver, "red"))
        self.blue = self.server.listen(0, "127.0.0.3", tenant_scope(self.resolver, "blue"))
        self.shared = self.server.listen(0, "127.0.0.4", source_scope(self.resolver))

    def ask(self, name, rdtype="A", listener="red", source="127.0.1.2", **kw):
        port, host = {"red": (self.red, "127.0.0.2"), "blue": (self.blue, "127.0.0.3"),
                      "shared": (self.shared, "127.0.0.4")}[listener]
        return query(name, rdtype, port=port, host=host, source=source, **kw)


class AnswerTests(ServerTestBase):
    @async_test
    async def test_queries_are_counted_for_metrics(self):
        """``contiv_dns_queries_total{outcome}`` and the forward latency, as a scrape
        of netplugin's /metrics reads them (the process's default registry)."""
        from prometheus_client import REGISTRY

        def sample(name, **labels):
            return REGISTRY.get_sample_value(name, labels) or 0.0

        before = {o: sample("contiv_dns_queries_total", outcome=o)
                  for o in ("queries", "answered", "nxdomain", "forwarded")}
        forwarded = sample("contiv_dns_forward_duration_seconds_count")
        await self.ask("web")
        await self.ask("nosuch")
        await self.ask("example.test")
        moved = {o: sample("contiv_dns_queries_total", outcome=o) - n for o, n in before.items()}
        self.assertEqual(moved, {"queries": 3, "answered": 1, "nxdomain": 1, "forwarded": 1})
        self.assertEqual(sample("contiv_dns_forward_duration_seconds_count") - forwarded, 1)

    @async_test
    async def test_group_members_with_short_ttl_authoritative(self):
        m = await self.ask("web")
        self.assertEqual(m.rcode(), dns.rcode.NOERROR)
        self.assertEqual(sorted(addresses(m)), ["127.0.1.2", "127.0.1.3"])
        self.assertTrue(m.flags & dns.flags.AA)
        self.assertEqual(m.answer[0].ttl, self.resolver.ttl)

    @async_test
    async def test_aaaa_and_edns(self):
        m = await self.ask("web", "AAAA", edns=0)
        self.assertEqual(addresses(m, "AAAA"), ["2001:db8::2"])
        self.assertEqual(m.edns, 0)

    @async_test
    async def test_rotation_across_queries(self):
        firsts = set()
        for _ in range(4):
            firsts.add(addresses(await self.ask("web"))[0])
        self.assertEqual(firsts, {"127.0.1.2", "127.0.1.3"})

    @async_test
    async def test_group_dot_network_from_another_network(self):
        m = await self.ask("web.contiv-net", source="127.0.2.2")
        self.assertEqual(sorted(addresses(m)), ["127.0.1.2", "127.0.1.3"])
        m = await self.ask("web", source="127.0.2.2")
        self.assertEqual(m.rcode(), dns.rcode.NXDOMAIN)

    @async_test
    async def test_tcp(self):
        m = await self.ask("db", tcp=True)
        self.assertEqual(addresses(m), ["127.0.1.2"])

    @async_test
    async def test_truncation_over_udp_and_everything_over_tcp(self):
        m = await self.ask("big")
        self.assertTrue(m.flags & dns.flags.TC)
        part = addresses(m)
        self.assertTrue(0 < len(part) < BIG)  # what fits, for stubs that never retry
        m = await self.ask("big", tcp=True)
        self.assertFalse(m.flags & dns.flags.TC)
        self.assertEqual(len(addresses(m)), BIG)
        m = await self.ask("big", edns=0)  # EDNS 1232 bytes: all 60 fit
        self.assertFalse(m.flags & dns.flags.TC)
        self.assertEqual(len(addresses(m)), BIG)


class TenantTests(ServerTestBase):
    @async_test
    async def test_identical_addresses_in_two_tenants_get_their_own_answers(self):
        red = await self.ask("web", listener="red")
        blue = await self.ask("web", listener="blue")
        self.assertEqual(sorted(addresses(red)), ["127.0.1.2", "127.0.1.3"])
        self.assertEqual(addresses(blue), ["127.0.1.2"])
        m = await self.ask("blue-only", listener="red")
        self.assertEqual(m.rcode(), dns.rcode.NXDOMAIN)
        m = await self.ask("blue-only", listener="blue")
        self.assertEqual(addresses(m), ["127.0.1.9"])

    @async_test
    async def test_shared_listener_refuses_ambiguous_and_unknown_askers(self):
        m = await self.ask("web", listener="shared", source="127.0.1.2")  # red and blue
        self.assertEqual(m.rcode(), dns.rcode.REFUSED)
        m = await self.ask("example.test", listener="shared", source="127.0.9.9")  # nobody
        self.assertEqual(m.rcode(), dns.rcode.REFUSED)
        self.assertEqual(self.upstream.asked, [])
        m = await self.ask("blue-only", listener="shared", source="127.0.1.9")  # blue only
        self.assertEqual(addresses(m), ["127.0.1.9"])

    @async_test
    async def test_tenant_listener_refuses_other_tenants_addresses(self):
        m = await self.ask("web", listener="red", source="127.0.1.9")  # blue's address
        self.assertEqual(m.rcode(), dns.rcode.REFUSED)


class ForwardTests(ServerTestBase):
    @async_test
    async def test_nxdomain_for_ours_forwarding_for_the_rest(self):
        m = await self.ask("nosuch")
        self.assertEqual(m.rcode(), dns.rcode.NXDOMAIN)
        m = await self.ask("nosuch.contiv-net")
        self.assertEqual(m.rcode(), dns.rcode.NXDOMAIN)
        self.assertEqual(self.upstream.asked, [])
        m = await self.ask("example.test")
        self.assertEqual(addresses(m), ["192.0.2.10"])
        self.assertFalse(m.flags & dns.flags.AA)
        m = await self.ask("missing.test")
        self.assertEqual(m.rcode(), dns.rcode.NXDOMAIN)
        self.assertEqual([a[1] for a in self.upstream.asked], ["example.test.", "missing.test."])

    @async_test
    async def test_truncated_upstream_answer_is_fetched_over_tcp(self):
        # over UDP to us: the upstream truncates, we fetch it over TCP, and the
        # client (512 bytes, no EDNS) is told to come back over TCP
        m = await self.ask("huge.test")
        self.assertTrue(m.flags & dns.flags.TC)
        self.assertEqual([t for t, _n, _ty in self.upstream.asked], ["udp", "tcp"])
        del self.upstream.asked[:]
        m = await self.ask("huge.test", edns=0)  # 1232 bytes take the 60 records
        self.assertFalse(m.flags & dns.flags.TC)
        self.assertEqual(len(addresses(m)), BIG)
        m = await self.ask("huge.test", tcp=True)
        self.assertEqual(len(addresses(m)), BIG)

    @async_test
    async def test_no_upstream_answer_is_servfail(self):
        self.upstream.silent = True
        self.forwarder.timeout = 0.2
        self.forwarder.upstreams = [self.upstream.address]
        self.upstream.udp.stopListening()  # nothing there: UDP unanswered
        await self.upstream.tcp.stopListening()
        m = await self.ask("example.test")
        self.assertEqual(m.rcode(), dns.rcode.SERVFAIL)

    def test_upstream_parsing_and_resolv_conf(self):
        self.assertEqual(parse_upstream("10.0.0.1"), ("10.0.0.1", 53))
        self.assertEqual(parse_upstream("10.0.0.1:5353"), ("10.0.0.1", 5353))
        self.assertEqual(parse_upstream("[2001:db8::1]:54"), ("2001:db8::1", 54))
        self.assertEqual(parse_upstream("2001:db8::1"), ("2001:db8::1", 53))
        self.assertRaises(ValueError, parse_upstream, "dns.example")
        path = self.mktemp()
        with open(path, "w") as f:
            f.write("search x\nnameserver 10.9.8.7\nnameserver fe80::1%eth0\nnameserver bogus\n")
        self.assertEqual(resolv_conf_upstreams(path), [("10.9.8.7", 53), ("fe80::1", 53)])
        self.assertEqual(resolv_conf_upstreams(path + ".missing"), [])


class WireTests(ServerTestBase):
    @async_test
    async def test_malformed_gets_formerr_and_responses_are_dropped(self):
        port = self.red
        bad = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + b"\x05ab"  # cut name
        out = await threads.deferToThread(raw_udp, bad, port, "127.0.0.2")
        self.assertEqual(struct.unpack("!HH", out[:4]), (0x1234, 0x8000 | 0x0100 | wire.FORMERR))
        notimp = struct.pack("!HHHHHH", 7, 0x2000, 0, 0, 0, 0)  # opcode STATUS
        out = await threads.deferToThread(raw_udp, notimp, port, "127.0.0.2")
        self.assertEqual(struct.unpack("!H", out[2:4])[0] & 0xF, wire.NOTIMP)
        self.server.stats["dropped"] = 0
        response = dns.message.make_response(dns.message.make_query("web", "A")).to_wire()
        self.server.handle(response, "127.0.1.2", fixed_scope(Asker("red", "contiv-net")))
        self.assertEqual(self.server.stats["dropped"], 1)

    def test_fast_path_and_dnspython_path_agree(self):
        """Plain queries take the fast parser; with EDNS they take dnspython's.  Both
        must give the same question, name and type (seeded random names)."""
        rnd = random.Random(10)
        for _ in range(500):
            labels = ["".join(rnd.choice("abcXYZ019-_") for _ in range(rnd.randint(1, 20)))
                      for _ in range(rnd.randint(1, 4))]
            name = ".".join(labels) + "."
            rdtype = rnd.choice(["A", "AAAA", "MX", "TXT", "ANY"])
            plain = dns.message.make_query(name, rdtype)
            fast = wire._fast(plain.to_wire())
            self.assertIsNotNone(fast)
            slow = wire.parse(dns.message.make_query(name, rdtype, use_edns=0).to_wire())
            self.assertEqual((fast.question, fast.qname, fast.qtype, fast.qclass),
                             (slow.question, slow.qname, slow.qtype, slow.qclass))
            self.assertIsNone(fast.edns)
            self.assertEqual(slow.edns, 1232)
            res = self.resolver.resolve(Asker("red", "contiv-net"), fast.qname, fast.qtype)
            out = dns.message.from_wire(wire.answer(
                fast, res.rcode if res else 0, res.records if res else (), 1, 512))
            self.assertEqual(out.question[0].name.to_text(), name)
