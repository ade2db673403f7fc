"""Groups and conntrack NAT in the codec: encode (os-ken is the reference), decode back
into the canonical form, and a real OVS that takes them and gives them back unchanged."""

from __future__ import annotations

import ipaddress
import struct
from types import SimpleNamespace

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.internet.defer import Deferred
from twisted.trial import unittest

from contiv_sdn.openflow import codec
from contiv_sdn.pipeline import servicelb as S
from contiv_sdn.pipeline import tables as T
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK, Flow, make_match
from contiv_sdn.testing import require_binary, require_root
from contiv_sdn.testing.wait import wait_for


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _tcp_syn(src: str, dst: str, sport: int, dport: int) -> str:
    """An Ethernet/IPv4/TCP SYN with correct checksums, as ovs-ofctl packet-out's hex."""
    import socket
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 64240, 0, 0)
    tcp = tcp[:16] + struct.pack("!H", _csum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
    eth = bytes.fromhex("000011111112" "020000000032" "0800")
    return (eth + ip + tcp).hex()


def _sp(n_providers: int = 2, vrf: int = 5, vip: str = "10.1.1.100") -> S.ServicePort:
    provs = tuple(S.Provider(f"10.1.1.{i + 2}", f"02:00:00:00:00:{i + 2:02x}", 1, f"h{i % 2}", f"p{i}")
                  for i in range(n_providers))
    return S.ServicePort("t:web", "t", vrf, (1, 2), 1, vip, 6, 80, 8080, provs)


NAT_ACTIONS = [
    ("ct_nat", False, 7, T.SVC_CT, None, 0),
    ("ct_nat", True, 7, T.SVC_DST, ("dst", "10.1.1.2", 8080), S.SVC_MARK | 42),
    ("ct_nat", True, 0xFFFF, T.SVC_DST, ("src", "10.1.1.100", 0), 0),
    ("ct_nat", True, 3, None, ("dst", "192.168.0.9", 0), 0),
]


def _group_mod_buckets(data: bytes) -> list:
    """The buckets of an encoded group_mod, parsed by os-ken (it has no group_mod parser)."""
    _cmd, _type, gid = struct.unpack_from("!HBxI", data, 8)
    buckets, pos = [], 16
    while pos < len(data):
        b = parser.OFPBucket.parser(data, pos)
        buckets.append(b)
        pos += b.len
    return gid, buckets


class CtNatCodecTests(unittest.TestCase):
    def test_ct_nat_flows_decode_to_what_was_encoded(self):
        """Every ct_nat form (un-NAT, DNAT with port and mark, SNAT, no recirculation)
        goes through os-ken's bytes and back to the same Flow."""
        for i, a in enumerate(NAT_ACTIONS):
            f = Flow(T.SVC_VRF, 100 + i, make_match(eth_type=0x0800, reg0=7), (a,), cookie=COOKIE_MARK | i)
            back = codec.flow_from_stats(codec.parse_message(codec.encode_flow_mod(f, codec.ADD, 9)))
            self.assertEqual(back, f)

    def test_template_path_equals_osken(self):
        for a in NAT_ACTIONS:
            f = Flow(T.SVC_VRF, 100, make_match(eth_type=0x0800, reg0=7), (a,), cookie=COOKIE_MARK)
            self.assertEqual(codec.encode_flow_mod(f, codec.ADD, 3), codec.encode_flow_mod_osken(f, codec.ADD, 3))

    def test_non_canonical_ct_nat_refused(self):
        for bad in [("ct_nat", False, 7, 27, ("dst", "10.0.0.1", 80), 0),  # NAT range without commit
                    ("ct_nat", False, 7, 27, None, 5),  # mark without commit
                    ("ct_nat", True, 7, 27, ("any", "10.0.0.1", 0), 0),
                    ("ct_nat", True, 70000, 27, None, 0),
                    ("ct_nat", True, 7, 27, ("dst", "10.0.0.300", 0), 0)]:
            f = Flow(T.SVC_VRF, 1, make_match(eth_type=0x0800), (bad,), cookie=COOKIE_MARK)
            with self.assertRaises((ValueError, OSError)):
                codec.encode_flow_mod(f, codec.ADD, 1)

    def test_foreign_ct_with_nat_and_other_actions_is_raw(self):
        a = parser.NXActionCT(flags=1, zone_src="", zone_ofs_nbits=3, recirc_table=255, alg=0,
                              actions=[parser.NXActionNAT(flags=codec.NX_NAT_F_DST, range_ipv4_min="10.0.0.1",
                                                          range_ipv4_max="10.0.0.9")])
        self.assertEqual(codec._action_tuple(a)[0], "raw")


class LearnCodecTests(unittest.TestCase):
    """learn and resubmit (ClientIP affinity): os-ken's bytes and back, refusals."""

    def test_learn_and_resubmit_decode_to_what_was_encoded(self):
        sp = S.ServicePort(**{**_sp(3).__dict__, "affinity": 7})
        learn = S.affinity_learn(sp)
        immediate = learn[:5] + (learn[5][:-1] + (("load", T.REG_AFF, 0x0A010102),),)
        for acts in [(learn,), (("resubmit", T.SVC_AFF), ("resubmit", T.SVC_AFF_SEL)),
                     (immediate, NAT_ACTIONS[1])]:
            f = Flow(T.SVC_CT, 100, make_match(eth_type=0x0800, reg0=7), acts, cookie=COOKIE_MARK)
            data = codec.encode_flow_mod(f, codec.ADD, 9)
            self.assertEqual(data, codec.encode_flow_mod_osken(f, codec.ADD, 9))
            self.assertEqual(codec.flow_from_stats(codec.parse_message(data)), f)
        self.assertIn("idle_timeout=7", Flow(0, 0, (), (learn,)).to_ofctl())

    def test_affinity_group_roundtrips(self):
        sp = S.ServicePort(**{**_sp(3).__dict__, "affinity": 60})
        (g,) = S.host_services([sp], "h0", {})[1]
        gid, buckets = _group_mod_buckets(codec.encode_group_mod(g, codec.GROUP_ADD, 1))
        back = codec.group_from_desc(SimpleNamespace(type=ofp.OFPGT_SELECT, group_id=gid, buckets=buckets))
        self.assertEqual(back, g)
        self.assertTrue(S.is_ours(back))

    def test_non_canonical_learn_refused(self):
        good = S.affinity_learn(S.ServicePort(**{**_sp(1).__dict__, "affinity": 5}))
        for bad in [good[:5], good[:2] + (70000,) + good[3:],
                    good[:5] + ((("match", "ipv6_src", "ipv6_src"),),),
                    good[:5] + ((("load", "reg8", "ip_proto"),),),
                    good[:5] + ((("match", "ip_proto", 300),),),
                    ("resubmit", 300)]:
            f = Flow(T.SVC_CT, 1, make_match(eth_type=0x0800), (bad,), cookie=COOKIE_MARK)
            with self.assertRaises(ValueError):
                codec.encode_flow_mod(f, codec.ADD, 1)


class GroupCodecTests(unittest.TestCase):
    def test_group_mod_buckets_decode_to_the_group(self):
        """A service group's group_mod carries one weight-1 bucket per provider whose
        actions decode back to the bucket tuples."""
        _flows, groups = S.host_services([_sp(5)], "h0", {})
        (g,) = groups
        for cmd in (codec.GROUP_ADD, codec.GROUP_MODIFY):
            data = codec.encode_group_mod(g, cmd, 11)
            self.assertEqual(data[1], ofp.OFPT_GROUP_MOD)
            self.assertEqual(struct.unpack_from("!H", data, 8)[0], cmd)
            gid, buckets = _group_mod_buckets(data)
            entry = SimpleNamespace(type=ofp.OFPGT_SELECT, group_id=gid, buckets=buckets)
            self.assertEqual(codec.group_from_desc(entry), g)
            self.assertEqual(len(buckets), 5)

    def test_delete_carries_no_buckets(self):
        g = S.host_services([_sp(3)], "h0", {})[1][0]
        gid, buckets = _group_mod_buckets(codec.encode_group_mod(g, codec.GROUP_DELETE, 1))
        self.assertEqual((gid, buckets), (g.group_id, []))

    def test_foreign_group_never_equals_ours(self):
        g = S.host_services([_sp(2)], "h0", {})[1][0]
        entry = SimpleNamespace(type=ofp.OFPGT_ALL, group_id=g.group_id, buckets=[])
        self.assertNotEqual(codec.group_from_desc(entry), g)
        b = parser.OFPBucket(weight=3, actions=[parser.OFPActionOutput(1)])
        entry = SimpleNamespace(type=ofp.OFPGT_SELECT, group_id=1, buckets=[b])
        self.assertIn(("raw", "weight=3 watch=4294967295/4294967295"), codec.group_from_desc(entry).buckets[0])


class RealSwitchGroupTests(unittest.TestCase):
    """A real OVS takes our group_mods and ct_nat flows and gives them back unchanged;
    MODIFY replaces the buckets in place."""

    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("ofg")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    async def _send(self, sw, items) -> None:
        """Group mods one by one, each confirmed (OVS 3.1 refuses group_mod inside an
        OpenFlow 1.3 ONF bundle: ONFERR_ET_MSG_UNSUP), then the flows in one bundle."""
        b = None
        for kind, obj, cmd in items:
            xid = sw.next_xid()
            if kind == "g":
                await sw.send_checked(codec.encode_group_mod(obj, cmd, xid))
                continue
            b = b or sw.bundle()
            b.add(codec.encode_flow_mod(obj, cmd, xid), obj)
        if b is not None:
            await b.commit()

    async def _groups(self, sw):
        return {g.group_id: g for g in codec.groups_from_desc(await sw.group_desc())}

    async def _roundtrip(self):
        sw = await self.lab.add_switch("g")
        port = await self.lab.add_internal_port(self.lab.bridges[0], "hp")
        ofport = int((await self.lab.vsctl("get", "interface", port, "ofport")).strip())
        sps = [_sp(2), S.ServicePort("u:db", "u", 9, (3,), 3, "10.2.0.5", 17, 53, 5353,
                                     (S.Provider("10.2.0.7", "02:00:00:00:01:07", 3, "h0", port),),
                                     affinity=30)]
        flows, groups = S.host_services(sps, "h0", {port: ofport})
        self.assertTrue(any(a[0] == "ct_nat" for f in flows for a in f.actions))
        self.assertTrue(any(a[0] == "resubmit" for f in flows for a in f.actions))
        self.assertTrue(any(a[0] == "learn" for f in flows for a in f.actions))
        self.assertTrue(any(a[0] == "resubmit" for g in groups for b in g.buckets for a in b))
        await self._send(sw, [("g", g, codec.GROUP_ADD) for g in groups]
                         + [("f", f, codec.ADD) for f in flows])
        self.maxDiff = None
        self.assertEqual(await self._groups(sw), {g.group_id: g for g in groups})
        back = await sw.read_flows(COOKIE_MARK, COOKIE_MASK)
        self.assertEqual(set(back), set(flows))
        # a provider leaves: MODIFY edits the group, the flows pointing at it stay
        smaller = S.host_services([_sp(1)] + sps[1:], "h0", {port: ofport})[1]
        await self._send(sw, [("g", g, codec.GROUP_MODIFY) for g in smaller])
        have = await self._groups(sw)
        self.assertEqual(have, {g.group_id: g for g in smaller})
        self.assertEqual(len(have[smaller[0].group_id].buckets), 1)
        self.assertEqual(len(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), len(flows))

    def test_groups_and_nat_flows_roundtrip_through_ovs(self):
        return Deferred.fromCoroutine(self._roundtrip())


class RealSwitchAffinityTests(unittest.TestCase):
    """ClientIP affinity on a real OVS: a client's first connection makes the group's
    bucket learn its pin (a flow in SVC_AFF with idle_timeout = timeoutSeconds and a
    cookie outside our mark); the flow sync neither counts nor deletes it; the next
    connection of the client follows it; idle that long, it is gone."""

    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("ofa")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    async def _dump(self, br: str, table: int) -> list:
        out = await self.lab.ofctl("dump-flows", br, f"table={table}")
        return [line.strip() for line in out.splitlines() if "table=" in line]

    async def _go(self):
        from contiv_sdn.openflow.sync import FlowSync
        sw = await self.lab.add_switch("a")
        br = self.lab.bridges[0]
        port = await self.lab.add_internal_port(br, "c")
        ofport = int((await self.lab.vsctl("get", "interface", port, "ofport")).strip())
        sp = S.ServicePort(**{**_sp(3).__dict__, "affinity": 2})
        flows, groups = S.host_services([sp], "h0", {})
        sync = FlowSync(sw)
        await sync.converge(frozenset(flows), groups=lambda: frozenset(groups))

        async def connect(sport: int) -> None:
            # the service stage from table 27 on, as table 26 hands it over: VRF set,
            # conntrack'ed in the VRF's zone (new), recirculated to SVC_CT
            await self.lab.ofctl("packet-out", br, f"in_port={ofport} packet={_tcp_syn('10.1.1.50', sp.vip, sport, 80)}"
                                 f" actions=set_field:{sp.vrf}->reg0,ct(zone={sp.vrf},nat,table={T.SVC_CT})")

        async def learned_flows() -> list:
            return [x for x in await self._dump(br, T.SVC_AFF) if "priority=0" not in x]

        async def expired() -> bool:
            return not await learned_flows()

        await connect(40001)
        learned = await wait_for(learned_flows, 10, "the client's pin learned")
        self.assertEqual(len(learned), 1, learned)
        (pin,) = learned
        self.assertIn("idle_timeout=2", pin)
        self.assertIn(f"cookie={S.learned_cookie(sp.ident):#x}", pin)
        self.assertIn("nw_src=10.1.1.50", pin)
        chosen = [p.ip for p in sp.providers if f"load:{int(ipaddress.IPv4Address(p.ip)):#x}->NXM_NX_REG8[]"
                  in pin]
        self.assertEqual(len(chosen), 1, pin)
        # the flow sync does not see it: the audit's count holds, a converge sends nothing
        self.assertTrue(await sync.audit())
        r = await sync.converge(frozenset(flows), groups=lambda: frozenset(groups))
        self.assertEqual((r.changed, r.groups), (0, 0))
        # the next connections follow the pin: the learned flow counts them, and the pinned
        # provider's SVC_AFF_SEL flow them and the first (after the group), no other's
        for sport in (40002, 40003, 40004):
            await connect(sport)

        async def counts():
            pins = [x for x in await self._dump(br, T.SVC_AFF) if "priority=0" not in x]
            sel = {p.ip: x for p in sp.providers for x in await self._dump(br, T.SVC_AFF_SEL)
                   if f"reg8={int(ipaddress.IPv4Address(p.ip)):#x}" in x}
            return (len(pins) == 1 and "n_packets=3," in pins[0]
                    and ["n_packets=4," in sel[ip] for ip in sorted(sel)]
                    == [ip == chosen[0] for ip in sorted(sel)]) and (pins, sel)
        await wait_for(counts, 10, "3 later connections through the pin, none elsewhere")
        # idle 2 s: OVS removes it (the sync's flows stay)
        await wait_for(expired, 15, "the pin expired after its idle timeout")
        self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), set(flows))

    def test_a_learned_pin_has_its_idle_timeout_holds_and_expires(self):
        return Deferred.fromCoroutine(self._go())
