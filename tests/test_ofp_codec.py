"""The flow_mod codec: templates give os-ken's exact bytes; decoding gives back the canonical Flow."""

from __future__ import annotations

import random

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from contiv_sdn.openflow import codec
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK, OFPP_CONTROLLER, Flow, make_match
from contiv_sdn.testing import require_binary, require_root


def _mac(r: random.Random) -> str:
    return ":".join(f"{r.randrange(256):02x}" for _ in range(6))


def _ip(r: random.Random) -> str:
    return ".".join(str(r.randrange(256)) for _ in range(4))


def random_flow(r: random.Random) -> Flow:
    """A flow drawn from the whole vocabulary of pipeline/flow.py (valid for OVS too)."""
    fields: dict = {}
    kind = r.choice(["ip", "arp", "l2", "reg", "tun"])
    if kind == "ip":
        fields["eth_type"] = 0x800
        if r.random() < 0.7:
            fields["ipv4_dst"] = _ip(r) if r.random() < 0.5 else (_ip(r), r.choice(
                ["255.255.255.0", "255.255.0.0", "255.255.255.252"]))
        if r.random() < 0.5:
            fields["ipv4_src"] = _ip(r)
        if r.random() < 0.4:
            fields["ct_state"] = r.choice([(0x21, 0x21), (0x22, 0x22), (0x20, 0x20)])
        if r.random() < 0.3:
            fields["ip_proto"] = r.choice([6, 17])
    elif kind == "arp":
        fields["eth_type"] = 0x806
        fields["arp_tpa"] = _ip(r)
        if r.random() < 0.5:
            fields["arp_op"] = r.choice([1, 2])
    elif kind == "l2":
        fields["eth_dst"] = _mac(r)
        if r.random() < 0.5:
            fields["eth_src"] = (_mac(r), "ff:ff:ff:00:00:00")
    elif kind == "reg":
        fields[f"reg{r.randrange(8)}"] = r.randrange(1 << 32)
        fields["metadata"] = (r.randrange(1 << 64), r.choice([0xFFFF0000, 0xFFFF, 0xFF00000000000000]))
    else:
        fields["tunnel_id"] = r.randrange(1 << 24)
    if r.random() < 0.6:
        fields["in_port"] = r.randrange(1, 1 << 16)
    acts = []
    for _ in range(r.randrange(0, 5)):
        a = r.choice(["output", "set_field_mac", "set_field_reg", "set_field_tun", "move",
                      "controller", "group", "push_pop"])
        if a == "output":
            acts.append(("output", r.choice([r.randrange(1, 1000), 0xFFFFFFF8, 0xFFFFFFFB])))
        elif a == "set_field_mac":
            acts.append(("set_field", r.choice(["eth_src", "eth_dst"]), _mac(r)))
        elif a == "set_field_reg":
            acts.append(("set_field", f"reg{r.randrange(8)}", r.randrange(1 << 32)))
        elif a == "set_field_tun":
            acts.append(("set_field", "tun_ipv4_dst", _ip(r)))
            acts.append(("set_field", "tunnel_id", r.randrange(1 << 24)))
        elif a == "move":
            acts.append(("move", f"reg{r.randrange(8)}", f"reg{r.randrange(8)}", r.randrange(1, 33)))
        elif a == "controller":
            acts.append(("controller", r.randrange(0, 0xFFE6)))
        elif a == "group":
            acts.append(("group", r.randrange(1 << 20)))
        else:
            acts.append(("push_vlan", 0x8100))
            acts.append(("set_field", "vlan_vid", 0x1000 | r.randrange(4096)))
    if fields.get("eth_type") == 0x800 and r.random() < 0.5:
        acts.append(("ct", r.random() < 0.5, r.randrange(1 << 16), r.choice([None, r.randrange(1, 200)])))
        if r.random() < 0.5:
            acts.append(("dec_ttl",))
    table = r.randrange(0, 250)
    goto = r.choice([None, table + 1 + r.randrange(3)]) if table < 250 else None
    return Flow(table=table, priority=r.randrange(1 << 16), match=make_match(**fields),
                actions=tuple(acts), goto=goto,
                cookie=COOKIE_MARK | r.randrange(1 << 48))


