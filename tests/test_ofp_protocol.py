"""The OpenFlow channel: handshake, liveness, error correlation, hostile input.

Unit tests drive one :class:`OpenFlowProtocol` over a ``StringTransport`` with a
``Clock``; the rest use a real OVS (private instance) and real TCP.
"""

from __future__ import annotations

import random
import struct

from os_ken.ofproto import ofproto_v1_3 as ofp
from os_ken.ofproto import ofproto_v1_3_parser as parser
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from contiv_sdn.openflow import codec
from contiv_sdn.openflow.protocol import (BundleError, OpenFlowError, OpenFlowFactory,
                                          SwitchDisconnected)
from contiv_sdn.openflow.registry import SwitchRegistry, parse_dpid
from contiv_sdn.pipeline.flow import COOKIE_MARK, Flow, make_match
from contiv_sdn.testing import require_binary, require_root
from contiv_sdn.testing.wait import wait_for

HDR = struct.Struct("!BBHI")


def msg(mtype: int, xid: int, body: bytes = b"", version: int = 4) -> bytes:
    return HDR.pack(version, mtype, 8 + len(body), xid) + body


def split(data: bytes):
    out, pos = [], 0
    while pos + 8 <= len(data):
        v, t, ln, xid = HDR.unpack_from(data, pos)
        out.append((t, xid, data[pos:pos + ln]))
        pos += ln
    return out


def port_entry(no: int, name: str) -> bytes:
    return struct.pack("!I4x6s2x16sIIIIIIII", no, b"\x02\0\0\0\0\x01", name.encode(),
                       0, 0, 0, 0, 0, 0, 0, 0)


class FakeSwitch:
    """Plays the switch side of one connection, byte by byte."""

    def __init__(self, factory: OpenFlowFactory):
        self.proto = factory.buildProtocol(None)
        self.tr = StringTransport()
        self.proto.makeConnection(self.tr)

    def sent(self):
        data = self.tr.value()
        self.tr.clear()
        return split(data)

    def feed(self, data: bytes) -> None:
        self.proto.dataReceived(data)

    @property
    def closed(self) -> bool:
        return self.tr.disconnecting

    def lose(self) -> None:
        self.proto.connectionLost(Failure(ConnectionDone()))

    def handshake(self, dpid: int = 0xABC, ports=(("p1", 1), ("br", ofp.OFPP_LOCAL))) -> None:
        self.sent()
        self.feed(msg(ofp.OFPT_HELLO, 1))
        (t, xid, _), = self.sent()
        assert t == ofp.OFPT_FEATURES_REQUEST, t
        self.feed(msg(ofp.OFPT_FEATURES_REPLY, xid, struct.pack("!QIBB2xII", dpid, 0, 254, 0, 0, 0)))
        (t, xid, _), = self.sent()
        assert t == ofp.OFPT_MULTIPART_REQUEST, t
        body = struct.pack("!HH4x", ofp.OFPMP_PORT_DESC, 0) + b"".join(
            port_entry(no, name) for name, no in ports)
        self.feed(msg(ofp.OFPT_MULTIPART_REPLY, xid, body))


def make_factory(clock=None, registry=None, **kw) -> OpenFlowFactory:
    return OpenFlowFactory(registry if registry is not None else SwitchRegistry(),
                           clock=clock if clock is not None else Clock(), **kw)


