"""End to end on the lab, forwarding mode ``routing``, two hosts.

The forwarding mode can only change while no network exists, so this class has
its own lab and sets ``routing`` with ``netctl global set`` right after ``up``.
"""

from __future__ import annotations

from contiv_sdn.lab import Lab
from tests.test_e2e_fixtures import (E2ETestCase, UnderlayWatch, assert_no_pings, tcp_exchange,
                                     wait_ping)

IPV4 = 0x0800


class RoutingModeTests(E2ETestCase):
    lab_letter = "b"
    lab_hosts = 2
    lab_subnet = "192.168.62.0/24"

    def prepare_lab(self, lab: Lab) -> None:
        self.lab = lab
        self.netctl("global", "set", "--fwd-mode", "routing")

    def test_forwarding_mode_is_routing(self) -> None:
        out = self.netctl("global", "info").stdout
        self.assertRegex(out, r"Forward mode:\s*routing")

    def test_networks_of_a_tenant_are_routed_across_hosts(self) -> None:
        ra = self.network("ra", "10.62.1.0/24", encap="vxlan", tag=6201)
        rb = self.network("rb", "10.62.2.0/24", encap="vxlan", tag=6202)
        rv = self.network("rv", "10.62.3.0/24", encap="vlan", tag=230)
        a1 = self.container(1, "ra1", ra)
        a2 = self.container(2, "ra2", ra)
        b2 = self.container(2, "rb2", rb)
        v1 = self.container(1, "rv1", rv)
        v2 = self.container(2, "rv2", rv)
        with UnderlayWatch(self.lab) as watch:
            for src, dst in ((a1, a2), (a2, a1),            # same network, across hosts
                             (a1, b2), (b2, a1),            # vxlan to vxlan, across hosts
                             (v1, b2), (b2, v1),            # vlan to vxlan, across hosts
                             (v1, v2), (v2, v1),            # vlan, same network
                             (a2, v2), (v2, a2)):           # routed on one host
                wait_ping(src, dst)
        self.assertGreater(watch.count("vxlan", ethertype=IPV4), 0)
        self.assertGreater(watch.count("vlan", 230, IPV4), 0)
        # TCP across networks and hosts, both directions
        self.assertEqual(tcp_exchange(b2, a1, port=5101, request="a1", reply="b2"), ("a1", "b2"))
        self.assertEqual(tcp_exchange(a1, v2, port=5102, request="v2", reply="a1"), ("v2", "a1"))

    def test_tenants_with_identical_subnets_stay_apart_when_routed(self) -> None:
        green = self.tenant("e2egreen")
        dx = self.network("tx", "10.62.4.0/24", encap="vxlan")
        dy = self.network("ty", "10.62.5.0/24", encap="vxlan")
        gx = self.network("tx", "10.62.4.0/24", encap="vxlan", tenant=green)
        gy = self.network("ty", "10.62.5.0/24", encap="vxlan", tenant=green)
        d1 = self.container(1, "dx1", dx, ip="10.62.4.1")
        d2 = self.container(2, "dy2", dy, ip="10.62.5.2")
        d3 = self.container(2, "dy3", dy, ip="10.62.5.3")
        g1 = self.container(1, "gx1", gx, tenant=green, ip="10.62.4.1")
        g2 = self.container(2, "gy2", gy, tenant=green, ip="10.62.5.2")
        g4 = self.container(2, "gy4", gy, tenant=green, ip="10.62.5.4")
        wait_ping(d1, d2)  # routed within each tenant
        wait_ping(g1, g2)
        wait_ping(g1, g4)
        wait_ping(d1, d3)
        # the same routed address answers from the caller's own tenant
        self.assertEqual(tcp_exchange(d2, d1, "10.62.5.2", 5103, "from-default", "default"),
                         ("from-default", "default"))
        self.assertEqual(tcp_exchange(g2, g1, "10.62.5.2", 5104, "from-green", "green"),
                         ("from-green", "green"))
        # addresses only the other tenant has are not routed to
        assert_no_pings([(d1, g4.ip), (d2, g4.ip), (g1, d3.ip), (g2, d3.ip)])