class TemplateBytesTests(unittest.TestCase):
    def test_templates_equal_osken_bytes(self):
        r = random.Random(1234)
        enc = codec.FlowModEncoder()
        flows = [random_flow(r) for _ in range(250)]
        n = 0
        for cmd in (codec.ADD, codec.MODIFY_STRICT, codec.DELETE_STRICT):
            for i, f in enumerate(flows):
                xid = r.randrange(1 << 32)
                got = enc.encode(f, cmd, xid)
                want = codec.encode_flow_mod_osken(f, cmd, xid)
                self.assertEqual(got, want, f"command {cmd}, flow {f}")
                n += 1
        self.assertEqual(enc.stats["untemplatable"], 0)
        self.assertEqual(enc.stats["template"] + enc.stats["assembled"], n)
        # most shapes repeat: the point of templates
        self.assertLess(enc.shape_count(), n)

    def test_recent_encodings_reuse_a_flow_s_bytes_with_each_xid(self):
        """The same flow object sent again (another switch, another command) gives
        exactly the bytes encoding it afresh gives; an equal but distinct object and
        a flow pushed out of the bound are encoded again, never mixed up."""
        r = random.Random(5)
        recent = codec.RecentEncodings(size=8)
        flows = [random_flow(r) for _ in range(20)]
        for f in flows[:4]:
            for cmd in (codec.ADD, codec.MODIFY_STRICT, codec.DELETE_STRICT):
                for xid in (1, 0xFFFFFFFF, r.randrange(1 << 32)):
                    self.assertEqual(recent.encode(f, cmd, xid), codec.encode_flow_mod_osken(f, cmd, xid))
        self.assertEqual(recent.hits, 4 * 3 * 2)
        twin = Flow(table=flows[0].table, priority=flows[0].priority, match=flows[0].match,
                    actions=flows[0].actions, goto=flows[0].goto, cookie=flows[0].cookie + 1)
        self.assertEqual(recent.encode(twin, codec.ADD, 3), codec.encode_flow_mod_osken(twin, codec.ADD, 3))
        for f in flows:  # more than the bound: the oldest go, and every answer stays right
            self.assertEqual(recent.encode(f, codec.ADD, 77), codec.encode_flow_mod_osken(f, codec.ADD, 77))
        self.assertLessEqual(len(recent._recent), 8)

    def test_same_shape_many_values(self):
        enc = codec.FlowModEncoder()
        for i in range(300):
            f = Flow(table=3, priority=100, match=make_match(
                eth_type=0x800, ipv4_dst=f"10.{i % 7}.{i // 256}.{i % 256}", reg0=i * 7919),
                actions=(("set_field", "eth_dst", f"02:00:00:00:{i // 256:02x}:{i % 256:02x}"),
                         ("output", i + 1)))
            self.assertEqual(enc.encode(f, codec.ADD, i), codec.encode_flow_mod_osken(f, codec.ADD, i))
        self.assertEqual(enc.shape_count(), 1)

    def test_long_action_lists_equal_osken_bytes(self):
        """Long action lists (flood lists) are assembled from a frame and per-action bytes:
        byte for byte what os-ken encodes, whatever the actions, match and goto."""
        r = random.Random(99)
        enc = codec.FlowModEncoder()
        n = 0
        for _ in range(60):
            base = random_flow(r)
            acts = []
            while len(acts) <= codec.FlowModEncoder.LONG:
                acts += random_flow(r).actions
            if base.match and dict(base.match).get("eth_type") != 0x800:
                acts = [a for a in acts if a[0] not in ("ct", "dec_ttl")] + [("output", 1)] * 9
            f = Flow(table=base.table, priority=base.priority, match=base.match, actions=tuple(acts),
                     goto=base.goto, cookie=base.cookie)
            for cmd in (codec.ADD, codec.MODIFY_STRICT):
                xid = r.randrange(1 << 32)
                self.assertEqual(enc.encode(f, cmd, xid), codec.encode_flow_mod_osken(f, cmd, xid), f"{f}")
                n += 1
        self.assertEqual(enc.stats["untemplatable"], 0)
        self.assertEqual(enc.stats["assembled"], n)

    def test_flood_list_lengths_cost_one_osken_encoding_each(self):
        """A flood list naming hundreds of VTEPs is not learned as a whole shape (a few
        os-ken encodings per value: seconds at 250 VTEPs, and each new length a new
        shape): each new length costs one os-ken encoding (the check), after the parts
        are learned once."""
        enc = codec.FlowModEncoder()
        calls = [0]
        real = codec._encode_ref

        def counting(key, values):
            calls[0] += 1
            return real(key, values)
        self.patch(codec, "_encode_ref", counting)

        def flood(n: int) -> Flow:
            acts = [("output", 3), ("output", 4), ("set_field", "tunnel_id", 77)]
            for i in range(n):
                acts += [("set_field", "tun_ipv4_dst", f"10.9.{i // 250}.{i % 250 + 1}"), ("output", 1)]
            return Flow(table=9, priority=100, match=make_match(reg6=5, reg7=1), actions=tuple(acts),
                        cookie=COOKIE_MARK | 5)
        enc.encode(flood(10), codec.ADD, 1)
        learned = calls[0]
        for n in (100, 299, 300):
            calls[0] = 0
            f = flood(n)
            self.assertEqual(enc.encode(f, codec.ADD, n), codec.encode_flow_mod_osken(f, codec.ADD, n))
            self.assertEqual(calls[0], 1)  # the check (the reference above is os-ken directly)
        self.assertLess(learned, 60)
        calls[0] = 0
        enc.encode(flood(300), codec.ADD, 1)
        self.assertEqual(calls[0], 0)

    def test_encoding_without_templates_is_osken(self):
        enc = codec.FlowModEncoder(templates=False)
        f = random_flow(random.Random(5))
        self.assertEqual(enc.encode(f, codec.ADD, 9), codec.encode_flow_mod_osken(f, codec.ADD, 9))
        self.assertEqual(enc.stats["osken"], 1)

    def test_delete_is_limited_to_our_cookie_mark(self):
        f = Flow(table=1, priority=5, match=make_match(reg1=3), actions=(("output", 2),),
                 cookie=COOKIE_MARK | 0x77)
        msg = codec.parse_message(codec.encode_flow_mod(f, codec.DELETE_STRICT, 1))
        self.assertEqual((msg.cookie, msg.cookie_mask), (COOKIE_MARK, COOKIE_MASK))
        self.assertEqual(msg.instructions, [])

    def test_output_to_controller_must_say_controller(self):
        f = Flow(table=0, priority=1, actions=(("output", OFPP_CONTROLLER),))
        self.assertRaises(ValueError, codec.encode_flow_mod, f, codec.ADD, 1)

    def test_unknown_command_refused(self):
        self.assertRaises(ValueError, codec.encode_flow_mod, Flow(table=0, priority=1),
                          ofp.OFPFC_DELETE, 1)

    def test_bundle_add_equals_osken(self):
        f = random_flow(random.Random(7))
        inner = codec.encode_flow_mod(f, codec.ADD, 4242)
        ref = parser.ONFBundleAddMsg(codec.DP, 17, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED,
                                     parser.OFPFlowMod(codec.DP), [])
        # os-ken re-serializes the inner message: give it the parsed one
        ref.message = codec.parse_message(inner)
        ref.set_xid(4242)
        ref.serialize()
        self.assertEqual(codec.encode_bundle_add(inner, 17, ofp.ONF_BF_ATOMIC | ofp.ONF_BF_ORDERED),
                         bytes(ref.buf))

    def test_bundle_control_equals_osken(self):
        for bundle_id, type_, flags, xid in ((1, ofp.ONF_BCT_OPEN_REQUEST, 3, 7),
                                             (0xFFFFFFFF, ofp.ONF_BCT_COMMIT_REQUEST, 1, 0xFFFFFFFE),
                                             (5, ofp.ONF_BCT_DISCARD_REQUEST, 0, 1)):
            ref = parser.ONFBundleCtrlMsg(codec.DP, bundle_id, type_, flags, [])
            self.assertEqual(codec.encode_bundle_ctrl(bundle_id, type_, flags, xid),
                             codec.serialize(ref, xid))

    def test_barrier_equals_osken(self):
        for xid in (1, 99, 0xFFFFFFFF):
            self.assertEqual(codec.encode_barrier(xid),
                             codec.serialize(parser.OFPBarrierRequest(codec.DP), xid))