class HandshakeUnitTests(unittest.TestCase):
    def test_hello_offers_only_openflow13(self):
        sw = FakeSwitch(make_factory())
        (t, _xid, data), = sw.sent()
        self.assertEqual(t, ofp.OFPT_HELLO)
        hello = codec.parse_message(data)
        self.assertEqual([e.versions for e in hello.elements], [[4]])

    def test_handshake_registers_switch_with_ports(self):
        ups = []
        reg = SwitchRegistry(on_switch_up=ups.append)
        sw = FakeSwitch(make_factory(registry=reg))
        sw.handshake(dpid=0x1234)
        self.assertEqual(ups, [sw.proto])
        self.assertEqual(sw.proto.dpid, 0x1234)
        self.assertEqual(sw.proto.ports, {"p1": 1, "br": ofp.OFPP_LOCAL})
        self.assertIs(reg.get(0x1234), sw.proto)
        self.assertTrue(sw.proto.ready.called)

    def test_incompatible_hello_is_refused(self):
        sw = FakeSwitch(make_factory())
        sw.sent()
        bitmap = struct.pack("!HHI", ofp.OFPHET_VERSIONBITMAP, 8, 1 << 1)  # OF1.0 only
        sw.feed(msg(ofp.OFPT_HELLO, 1, bitmap, version=1))
        types = [t for t, _x, _d in sw.sent()]
        self.assertEqual(types, [ofp.OFPT_ERROR])
        self.assertTrue(sw.closed)

    def test_hello_bitmap_with_13_is_accepted_from_newer_switch(self):
        sw = FakeSwitch(make_factory())
        sw.sent()
        bitmap = struct.pack("!HHI", ofp.OFPHET_VERSIONBITMAP, 8, (1 << 4) | (1 << 6))
        sw.feed(msg(ofp.OFPT_HELLO, 1, bitmap + b"\0" * 0, version=6))
        self.assertEqual([t for t, _x, _d in sw.sent()], [ofp.OFPT_FEATURES_REQUEST])
        self.assertFalse(sw.closed)

    def test_port_status_updates_map_and_notifies(self):
        changes = []
        reg = SwitchRegistry(on_ports_changed=lambda s: changes.append(dict(s.ports)))
        sw = FakeSwitch(make_factory(registry=reg))
        sw.handshake()
        sw.feed(msg(ofp.OFPT_PORT_STATUS, 0, struct.pack("!B7x", ofp.OFPPR_ADD) + port_entry(7, "veth7")))
        sw.feed(msg(ofp.OFPT_PORT_STATUS, 0, struct.pack("!B7x", ofp.OFPPR_DELETE) + port_entry(1, "p1")))
        # a MODIFY that changes nothing in the map (link state) does not notify
        sw.feed(msg(ofp.OFPT_PORT_STATUS, 0, struct.pack("!B7x", ofp.OFPPR_MODIFY) + port_entry(7, "veth7")))
        self.assertEqual(sw.proto.ports, {"veth7": 7, "br": ofp.OFPP_LOCAL})
        self.assertEqual(len(changes), 2)
        # a port number that comes back under another name: the old name goes
        sw.feed(msg(ofp.OFPT_PORT_STATUS, 0, struct.pack("!B7x", ofp.OFPPR_MODIFY) + port_entry(7, "veth8")))
        self.assertEqual(sw.proto.ports, {"veth8": 7, "br": ofp.OFPP_LOCAL})
        self.assertEqual(len(changes), 3)
        self.assertFalse(sw.closed)

    def test_disconnect_fails_pending_and_unregisters(self):
        downs = []
        reg = SwitchRegistry(on_switch_down=downs.append)
        sw = FakeSwitch(make_factory(registry=reg))
        sw.handshake()
        d = sw.proto.barrier()
        sw.lose()
        self.failureResultOf(d, SwitchDisconnected)
        self.assertEqual(downs, [sw.proto])
        self.assertIsNone(reg.get(0xABC))

    def test_same_dpid_reconnecting_replaces_old_connection(self):
        downs = []
        reg = SwitchRegistry(on_switch_down=downs.append)
        f = make_factory(registry=reg)
        old, new = FakeSwitch(f), FakeSwitch(f)
        old.handshake(dpid=5)
        new.handshake(dpid=5)
        self.assertTrue(old.closed)
        old.lose()  # the old connection's late goodbye must not unregister the new one
        self.assertIs(reg.get(5), new.proto)
        self.assertEqual(downs, [])


