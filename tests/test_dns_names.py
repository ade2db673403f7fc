"""The naming rules on plain records: what each name means to whom, per tenant."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from contiv_sdn.dns.names import FOREIGN, MISSING, Addresses, Asker
from contiv_sdn.dns.resolver import Resolver
from contiv_sdn.dns import wire
from tests.test_dns_fixtures import directory, ep, net


def seed():
    """The seed's quick start: web and db in contiv-net, plus a second network."""
    return directory(
        ep("default", "contiv-net", "10.1.1.2", group="web", name="web1", ip6="2001:db8::2"),
        ep("default", "contiv-net", "10.1.1.3", group="web", name="web2"),
        ep("default", "contiv-net", "10.1.1.4", group="db", name="db"),
        ep("default", "backend", "10.2.1.2", group="cache", name="/redis1"),
        networks=[net("default", "contiv-net"), net("default", "backend"),
                  net("default", "empty-net")],
        services=[("default:lb", {"tenant": "default", "serviceName": "frontend",
                                  "networkName": "contiv-net", "ipAddress": "10.1.1.200"})])


WEB = Asker("default", "contiv-net", "10.1.1.2")
BACK = Asker("default", "backend", "10.2.1.2")


class NamingRulesTests(SynchronousTestCase):
    def test_group_name_in_own_network_gives_every_member(self):
        self.assertEqual(seed().lookup(WEB, "web"),
                         Addresses(("10.1.1.2", "10.1.1.3"), ("2001:db8::2",)))

    def test_group_name_bare_is_not_visible_from_another_network(self):
        self.assertIs(seed().lookup(BACK, "web"), MISSING)

    def test_group_dot_network_from_any_network_of_the_tenant(self):
        self.assertEqual(seed().lookup(BACK, "web.contiv-net").v4, ("10.1.1.2", "10.1.1.3"))
        self.assertEqual(seed().lookup(WEB, "cache.backend").v4, ("10.2.1.2",))

    def test_container_names_bare_and_with_network(self):
        d = seed()
        self.assertEqual(d.lookup(WEB, "db").v4, ("10.1.1.4",))
        # docker's leading '/' is not part of the name; bare container names are tenant-wide
        self.assertEqual(d.lookup(WEB, "redis1").v4, ("10.2.1.2",))
        self.assertEqual(d.lookup(BACK, "db.contiv-net").v4, ("10.1.1.4",))
        self.assertEqual(d.lookup(BACK, "web2.contiv-net").v4, ("10.1.1.3",))

    def test_service_lb_name_gives_its_vip(self):
        self.assertEqual(seed().lookup(WEB, "frontend"), Addresses(("10.1.1.200",), ()))
        self.assertEqual(seed().lookup(BACK, "frontend.contiv-net").v4, ("10.1.1.200",))

    def test_names_are_case_insensitive_and_take_a_final_dot(self):
        self.assertEqual(seed().lookup(BACK, "WEB.Contiv-Net.").v4, ("10.1.1.2", "10.1.1.3"))

    def test_ours_but_missing_vs_foreign(self):
        d = seed()
        self.assertIs(d.lookup(WEB, "nosuch"), MISSING)  # one label: ours
        self.assertIs(d.lookup(WEB, "nosuch.contiv-net"), MISSING)  # a network of ours
        self.assertIs(d.lookup(WEB, "x.empty-net"), MISSING)  # a network without endpoints
        self.assertIs(d.lookup(WEB, "example.com"), FOREIGN)
        self.assertIs(d.lookup(WEB, "web.example.com"), FOREIGN)
        self.assertIs(d.lookup(WEB, "we\\.b"), FOREIGN)  # escaped bytes are never ours
        self.assertIs(d.lookup(WEB, "."), FOREIGN)

    def test_priority_service_then_group_then_container(self):
        d = directory(
            ep("t", "n", "10.0.0.2", group="x", name="x"),
            ep("t", "n", "10.0.0.3", name="x"),
            services=[("t:s", {"tenant": "t", "serviceName": "lb", "networkName": "n",
                               "ipAddress": "10.0.0.100"})])
        a = Asker("t", "n")
        self.assertEqual(d.lookup(a, "x").v4, ("10.0.0.2",))  # the group, not the containers
        d2 = directory(
            ep("t", "n", "10.0.0.2", group="lb"),
            services=[("t:s", {"tenant": "t", "serviceName": "lb", "networkName": "n",
                               "ipAddress": "10.0.0.100"})])
        self.assertEqual(d2.lookup(a, "lb").v4, ("10.0.0.100",))

    def test_dotted_network_names_split_at_every_dot(self):
        d = directory(ep("t", "net.a", "10.0.0.2", group="g.1"), ep("t", "other", "10.9.0.2"))
        a = Asker("t", "other")
        self.assertEqual(d.lookup(a, "g.1.net.a").v4, ("10.0.0.2",))
        self.assertIs(d.lookup(a, "g.2.net.a"), MISSING)

    def test_domain_suffix(self):
        d = directory(ep("default", "contiv-net", "10.1.1.4", group="db"), domain="contiv.local")
        self.assertEqual(d.lookup(WEB, "db.contiv.local").v4, ("10.1.1.4",))
        self.assertEqual(d.lookup(WEB, "db.contiv-net.contiv.local").v4, ("10.1.1.4",))
        self.assertIs(d.lookup(WEB, "nope.other.contiv.local"), MISSING)
        self.assertEqual(d.lookup(WEB, "contiv.local"), Addresses((), ()))

    def test_bad_records_are_skipped_not_fatal(self):
        d = directory(ep("t", "n", "10.0.0.2", group="g"),
                      ("bad1", "not a dict"), ("bad2", {"tenant": 7}),
                      ("bad3", {"tenant": "t", "networkName": "n", "ipAddress": "nonsense"}),
                      ("bad4", {"tenant": "t", "networkName": "n", "ipAddress": "2001::1"}))
        self.assertEqual(d.lookup(Asker("t", "n"), "g").v4, ("10.0.0.2",))
        self.assertEqual(d.skipped, 4)


