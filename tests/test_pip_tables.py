"""The table declarations catch flows that would mis-program (or not install on) a switch."""

from __future__ import annotations

from twisted.trial import unittest

from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.flow import COOKIE_MARK, OFPP_IN_PORT, Flow, make_match

C = COOKIE_MARK | 1


def flow(table, priority=100, match=None, actions=(), goto=None, cookie=C) -> Flow:
    return Flow(table, priority, make_match(**(match or {})), tuple(actions), goto, cookie)


GOOD = [
    flow(T.CLASSIFY, match={"in_port": 5, "vlan_vid": 0}, actions=[("set_field", "reg0", 1)], goto=T.SOURCE),
    flow(T.CLASSIFY, match={"in_port": 2, "vlan_vid": 0x1064},
         actions=[("pop_vlan",), ("set_field", "reg4", 1)], goto=T.SOURCE),
    flow(T.SOURCE, match={"in_port": 5, "eth_src": "02:00:00:00:00:01", "eth_type": 0x800,
                          "ipv4_src": "10.0.0.1"}, goto=T.ARP),
    flow(T.ARP, match={"eth_type": 0x806, "arp_op": 1, "arp_tpa": "10.0.0.2"},
         actions=[("move", "arp_spa", "arp_tpa", 32), ("set_field", "arp_op", 2), ("output", OFPP_IN_PORT)]),
    flow(T.L3, match={"eth_type": 0x800, "ipv4_dst": "10.0.0.2"}, actions=[("dec_ttl",)], goto=T.L2),
    flow(T.L2, match={"reg1": 3, "eth_dst": ("01:00:00:00:00:00", "01:00:00:00:00:00")},
         actions=[("set_field", "reg5", T.OUT_FLOOD)], goto=T.POLICY),
    flow(T.POLICY, match={"eth_type": 0x800, "reg1": 3}, actions=[("ct", False, 1, T.POLICY_CT)]),
    flow(T.POLICY, 0, goto=T.OUTPUT),
    flow(T.POLICY_CT, match={"ct_state": (T.CT_TRK | T.CT_INV, T.CT_TRK | T.CT_INV)}),
    flow(T.POLICY_IN, match={"eth_type": 0x800, "reg3": 7, "ip_proto": 6, "tcp_dst": 80,
                             "ipv4_src": ("10.0.0.0", "255.255.255.0")}, goto=T.POLICY_COMMIT),
    flow(T.POLICY_COMMIT, match={"eth_type": 0x800, "reg1": 3}, actions=[("ct", True, 1, None)], goto=T.OUTPUT),
    flow(T.OUTPUT, match={"reg5": 2, "reg4": (0, 1)},
         actions=[("push_vlan", 0x8100), ("set_field", "vlan_vid", 0x1064), ("output", 2)]),
]