class LivenessUnitTests(unittest.TestCase):
    def test_silent_peer_is_dropped(self):
        clock = Clock()
        sw = FakeSwitch(make_factory(clock=clock, echo_interval=2, echo_timeout=6))
        clock.advance(2)
        clock.advance(2)
        self.assertFalse(sw.closed)
        clock.advance(2)
        self.assertTrue(sw.closed)

    def test_echo_keeps_alive_then_timeout(self):
        clock = Clock()
        sw = FakeSwitch(make_factory(clock=clock, echo_interval=2, echo_timeout=6))
        sw.handshake()
        for _ in range(5):
            clock.advance(2)
            echoes = [(t, x) for t, x, _d in sw.sent() if t == ofp.OFPT_ECHO_REQUEST]
            self.assertEqual(len(echoes), 1)
            sw.feed(msg(ofp.OFPT_ECHO_REPLY, echoes[0][1]))
        self.assertFalse(sw.closed)
        clock.advance(2)
        clock.advance(2)
        self.assertFalse(sw.closed)
        clock.advance(2)
        self.assertTrue(sw.closed)

    def test_open_bundle_extends_the_timeout(self):
        clock = Clock()
        sw = FakeSwitch(make_factory(clock=clock, echo_interval=2, echo_timeout=6))
        sw.handshake()
        sw.proto.bundle()  # the switch may be busy with a large bundle: silence is tolerated longer
        for _ in range(5):
            clock.advance(2)
        self.assertFalse(sw.closed)
        for _ in range(7):
            clock.advance(2)
        self.assertTrue(sw.closed)

    def test_switch_echo_is_answered(self):
        sw = FakeSwitch(make_factory())
        sw.handshake()
        sw.sent()
        sw.feed(msg(ofp.OFPT_ECHO_REQUEST, 77, b"ping-data"))
        (t, xid, data), = sw.sent()
        self.assertEqual((t, xid, data[8:]), (ofp.OFPT_ECHO_REPLY, 77, b"ping-data"))


def _flow_stats_reply(xid: int, entry: bytes) -> bytes:
    return msg(ofp.OFPT_MULTIPART_REPLY, xid, struct.pack("!HH4x", ofp.OFPMP_FLOW, 0) + entry)


def _flow_entry(match: bytes, insts: bytes, length=None) -> bytes:
    body = struct.pack("!HBxIIHHHH4xQQQ", 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0) + match + insts
    n = len(body) if length is None else length
    return struct.pack("!H", n) + body[2:]


EMPTY_MATCH = struct.pack("!HH4x", ofp.OFPMT_OXM, 4)