class DecodeTests(unittest.TestCase):
    def test_decode_inverts_encode(self):
        """flow -> os-ken bytes -> os-ken parse -> flow_from_stats gives the same flow back."""
        r = random.Random(99)
        for _ in range(300):
            f = random_flow(r)
            msg = codec.parse_message(codec.encode_flow_mod(f, codec.ADD, 1))
            self.assertEqual(codec.flow_from_stats(msg), f)

    def test_read_back_flows_equal_to_the_known_ones_are_those_objects(self):
        """A read's flows are decoded through a cache shared by every switch; with
        ``known`` (the belief), a decoded flow equal to the believed one is answered,
        and cached, as that very object, and one that differs stays what was read."""
        import struct
        from contiv_sdn.testing.simswitch import _FLOW_STATS

        def entry(f: Flow) -> bytes:
            fm = codec.encode_flow_mod(f, codec.ADD, 1)  # match and instructions follow 48 bytes
            return _FLOW_STATS.pack(len(fm), f.table, 0, 0, f.priority, 0, 0, 0, f.cookie, 0, 0) + fm[48:]

        r = random.Random(11)
        flows = [random_flow(r) for _ in range(40)]
        flows = list({f.identity: f for f in flows}.values())
        reply = struct.pack("!BBHIHH4x", 4, ofp.OFPT_MULTIPART_REPLY, 0, 1, ofp.OFPMP_FLOW, 0) \
            + b"".join(entry(f) for f in flows)
        known = {f.identity: f for f in flows}
        other = Flow(table=flows[0].table, priority=flows[0].priority, match=flows[0].match,
                     actions=(("output", 4242),), cookie=flows[0].cookie)
        known[flows[0].identity] = other  # believed, but not what the switch holds
        for decoded_before in (False, True):  # decoded now, or found in the cache
            codec._DECODED.clear()
            if decoded_before:
                plain = list(codec.flows_from_raw([reply]))
                self.assertEqual(plain, flows)
                self.assertFalse(any(a is b for a, b in zip(plain, flows)))
            got = list(codec.flows_from_raw([reply], known))
            self.assertIsNot(got[0], other)
            self.assertEqual(got[0], flows[0])
            for g, f in zip(got[1:], flows[1:]):
                self.assertIs(g, f)
            again = list(codec.flows_from_raw([reply]))  # from the cache: the known objects
            self.assertIs(again[1], flows[1])

    def test_foreign_action_decodes_to_raw(self):
        msg = parser.OFPFlowMod(codec.DP, table_id=0, priority=1, match=parser.OFPMatch(),
                                instructions=[parser.OFPInstructionActions(
                                    ofp.OFPIT_APPLY_ACTIONS, [parser.NXActionResubmitTable(in_port=5, table_id=3)]),
                                    parser.OFPInstructionWriteMetadata(1, 1)])
        msg.serialize()
        f = codec.flow_from_stats(codec.parse_message(bytes(msg.buf)))
        self.assertEqual([a[0] for a in f.actions], ["raw", "raw"])
        self.assertNotEqual(f, Flow(table=0, priority=1, cookie=0))