class TenantScopingTests(SynchronousTestCase):
    """Two tenants with identical subnets and identical names never see each other."""

    def setUp(self):
        self.d = directory(
            ep("red", "contiv-net", "10.1.1.2", group="web", name="db"),
            ep("blue", "contiv-net", "10.1.1.2", group="web", name="db"),
            ep("blue", "contiv-net", "10.1.1.3", group="web"),
            ep("red", "solo", "10.5.0.2", group="only-red"))

    def test_same_names_resolve_within_each_tenant(self):
        self.assertEqual(self.d.lookup(Asker("red", "contiv-net"), "web").v4, ("10.1.1.2",))
        self.assertEqual(self.d.lookup(Asker("blue", "contiv-net"), "web").v4,
                         ("10.1.1.2", "10.1.1.3"))

    def test_another_tenants_names_are_missing(self):
        blue = Asker("blue", "contiv-net")
        self.assertIs(self.d.lookup(blue, "only-red"), MISSING)
        self.assertIs(self.d.lookup(blue, "only-red.solo"), FOREIGN)  # solo is not blue's
        self.assertIs(self.d.lookup(Asker("green", "x"), "web"), MISSING)

    def test_asker_by_source_is_refused_when_tenants_share_the_address(self):
        self.assertIsNone(self.d.asker("10.1.1.2"))
        self.assertEqual(self.d.asker("10.1.1.2", "red"), Asker("red", "contiv-net", "10.1.1.2"))
        self.assertEqual(self.d.asker("10.1.1.3"), Asker("blue", "contiv-net", "10.1.1.3"))
        self.assertEqual(self.d.asker("::ffff:10.1.1.3"), Asker("blue", "contiv-net", "10.1.1.3"))
        self.assertIsNone(self.d.asker("10.1.1.3", "red"))
        self.assertIsNone(self.d.asker("not an address"))


class ResolverTests(SynchronousTestCase):
    def test_rotation_per_query(self):
        d = directory(*(ep("t", "n", f"10.0.0.{i}", group="g") for i in range(2, 6)))
        r = Resolver(d)
        a = Asker("t", "n")
        firsts = []
        for _ in range(8):
            res = r.resolve(a, "g", wire.A)
            self.assertEqual(len(res.records), 4)
            firsts.append(res.records[0][1])
        # each query starts one further along: every member leads, in turn
        self.assertEqual(len(set(firsts[:4])), 4)
        self.assertEqual(firsts[:4], firsts[4:])

    def test_a_aaaa_any_and_other_types(self):
        d = directory(ep("t", "n", "10.0.0.2", group="g", ip6="2001:db8::2"))
        r, a = Resolver(d), Asker("t", "n")
        self.assertEqual([t for t, _ in r.resolve(a, "g", wire.A).records], [wire.A])
        self.assertEqual([t for t, _ in r.resolve(a, "g", wire.AAAA).records], [wire.AAAA])
        self.assertEqual([t for t, _ in r.resolve(a, "g", wire.ANY).records], [wire.A, wire.AAAA])
        self.assertEqual(r.resolve(a, "g", wire.MX), (wire.NOERROR, ()))  # exists, no data
        self.assertEqual(r.resolve(a, "nope", wire.MX), (wire.NXDOMAIN, ()))
        self.assertIsNone(r.resolve(a, "example.com", wire.A))  # forward
        self.assertIsNone(r.resolve(a, "g", wire.A, qclass=3))  # CHAOS: not ours