class HostileInputUnitTests(unittest.TestCase):
    """Everything here must close the one connection, never raise, never hang."""

    def _up(self):
        sw = FakeSwitch(make_factory())
        sw.handshake()
        sw.sent()
        return sw

    def _assert_dropped(self, sw, *deferreds):
        self.assertTrue(sw.closed)
        sw.lose()
        for d in deferreds:
            self.failureResultOf(d, SwitchDisconnected)

    def test_bad_version(self):
        sw = FakeSwitch(make_factory())
        sw.feed(b"\x17GARBAGE-GARBAGE-GARBAGE")
        self._assert_dropped(sw)

    def test_length_below_header(self):
        sw = self._up()
        sw.feed(HDR.pack(4, ofp.OFPT_ECHO_REQUEST, 4, 1))
        self._assert_dropped(sw)

    def test_message_before_hello(self):
        sw = FakeSwitch(make_factory())
        sw.feed(msg(ofp.OFPT_ECHO_REQUEST, 1))
        self._assert_dropped(sw)

    def test_truncated_features_reply(self):
        sw = FakeSwitch(make_factory())
        sw.sent()
        sw.feed(msg(ofp.OFPT_HELLO, 1))
        (_t, xid, _d), = sw.sent()
        sw.feed(msg(ofp.OFPT_FEATURES_REPLY, xid, b"\0" * 8))
        self._assert_dropped(sw)
        self.assertFalse(sw.proto.up)
        self.assertEqual(sw.proto.factory.registry.switches(), [])

    def test_zero_length_flow_stats_entry(self):
        sw = self._up()
        d = sw.proto.flow_stats()
        (_t, xid, _d), = sw.sent()
        sw.feed(_flow_stats_reply(xid, _flow_entry(EMPTY_MATCH, b"", length=0)))
        self._assert_dropped(sw, d)

    def test_zero_length_instruction(self):
        sw = self._up()
        d = sw.proto.flow_stats()
        (_t, xid, _d), = sw.sent()
        sw.feed(_flow_stats_reply(xid, _flow_entry(EMPTY_MATCH, struct.pack("!HH4x", 4, 0))))
        self._assert_dropped(sw, d)

    def test_zero_length_action(self):
        sw = self._up()
        d = sw.proto.flow_stats()
        (_t, xid, _d), = sw.sent()
        inst = struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 16) + struct.pack("!HH4x", 0, 0)
        sw.feed(_flow_stats_reply(xid, _flow_entry(EMPTY_MATCH, inst)))
        self._assert_dropped(sw, d)

    def test_zero_length_action_nested_in_ct(self):
        sw = self._up()
        d = sw.proto.flow_stats()
        (_t, xid, _d), = sw.sent()
        ct = struct.pack("!HHIH", 0xFFFF, 32, 0x2320, 35) + struct.pack("!H4sHB3xH", 0, b"\0" * 4, 1, 255, 0)
        ct += struct.pack("!HH4x", 0, 0)
        inst = struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 8 + len(ct)) + ct
        sw.feed(_flow_stats_reply(xid, _flow_entry(EMPTY_MATCH, inst)))
        self._assert_dropped(sw, d)

    def test_multipart_of_unrequested_type(self):
        sw = self._up()
        d = sw.proto.flow_stats()
        (_t, xid, _d), = sw.sent()
        sw.feed(msg(ofp.OFPT_MULTIPART_REPLY, xid, struct.pack("!HH4x", ofp.OFPMP_GROUP_DESC, 0)
                    + struct.pack("!HBxI", 0, 0, 1)))
        self._assert_dropped(sw, d)

    def test_packet_in_with_oversized_match(self):
        reg = SwitchRegistry()
        seen = []
        sw = FakeSwitch(make_factory(registry=reg, on_packet_in=lambda s, m: seen.append(m)))
        sw.handshake()
        body = struct.pack("!IHBBQ", ofp.OFP_NO_BUFFER, 60, 0, 0, 0) + struct.pack("!HH", 1, 0xFFF0)
        sw.feed(msg(ofp.OFPT_PACKET_IN, 0, body + b"\0" * 12))
        self._assert_dropped(sw)
        self.assertEqual(seen, [])

    def test_bundle_reply_zero_length_property(self):
        sw = self._up()
        b = sw.proto.bundle()
        (_t, xid, _d), = sw.sent()
        # a well-formed bundle control reply carrying a zero-length property: os-ken's
        # property walk would loop forever; we never give it to os-ken
        body = struct.pack("!IIIHH", 0x4F4E4600, 2300, b.id, ofp.ONF_BCT_OPEN_REPLY, 0) + b"\0" * 8
        sw.feed(msg(ofp.OFPT_EXPERIMENTER, xid, body))
        self.assertFalse(sw.closed)
        self.assertEqual(self.successResultOf(b._open_d), (b.id, ofp.ONF_BCT_OPEN_REPLY, 0))
        # a reply from another experimenter to our bundle request is a violation
        d = sw.proto.barrier()
        c = sw.proto.bundle()
        (xid2,) = [x for t, x, _d in sw.sent() if t == ofp.OFPT_EXPERIMENTER]
        sw.feed(msg(ofp.OFPT_EXPERIMENTER, xid2, struct.pack("!IIIHH", 0x2320, 1, c.id, 1, 0)))
        self._assert_dropped(sw, d)

    def test_truncated_then_connection_lost(self):
        sw = self._up()
        d = sw.proto.barrier()
        sw.feed(HDR.pack(4, ofp.OFPT_BARRIER_REPLY, 100, 5) + b"\0" * 20)
        self.assertFalse(sw.closed)  # waiting for the rest
        sw.lose()
        self.failureResultOf(d, SwitchDisconnected)

    def test_oversized_garbage_message(self):
        sw = self._up()
        d = sw.proto.flow_stats()
        (_t, xid, _d), = sw.sent()
        junk = random.Random(3).randbytes(0xFFFF - 8)
        sw.feed(HDR.pack(4, ofp.OFPT_MULTIPART_REPLY, 0xFFFF, xid) + junk)
        self._assert_dropped(sw, d)

    def test_fuzz_messages_never_raise(self):
        """Random bodies on every message type we parse, with requests pending."""
        r = random.Random(20240)
        types = [ofp.OFPT_ERROR, ofp.OFPT_MULTIPART_REPLY, ofp.OFPT_EXPERIMENTER, ofp.OFPT_PACKET_IN,
                 ofp.OFPT_PORT_STATUS, ofp.OFPT_FEATURES_REPLY, ofp.OFPT_BARRIER_REPLY,
                 ofp.OFPT_ECHO_REQUEST, ofp.OFPT_FLOW_REMOVED, 99]
        dropped = 0
        for i in range(400):
            f = make_factory(on_packet_in=lambda s, m: None)
            sw = FakeSwitch(f)
            sw.handshake()
            sw.sent()
            reqs = [sw.proto.flow_stats(), sw.proto.group_desc(), sw.proto.meter_config(),
                    sw.proto.group_stats(), sw.proto.meter_stats(), sw.proto.barrier()]
            xids = [x for _t, x, _d in sw.sent()]
            sw.proto.bundle()
            xids += [x for _t, x, _d in sw.sent()]
            t = r.choice(types)
            xid = r.choice(xids)
            if t == ofp.OFPT_MULTIPART_REPLY:
                mp = r.choice([ofp.OFPMP_FLOW, ofp.OFPMP_GROUP_DESC, ofp.OFPMP_METER_CONFIG,
                               ofp.OFPMP_GROUP, ofp.OFPMP_METER])
                body = struct.pack("!HH4x", mp, 0) + _mutated_entry(r, mp)
            else:
                body = r.randbytes(r.randrange(0, 120))
            sw.feed(msg(t, xid, body))  # must not raise
            if sw.closed:
                dropped += 1
            sw.lose()
            for d in reqs:
                d.addErrback(lambda f: None)
        self.assertGreater(dropped, 0)