class PacketInTests(unittest.TestCase):
    def test_packet_in_matches_osken_parse(self):
        import struct
        r = random.Random(8)
        for i in range(50):
            fields = {"in_port": r.randrange(1, 1 << 16)}
            if i % 2:
                fields.update(reg0=r.randrange(1 << 32), tunnel_id=r.randrange(1 << 24),
                              tun_ipv4_src=_ip(r), metadata=r.randrange(1 << 64))
            m = parser.OFPMatch(**fields)
            mbuf = bytearray()
            m.serialize(mbuf, 0)
            frame = r.randbytes(r.randrange(14, 200))
            total = len(frame) if i % 3 else len(frame) + 40  # total_len > data: truncated packet
            body = struct.pack("!IHBBQ", 0xFFFFFFFF, total, i % 3, i % 250, r.randrange(1 << 64))
            body += bytes(mbuf) + b"\0\0" + frame
            data = struct.pack("!BBHI", 4, ofp.OFPT_PACKET_IN, 8 + len(body), i) + body
            ref = codec.parse_message(data)
            got = codec.parse_packet_in(data)
            for attr in ("buffer_id", "total_len", "reason", "table_id", "cookie", "data"):
                self.assertEqual(getattr(got, attr), getattr(ref, attr), attr)
            self.assertEqual(got.xid, i)
            self.assertEqual(got.match, dict(ref.match.items()))
            self.assertEqual(got.match["in_port"], fields["in_port"])


class RealSwitchRoundTripTests(unittest.TestCase):
    """Flows added through our encoder and read back from a real OVS compare equal."""

    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("ofp")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    async def _roundtrip(self):
        sw = await self.lab.add_switch("rt")
        r = random.Random(2024)
        flows = {}
        while len(flows) < 250:
            f = random_flow(r)
            # OVS checks group existence and port ranges; keep what it accepts everywhere
            acts = tuple(a for a in f.actions if a[0] != "group")
            f = Flow(f.table, f.priority, f.match, acts, f.goto, f.cookie)
            flows[f.identity] = f
        b = sw.bundle()
        for f in flows.values():
            b.add_flow_mod(f, codec.ADD)
        await b.commit()
        back = await sw.read_flows(COOKIE_MARK, COOKIE_MASK)
        self.assertEqual(len(back), len(flows))
        self.assertEqual(set(back), set(flows.values()))

    def test_roundtrip_through_ovs(self):
        return Deferred.fromCoroutine(self._roundtrip())
