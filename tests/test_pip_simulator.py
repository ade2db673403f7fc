"""The packet-walk simulator follows OpenFlow 1.3 semantics on hand-written flows.

The compiler tests trust the simulator as an oracle, so its rules are pinned
here on flows small enough to reason about.
"""

from __future__ import annotations

from types import MappingProxyType

from twisted.trial import unittest

from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.flow import COOKIE_MARK, OFPP_IN_PORT, Flow, make_match
from contiv_sdn.pipeline.simulator import (AmbiguousMatch, ConnTrack, LoopDetected, SimulationError, trace,
                                           walk)
from contiv_sdn.pipeline.state import Host


def F(table, priority, actions=(), goto=None, **match) -> Flow:
    return Flow(table, priority, make_match(**match), tuple(actions), goto, COOKIE_MARK)


def hosts(n=2, uplink=False):
    out = {}
    for i in range(1, n + 1):
        ports = {"vxlan0": 1, "p1": 11, "p2": 12}
        if uplink:
            ports["eth1"] = 2
        out[f"s{i}"] = Host(f"s{i}", i, f"10.99.0.{i}", MappingProxyType(ports), "vxlan0",
                            "eth1" if uplink else None)
    return out


PKT = dict(eth_src="02:00:00:00:00:01", eth_dst="02:00:00:00:00:02", eth_type=0x800,
           ipv4_src="10.0.0.1", ipv4_dst="10.0.0.2", ip_proto=6, tcp_src=1000, tcp_dst=80)