def _mutated_entry(r: random.Random, mp: int) -> bytes:
    """A plausible multipart entry of type ``mp`` with a few bytes corrupted."""
    if mp == ofp.OFPMP_FLOW:
        inst = struct.pack("!HH4x", ofp.OFPIT_APPLY_ACTIONS, 24) + struct.pack("!HHIH6x", 0, 16, 1, 0)
        e = bytearray(_flow_entry(EMPTY_MATCH, inst))
    elif mp == ofp.OFPMP_GROUP_DESC:
        e = bytearray(struct.pack("!HBxI", 40, 0, 1) + struct.pack("!HHII4x", 32, 0, 0, 0)
                      + struct.pack("!HHIH6x", 0, 16, 1, 0))
    elif mp == ofp.OFPMP_METER_CONFIG:
        e = bytearray(struct.pack("!HHI", 24, 0, 1) + struct.pack("!HHII", 1, 16, 100, 0))
    else:
        e = bytearray(r.randbytes(40))
        struct.pack_into("!H", e, 4 if mp == ofp.OFPMP_METER else 0, 40)
    for _ in range(r.randrange(0, 4)):
        e[r.randrange(len(e))] = r.choice([0, 0xFF, r.randrange(256)])
    return bytes(e)


class BundleUnitTests(unittest.TestCase):
    def test_remembers_the_last_messages_only_and_still_describes_an_error(self):
        """Messages without a reply are remembered for error reports: a bounded few,
        not thousands per switch for the netmaster's lifetime; requests are named by
        what they are, and echoes are not kept at all."""
        sw = FakeSwitch(make_factory())
        sw.handshake()
        for i in range(1000):
            d = sw.proto.barrier()
            (_t, x, _d), = sw.sent()
            sw.feed(msg(ofp.OFPT_BARRIER_REPLY, x))
            self.successResultOf(d)
            sw.proto.send_msg(parser.OFPSetConfig(sw.proto.datapath, 0, 0xFFFF - i))
            sw.proto.send_msg(parser.OFPEchoRequest(sw.proto.datapath, data=b""), remember=False)
            sw.sent()
        self.assertLessEqual(len(sw.proto._recent), 100)  # of 2,000 without a reply
        last = sw.proto.send_msg(parser.OFPSetConfig(sw.proto.datapath, 0, 1234))
        sw.feed(msg(ofp.OFPT_ERROR, last, struct.pack("!HH", ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)))
        d = sw.proto.barrier()
        (_t, x, _d), = sw.sent()[-1:]
        sw.feed(msg(ofp.OFPT_ERROR, x, struct.pack("!HH", ofp.OFPET_BAD_REQUEST, ofp.OFPBRC_BAD_TYPE)))
        err = self.failureResultOf(d, OpenFlowError).value
        self.assertIn("barrier", str(err))  # the request, by name (the error has no data)
        self.assertFalse(sw.closed)

    def test_errors_attributed_to_flows_across_xid_wrap(self):
        sw = FakeSwitch(make_factory())
        sw.handshake()
        sw.proto._xid = 0xFFFFFFFD
        b = sw.proto.bundle()
        flows = [Flow(table=1, priority=i, match=make_match(reg0=i), actions=(("output", i),))
                 for i in range(1, 5)]
        for f in flows:
            b.add_flow_mod(f, codec.ADD)
        commit = Deferred.fromCoroutine(b.commit())
        sent = sw.sent()
        adds = [x for t, x, d in sent if t == ofp.OFPT_EXPERIMENTER and len(d) > 24]
        self.assertEqual(len(adds), 4)
        self.assertLess(adds[-1], adds[0])  # the counter wrapped inside the bundle
        open_xid = [x for t, x, d in sent if t == ofp.OFPT_EXPERIMENTER and len(d) == 24][0]
        (barrier_xid,) = [x for t, x, _d in sent if t == ofp.OFPT_BARRIER_REQUEST]
        sw.feed(msg(ofp.OFPT_EXPERIMENTER, open_xid,
                    struct.pack("!IIIHH", 0x4F4E4600, 2300, b.id, ofp.ONF_BCT_OPEN_REPLY, 3)))
        for x in (adds[1], adds[3]):
            sw.feed(msg(ofp.OFPT_ERROR, x, struct.pack("!HH", ofp.OFPET_BAD_ACTION, ofp.OFPBAC_BAD_OUT_PORT)))
        sw.feed(msg(ofp.OFPT_BARRIER_REPLY, barrier_xid))
        # rejected adds: the bundle is discarded, not committed
        (t, discard_xid, d), = sw.sent()
        self.assertEqual(struct.unpack_from("!H", d, 20)[0], ofp.ONF_BCT_DISCARD_REQUEST)
        sw.feed(msg(ofp.OFPT_EXPERIMENTER, discard_xid,
                    struct.pack("!IIIHH", 0x4F4E4600, 2300, b.id, ofp.ONF_BCT_DISCARD_REPLY, 3)))
        err = self.failureResultOf(commit, BundleError).value
        self.assertEqual([e.xid for e in err.errors], [adds[1], adds[3]])
        self.assertIn("priority=2", str(err.errors[0]))
        self.assertIn("priority=4", str(err.errors[1]))
        self.assertIn("OFPBAC_BAD_OUT_PORT", str(err))
        self.assertFalse(sw.closed)