class CheckFlowTests(unittest.TestCase):

    def test_good_flows_pass(self):
        for f in GOOD:
            T.check_flow(f)
        T.check_flows(GOOD)

    def assertRejected(self, f: Flow, fragment: str):
        with self.assertRaises(T.FlowCheckError) as ctx:
            T.check_flow(f)
        self.assertIn(fragment, str(ctx.exception))

    def test_undeclared_table(self):
        self.assertRejected(flow(7), "not declared")

    def test_field_not_allowed_in_table(self):
        self.assertRejected(flow(T.CLASSIFY, match={"eth_dst": "02:00:00:00:00:01"}, goto=T.SOURCE),
                            "may not match eth_dst")

    def test_unknown_field(self):
        self.assertRejected(flow(T.L2, match={"bogus": 1}), "unknown match field")

    def test_missing_match_prerequisite(self):
        self.assertRejected(flow(T.L3, match={"ipv4_dst": "10.0.0.1"}, goto=T.L2), "prerequisite")
        self.assertRejected(flow(T.ARP, match={"eth_type": 0x800, "arp_tpa": "10.0.0.1"}), "prerequisite")

    def test_set_field_prerequisite(self):
        self.assertRejected(flow(T.ARP, match={"reg1": 1}, actions=[("set_field", "arp_op", 2)]), "prerequisite")
        self.assertRejected(flow(T.ARP, match={"reg1": 1}, actions=[("move", "arp_spa", "arp_tpa", 32)]),
                            "prerequisite")

    def test_dec_ttl_needs_ip(self):
        self.assertRejected(flow(T.L3, match={"reg0": 1}, actions=[("dec_ttl",)], goto=T.L2), "dec_ttl")

    def test_set_not_allowed_in_table(self):
        self.assertRejected(flow(T.L2, match={"reg1": 1}, actions=[("set_field", "reg0", 1)], goto=T.POLICY),
                            "may not set reg0")

    def test_action_not_allowed_in_table(self):
        self.assertRejected(flow(T.L2, match={"reg1": 1}, actions=[("output", 3)]), "may not use action output")

    def test_output_port_restricted(self):
        self.assertRejected(flow(T.ARP, match={"reg1": 1}, actions=[("output", 3)]), "may not output")
        self.assertRejected(flow(T.OUTPUT, match={"reg5": 1}, actions=[("output", 0)]), "bad output port")

    def test_goto_must_be_declared_and_forward(self):
        self.assertRejected(flow(T.L2, match={"reg1": 1}, goto=T.CLASSIFY), "may not go to")
        self.assertRejected(flow(T.CLASSIFY, match={"in_port": 1}, goto=T.OUTPUT), "may not go to")

    def test_masks_only_where_declared(self):
        self.assertRejected(flow(T.L2, match={"reg1": (1, 1)}), "may not mask reg1")

    def test_values_must_fit(self):
        self.assertRejected(flow(T.L2, match={"reg1": 1 << 32}), "32-bit")
        self.assertRejected(flow(T.L2, match={"eth_dst": "02:00:00:00:00"}), "MAC")
        self.assertRejected(flow(T.OUTPUT, match={"reg5": 1}, actions=[("push_vlan", 0x8100),
                                                                    ("set_field", "tun_ipv4_dst", "1.2.3")]),
                            "IPv4")

    def test_vlan_rules(self):
        self.assertRejected(flow(T.OUTPUT, match={"reg5": 1}, actions=[("set_field", "vlan_vid", 0x1064)]),
                            "push_vlan first")
        self.assertRejected(flow(T.OUTPUT, match={"reg5": 1}, actions=[("push_vlan", 0x8100),
                                                                    ("set_field", "vlan_vid", 100)]),
                            "OFPVID_PRESENT")
        self.assertRejected(flow(T.CLASSIFY, match={"in_port": 1}, actions=[("pop_vlan",)], goto=T.SOURCE),
                            "pop_vlan")

    def test_cookie_and_priority(self):
        self.assertRejected(flow(T.L2, cookie=1), "COOKIE_MARK")
        self.assertRejected(flow(T.L2, priority=70000), "priority")

    def test_canonical_match_required(self):
        raw = Flow(T.L2, 1, (("reg1", 1), ("eth_dst", "02:00:00:00:00:01")), cookie=C)  # unsorted
        self.assertRejected(raw, "canonical")
        upper = Flow(T.L2, 1, (("eth_dst", "02:00:00:00:00:0A"),), cookie=C)
        self.assertRejected(upper, "canonical")

    def test_malformed_actions(self):
        self.assertRejected(flow(T.OUTPUT, match={"reg5": 1}, actions=[("output",)]), "malformed")
        self.assertRejected(flow(T.OUTPUT, match={"reg5": 1}, actions=[("teleport", 1)]), "malformed")

    def test_ct_needs_ip_and_declared_table(self):
        self.assertRejected(flow(T.POLICY, match={"reg2": 1}, actions=[("ct", True, 1, None)]), "ct needs")
        self.assertRejected(flow(T.POLICY, match={"eth_type": 0x800}, actions=[("ct", True, 1, T.L2)]),
                            "undeclared")

    def test_identity_clash_between_flows(self):
        a = flow(T.OUTPUT, match={"reg5": 1}, actions=[("output", 1)])
        b = flow(T.OUTPUT, match={"reg5": 1}, actions=[("output", 2)])
        T.check_flows([a, a])
        with self.assertRaises(T.FlowCheckError):
            T.check_flows([a, b])

    def test_every_table_is_forward_only(self):
        for spec in T.TABLES.values():
            self.assertTrue(all(t > spec.id and t in T.TABLES for t in spec.goto), spec.name)
            self.assertLessEqual(spec.maskable, spec.match, spec.name)