class SimulatorTests(unittest.TestCase):

    def test_highest_priority_wins_and_masks_apply(self):
        flows = {"s1": [F(0, 10, [("output", 12)]),
                        F(0, 20, [("output", 11)], eth_dst=("02:00:00:00:00:00", "ff:ff:ff:00:00:00")),
                        F(0, 30, [("output", 1)], eth_dst="02:00:00:00:00:99")]}
        self.assertEqual([d.port_name for d in walk(flows, hosts(1), "s1", 1, PKT)], ["p1"])
        other = dict(PKT, eth_dst="04:00:00:00:00:02")
        self.assertEqual([d.port_name for d in walk(flows, hosts(1), "s1", 1, other)], ["p2"])

    def test_same_priority_overlap_is_an_error(self):
        flows = {"s1": [F(0, 10, [("output", 11)], eth_type=0x800), F(0, 10, [("output", 12)], ipv4_src="10.0.0.1",
                                                                         eth_type=0x800)]}
        self.assertRaises(AmbiguousMatch, walk, flows, hosts(1), "s1", 1, PKT)

    def test_miss_drops_and_absent_fields_do_not_match(self):
        flows = {"s1": [F(0, 10, [("output", 11)], eth_type=0x806, arp_op=1)]}
        tr = trace(flows, hosts(1), "s1", 1, PKT)
        self.assertEqual(tr.deliveries, [])
        self.assertEqual([(d.table, d.reason) for d in tr.drops], [(0, "table miss")])

    def test_actions_apply_in_order_and_goto_continues(self):
        flows = {"s1": [F(0, 1, [("output", 11), ("set_field", "eth_dst", "02:00:00:00:00:09"),
                                 ("set_field", "reg3", 7)], goto=5),
                        F(5, 1, [("move", "eth_dst", "eth_src", 48), ("output", 12)], reg3=7)]}
        got = walk(flows, hosts(1), "s1", 1, PKT)
        self.assertEqual([(d.port_name, d.packet["eth_src"], d.packet["eth_dst"]) for d in got],
                         [("p1", PKT["eth_src"], PKT["eth_dst"]),
                          ("p2", "02:00:00:00:00:09", "02:00:00:00:00:09")])
        self.assertNotIn("reg3", got[1].packet)  # metadata never leaves the switch

    def test_backward_goto_is_an_error(self):
        flows = {"s1": [F(0, 1, goto=5), F(5, 1, goto=3)]}
        self.assertRaises(SimulationError, walk, flows, hosts(1), "s1", 1, PKT)

    def test_output_to_ingress_port_needs_in_port(self):
        flows = {"s1": [F(0, 1, [("output", 11)])]}
        self.assertEqual(walk(flows, hosts(1), "s1", "p1", PKT), [])
        flows = {"s1": [F(0, 1, [("output", OFPP_IN_PORT)])]}
        self.assertEqual([d.port_name for d in walk(flows, hosts(1), "s1", "p1", PKT)], ["p1"])

    def test_tunnel_delivers_by_vtep_with_vni_and_fresh_metadata(self):
        flows = {"s1": [F(0, 1, [("set_field", "reg0", 5), ("set_field", "tunnel_id", 77),
                                 ("set_field", "tun_ipv4_dst", "10.99.0.2"), ("output", 1)], in_port=11)],
                 "s2": [F(0, 1, [("output", 12)], in_port=1, tunnel_id=77, tun_ipv4_src="10.99.0.1", reg0=0)]}
        tr = trace(flows, hosts(2), "s1", "p1", PKT)
        self.assertEqual([(d.host, d.port_name) for d in tr.deliveries], [("s2", "p2")])
        self.assertEqual([(t.host, t.receivers, t.packet["tunnel_id"]) for t in tr.transmissions],
                         [("s1", ("s2",), 77)])
        # an unknown VTEP goes nowhere
        flows["s1"] = [F(0, 1, [("set_field", "tun_ipv4_dst", "10.99.0.9"), ("output", 1)])]
        tr = trace(flows, hosts(2), "s1", "p1", PKT)
        self.assertEqual(tr.deliveries, [])
        self.assertIn("no host has VTEP 10.99.0.9", [d.reason for d in tr.drops])

    def test_uplink_is_a_shared_segment_carrying_the_tag(self):
        flows = {"s1": [F(0, 1, [("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1000 | 9), ("output", 2)])]}
        for s in ("s2", "s3"):
            flows[s] = [F(0, 1, [("pop_vlan",), ("output", 11)], in_port=2, vlan_vid=0x1000 | 9)]
        got = walk(flows, hosts(3, uplink=True), "s1", "p1", PKT)
        self.assertEqual([(d.host, d.port_name) for d in got], [("s2", "p1"), ("s3", "p1")])
        self.assertTrue(all("vlan_vid" not in d.packet for d in got))
        # untagged frames do not match a tag, and a tag does not match vlan_vid=0
        self.assertEqual(walk({"s1": [F(0, 1, [("output", 11)], vlan_vid=0x1000 | 9)]}, hosts(1), "s1", 12, PKT), [])
        self.assertEqual(walk({"s1": [F(0, 1, [("output", 11)], vlan_vid=0)]}, hosts(1), "s1", 12,
                              dict(PKT, vlan_vid=0x1000 | 9)), [])

    def test_vlan_misuse_is_an_error(self):
        self.assertRaises(SimulationError, walk, {"s1": [F(0, 1, [("pop_vlan",)])]}, hosts(1), "s1", 11, PKT)
        self.assertRaises(SimulationError, walk, {"s1": [F(0, 1, [("set_field", "vlan_vid", 0x1001)])]},
                          hosts(1), "s1", 11, PKT)

    def test_loops_are_caught(self):
        # output to the ingress port is dropped, so a bounce needs IN_PORT
        there = [F(0, 1, [("set_field", "tun_ipv4_dst", "10.99.0.2"), ("output", 1)], in_port=11),
                 F(0, 1, [("set_field", "tun_ipv4_dst", "10.99.0.2"), ("output", OFPP_IN_PORT)], in_port=1)]
        back = [F(0, 1, [("set_field", "tun_ipv4_dst", "10.99.0.1"), ("output", OFPP_IN_PORT)])]
        self.assertRaises(LoopDetected, walk, {"s1": there, "s2": back}, hosts(2), "s1", "p1", PKT)
        back = [F(0, 1, [("set_field", "tun_ipv4_dst", "10.99.0.1"), ("output", 1)])]
        tr = trace({"s1": there, "s2": back}, hosts(2), "s1", "p1", PKT)
        self.assertEqual((tr.deliveries, len(tr.transmissions)), ([], 1))

    def test_dec_ttl(self):
        flows = {"s1": [F(0, 1, [("dec_ttl",), ("output", 12)], eth_type=0x800)]}
        self.assertEqual(walk(flows, hosts(1), "s1", 11, dict(PKT, ip_ttl=5))[0].packet["ip_ttl"], 4)
        tr = trace(flows, hosts(1), "s1", 11, dict(PKT, ip_ttl=1))
        self.assertEqual((tr.deliveries, [d.reason for d in tr.drops]), ([], ["TTL expired"]))

    def test_conntrack_new_then_established_and_replies(self):
        # table 0: untracked -> ct(table=1); table 1: new tcp/80 from p1 commits, established passes
        flows = {"s1": [
            F(0, 1, [("ct", False, 3, 1)], eth_type=0x800),
            F(1, 20, [("ct", True, 3, None), ("output", 12)], eth_type=0x800, ip_proto=6, tcp_dst=80,
              in_port=11, ct_state=(T.CT_TRK | T.CT_NEW, T.CT_TRK | T.CT_NEW)),
            F(1, 10, [("output", 11)], in_port=12, ct_state=(T.CT_TRK | T.CT_EST, T.CT_TRK | T.CT_EST)),
            F(1, 10, [("output", 12)], in_port=11, ct_state=(T.CT_TRK | T.CT_EST, T.CT_TRK | T.CT_EST)),
        ]}
        ct = ConnTrack()
        reply = dict(PKT, eth_src=PKT["eth_dst"], eth_dst=PKT["eth_src"], ipv4_src=PKT["ipv4_dst"],
                     ipv4_dst=PKT["ipv4_src"], tcp_src=80, tcp_dst=1000)
        # a reply before any request is new and not allowed from p2
        self.assertEqual(walk(flows, hosts(1), "s1", "p2", reply, conntrack=ct), [])
        self.assertEqual([d.port_name for d in walk(flows, hosts(1), "s1", "p1", PKT, conntrack=ct)], ["p2"])
        self.assertEqual([d.port_name for d in walk(flows, hosts(1), "s1", "p2", reply, conntrack=ct)], ["p1"])
        # a new connection to another port is not allowed
        self.assertEqual(walk(flows, hosts(1), "s1", "p1", dict(PKT, tcp_dst=81), conntrack=ct), [])
        # ... unless the test marks it established
        ct.establish("s1", 3, dict(PKT, tcp_dst=81))
        self.assertEqual(len(walk(flows, hosts(1), "s1", "p1", dict(PKT, tcp_dst=81), conntrack=ct)), 1)
        # zones are separate
        self.assertEqual(ConnTrack().lookup("s1", 3, dict(PKT)), T.CT_TRK | T.CT_NEW)
        self.assertEqual(ct.lookup("s1", 4, dict(PKT)), T.CT_TRK | T.CT_NEW)
        self.assertEqual(ct.lookup("s1", 3, dict(reply)), T.CT_TRK | T.CT_EST | T.CT_RPL)

    def test_ct_fork_leaves_the_original_untracked(self):
        flows = {"s1": [F(0, 1, [("ct", False, 0, 2), ("output", 11)], eth_type=0x800),
                        F(2, 1, [("output", 12)], ct_state=(T.CT_TRK, T.CT_TRK)),
                        F(2, 0, [("output", 11)])]}
        got = walk(flows, hosts(1), "s1", 1, PKT)
        self.assertEqual(sorted(d.port_name for d in got), ["p1", "p2"])