# ---------------------------------------------------------------------------
# real OVS, real TCP
# ---------------------------------------------------------------------------

class _Raw(Protocol):
    def __init__(self):
        self.lost: Deferred = Deferred()

    def connectionLost(self, reason=None):
        self.lost.callback(None)


class RealSwitchTests(unittest.TestCase):
    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.ports_changed = []
        self.lab = SwitchLab("ofp", echo_interval=1, echo_timeout=3)
        self.lab.registry.on_ports_changed = lambda s: self.ports_changed.append(dict(s.ports))
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    def run_async(self, coro):
        return Deferred.fromCoroutine(coro)

    async def _until(self, cond, what: str, timeout: float = 10.0):
        await wait_for(cond, timeout=timeout, what=what)

    def test_handshake_dpid_and_port_map(self):
        async def go():
            dpid = self.lab.next_dpid()
            sw = await self.lab.add_switch("hs", dpid=dpid)
            br = self.lab.name("hs")
            self.assertEqual(sw.dpid, dpid)
            self.assertEqual(sw.ports, {br: ofp.OFPP_LOCAL})
            self.assertIs(self.lab.registry.get(dpid), sw)
            self.lab.registry.set_host("host-a", f"{dpid:016x}")
            self.assertIs(self.lab.registry.switch_for_host("host-a"), sw)
            self.assertEqual(sw.host, "host-a")
            port = await self.lab.add_internal_port(br, "p1")
            await self._until(lambda: port in sw.ports, "port-status for the new port")
            ofport = int((await self.lab.vsctl("get", "interface", port, "ofport")).strip())
            self.assertEqual(sw.ports[port], ofport)
            self.assertIn(port, self.ports_changed[-1])
            await self.lab.vsctl("del-port", br, port)
            await self._until(lambda: port not in sw.ports, "port-status for the removed port")
            self.assertEqual(sw.ports, {br: ofp.OFPP_LOCAL})
        return self.run_async(go())

    def test_error_is_correlated_to_its_flow(self):
        async def go():
            sw = await self.lab.add_switch("er")
            good = Flow(table=1, priority=5, match=make_match(reg0=1), actions=(("output", 1),))
            # goto_table must go forward: OVS rejects this one when it decodes it
            bad = Flow(table=3, priority=5, match=make_match(reg0=2), goto=1)
            self.assertEqual(await sw.send_checked(codec.encode_flow_mod(good, codec.ADD, sw.next_xid())),
                             sw._xid - 1)
            xid = sw.next_xid()
            d = sw.send_checked(codec.encode_flow_mod(bad, codec.ADD, xid))
            try:
                await d
            except OpenFlowError as e:
                self.assertEqual(e.xid, xid)
                self.assertEqual(e.type, ofp.OFPET_BAD_INSTRUCTION)
                self.assertIn("goto_table:1", str(e))
                self.assertIn("table=3", str(e))
            else:
                self.fail("bad flow accepted")
            # in a bundle: the commit fails naming the flow, and nothing of it is applied
            extra = Flow(table=1, priority=6, match=make_match(reg0=3), actions=(("output", 2),))
            b = sw.bundle()
            b.add_flow_mod(extra, codec.ADD)
            b.add_flow_mod(bad, codec.ADD)
            try:
                await b.commit()
            except BundleError as e:
                self.assertEqual(len(e.errors), 1)
                self.assertIn("table=3", str(e.errors[0]))
            else:
                self.fail("bundle with a bad flow committed")
            self.assertEqual(await sw.read_flows(COOKIE_MARK, 0xFFFF << 48), [good])
            self.assertTrue(sw.connected)
        return self.run_async(go())

    def test_group_and_meter_stats(self):
        async def go():
            sw = await self.lab.add_switch("gm")
            br = self.lab.name("gm")
            await self.lab.ofctl("add-group", br, "group_id=7,type=all,bucket=output:1,bucket=output:2")
            await self.lab.ofctl("add-meter", br, "meter=3,kbps,band=type=drop,rate=1000")
            groups = await sw.group_desc()
            self.assertEqual([(g.group_id, len(g.buckets)) for g in groups], [(7, 2)])
            self.assertEqual([g.group_id for g in await sw.group_stats()], [7])
            self.assertEqual([m.meter_id for m in await sw.meter_config()], [3])
            self.assertEqual([m.meter_id for m in await sw.meter_stats()], [3])
            await sw.barrier()
        return self.run_async(go())

    def test_garbage_clients_dropped_real_switch_still_served(self):
        async def go():
            from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
            port = self.lab.port.getHost().port
            payloads = [
                b"\xff" * 64,  # not OpenFlow
                HDR.pack(4, 0, 8, 1) + HDR.pack(4, ofp.OFPT_MULTIPART_REPLY, 3, 2),  # bad length
                HDR.pack(4, 0, 8, 1) + HDR.pack(4, ofp.OFPT_FEATURES_REPLY, 12, 2) + b"\0" * 4,
            ]
            for data in payloads:
                raw = _Raw()
                await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
                raw.transport.write(data)
                await raw.lost  # the controller closed it
            # a truncated message then the client leaves: nothing to see, nothing breaks
            raw = _Raw()
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), raw)
            raw.transport.write(HDR.pack(4, 0, 8, 1) + HDR.pack(4, 2, 200, 3) + b"abc")
            raw.transport.loseConnection()
            await raw.lost
            sw = await self.lab.add_switch("gb")
            self.assertTrue(sw.up)
            await sw.barrier()
        return self.run_async(go())

    def test_silent_tcp_peer_is_dropped(self):
        async def go():
            from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
            raw = _Raw()
            await connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", self.lab.port.getHost().port), raw)
            # echo_timeout is 3 s in this lab, checked every echo_interval (1 s)
            await raw.lost
        return self.run_async(go())


class RegistryTests(unittest.TestCase):
    def test_parse_dpid_forms(self):
        for form in (0x1A, "0x1a", "000000000000001a", "00:00:00:00:00:00:00:1a", "1A"):
            self.assertEqual(parse_dpid(form), 0x1A)
        self.assertRaises(ValueError, parse_dpid, "")
        self.assertRaises(ValueError, parse_dpid, 1 << 64)

    def test_hosts_map(self):
        reg = SwitchRegistry()
        reg.set_hosts([{"name": "h1", "vtepIP": "1.1.1.1", "dpid": "0x1"},
                       {"name": "h2", "vtepIP": "1.1.1.2", "dpid": 2},
                       {"name": "h3", "vtepIP": "1.1.1.3", "dpid": ""}])
        self.assertEqual(reg.hosts(), {"h1": 1, "h2": 2})
        reg.set_host("h1", 3)
        self.assertEqual((reg.dpid_of("h1"), reg.host_of(1), reg.host_of(3)), (3, None, "h1"))
        reg.set_host("h9", 2)  # dpid 2 moves to h9
        self.assertEqual((reg.dpid_of("h2"), reg.host_of(2)), (None, "h9"))
        reg.remove_host("h9")
        self.assertIsNone(reg.host_of(2))

    def test_callback_failure_does_not_escape(self):
        def boom(s):
            raise RuntimeError("callback bug")
        reg = SwitchRegistry(on_switch_up=boom)
        sw = FakeSwitch(make_factory(registry=reg))
        sw.handshake(dpid=9)
        self.assertIs(reg.get(9), sw.proto)
        self.assertFalse(sw.closed)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
