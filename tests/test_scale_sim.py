"""The controller at a CI-sized scale, against simulated switches (issue 8).

Correctness, not timings: many switches (each a real OpenFlow 1.3 connection
from :mod:`contiv_sdn.testing.simswitch`), hosts registered and endpoints
created the way netplugin does it, then churn (creates, deletes, port flaps,
link flaps); every switch must end up holding exactly the flows of a full
compile of the stored state (the oracle), and a netmaster restart, with nothing
changed meanwhile, must send no flow_mod at all (switches keep their tables and
reconnect).  Through public surfaces only, so it holds for any controller design.
"""

from __future__ import annotations

import os

from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary
from contiv_sdn.testing.netmaster import NetmasterProcess
from contiv_sdn.testing.simswitch import Cluster, NetmasterRunner, endpoint_id, in_port_tlv

SWITCHES = int(os.environ.get("SCALE_SIM_SWITCHES", "50"))
ENDPOINTS = int(os.environ.get("SCALE_SIM_ENDPOINTS", "1000"))
NETWORKS = (("sim-a", "10.128.0.0/16"), ("sim-b", "10.129.0.0/16"))


async def gather(deferreds):
    results = await defer.DeferredList(list(deferreds), consumeErrors=True)
    for ok, value in results:
        if not ok:
            value.raiseException()
    return [v for _, v in results]


async def bounded(jobs, width=16):
    """Run coroutine factories ``width`` at a time (as many agents would)."""
    sem = defer.DeferredSemaphore(width)
    return await gather(sem.run(lambda j=j: defer.ensureDeferred(j())) for j in jobs)


class ScaleSimTests(TestCase):
    timeout = 600

    async def _setUp(self):
        require_binary("redis-server")
        self.redis = RedisServer(appendonly=False).start()
        self.addCleanup(self.redis.stop)
        ofp_port = free_tcp_port()
        spec = NetmasterProcess(redis_url=self.redis.url,
                                ofp_listen=f"tcp:{ofp_port}:interface=127.0.0.1")
        self.addCleanup(spec.cleanup)
        self.netmaster = NetmasterRunner(spec, reactor)
        await self.netmaster.start()
        self.addCleanup(lambda: defer.ensureDeferred(self.netmaster.stop()))
        self.cluster = await Cluster(spec.url, ("127.0.0.1", ofp_port), self.redis.url,
                                     max_backoff=0.5).start()
        self.addCleanup(lambda: defer.ensureDeferred(self.cluster.close()))
        for name, subnet in NETWORKS:
            await self.cluster.create_network(name, subnet)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _populate(self, switches=SWITCHES, endpoints=ENDPOINTS):
        c = self.cluster
        for i in range(switches):
            await c.add_host(f"sim{i:04d}", c.vtep_of(i + 1))
        await c.wait_all_up()
        names = sorted(c.hosts)

        def create(i):
            net = NETWORKS[i % len(NETWORKS)][0]
            return lambda: c.create_endpoint(names[i % len(names)], net, endpoint_id(i))
        await bounded([create(i) for i in range(endpoints)])
        return names

    async def _churn(self, names):
        c = self.cluster
        ids = sorted(c.endpoints)
        gone = ids[::10]  # 10% deleted
        flapped = ids[3::20]  # 5% re-plugged (new ofport)
        linked = ids[7::20]  # 5% link down and up (same ofport)
        await bounded([lambda e=e: c.delete_endpoint(e) for e in gone])
        for e in flapped:
            c.flap(e)
        for e in linked:
            c.hosts[c.endpoints[e]["host"]].set_link(c.endpoints[e]["port"], False)
        await deferLater(reactor, 0.2, lambda: None)
        for e in linked:
            c.hosts[c.endpoints[e]["host"]].set_link(c.endpoints[e]["port"], True)

        def create(i):
            net = NETWORKS[i % len(NETWORKS)][0]
            return lambda: c.create_endpoint(names[(i * 7) % len(names)], net, endpoint_id(ENDPOINTS + i))
        await bounded([create(i) for i in range(ENDPOINTS // 10)])
        # and one created without its port yet: remote switches learn it, its own host not
        await c.create_endpoint(names[0], NETWORKS[0][0], endpoint_id(2 * ENDPOINTS), attach=False)

    def _check_oracle_is_meaningful(self, expected):
        """The oracle itself must name every attached endpoint's port on its host:
        an empty or partial compile would make the comparison prove nothing."""
        c = self.cluster
        self.assertEqual(set(expected), set(c.hosts))
        for ep_id, ep in c.endpoints.items():
            if ep["ofport"] is None:
                continue
            needle = in_port_tlv(ep["ofport"])
            self.assertTrue(any(needle in key[2] for key in expected[ep["host"]]),
                            f"the oracle has no flow for endpoint {ep_id[-6:]}'s port on {ep['host']}")

    async def test_churn_converges_to_full_compile_and_restart_sends_nothing(self):
        c = self.cluster
        names = await self._populate()
        await self._churn(names)

        expected = await c.oracle()
        self._check_oracle_is_meaningful(expected)
        await c.wait_matching(expected, timeout=300)

        # A restart with nothing changed: the switches keep their tables, reconnect,
        # are read back, and are sent nothing.
        before = c.totals()
        reads = {n: h.reads for n, h in c.hosts.items()}
        flow_reads = {n: h.flow_reads for n, h in c.hosts.items()}
        await self.netmaster.stop()
        await c.wait(lambda: not any(h.up for h in c.hosts.values()), 30, "all switches disconnected")
        restarted = reactor.seconds()
        await self.netmaster.start()
        await c.wait_all_up(timeout=120, since=restarted)
        # every switch is read again (flow or aggregate stats) before anything could be judged
        await c.wait(lambda: all(h.reads > reads[n] for n, h in c.hosts.items()), 300,
                     "every switch read back after the restart")
        await self._quiet(seconds=3.0)
        after = c.totals()
        self.assertEqual(after["flow_mods"] - before["flow_mods"], 0,
                         "flow_mods were sent after a restart that changed nothing")
        self.assertEqual(after["errors_sent"], 0)
        self.assertEqual(c.differences(expected), [])
        # the counts agreed, so no switch was read back at the reconnect; each was read
        # back in full once afterwards, one at a time (the verification a count cannot do)
        self.assertEqual({n for n, h in c.hosts.items() if h.flow_reads == flow_reads[n]}, set(),
                         "switches never read back in full after the restart")

    async def test_switches_changed_while_the_netmaster_was_down_are_repaired(self):
        """Counts first on a reconnect must not leave a switch wrong: a flow modified in
        place (the count agrees: found by the full read-back that follows), a port
        re-plugged with a new ofport (the in_port counts disagree) and a deleted flow
        (the total disagrees) are all repaired after the restart."""
        c = self.cluster
        names = await self._populate(switches=10, endpoints=200)
        await c.wait_matching(await c.oracle(), timeout=120)
        await self.netmaster.stop()
        await c.wait(lambda: not any(h.up for h in c.hosts.values()), 30, "all switches disconnected")
        restarted = reactor.seconds()
        # behind our back, while no netmaster runs:
        modified, replugged, deleted = (c.hosts[n] for n in names[2:5])
        keys = sorted(modified.table)
        other = next(v for v in (modified.table[k] for k in keys) if v[1] != modified.table[keys[0]][1])
        modified.table[keys[0]] = (modified.table[keys[0]][0], other[1])  # same cookie and match
        modified.changed()
        ep = next(e for e, rec in sorted(c.endpoints.items()) if rec["host"] == replugged.name)
        c.flap(ep)  # a new ofport, no port status (nobody connected)
        del deleted.table[sorted(deleted.table)[-1]]
        deleted.changed()
        expected = await c.oracle()
        self.assertNotEqual(c.differences(expected), [])
        await self.netmaster.start()
        await c.wait_all_up(timeout=120, since=restarted)
        # well before the periodic audit (30 s) could find the modified flow
        await c.wait_matching(expected, timeout=20)

    async def _quiet(self, seconds):
        """Wait until no switch has been read or written for ``seconds``."""
        c = self.cluster
        last = [reactor.seconds()]

        def note(host, event, detail):
            if event in ("read", "applied", "up"):
                last[0] = reactor.seconds()
        c.listeners.append(note)
        try:
            await c.wait(lambda: reactor.seconds() - last[0] >= seconds, 300, "the switches quiet")
        finally:
            c.listeners.remove(note)


# ---------------------------------------------------------------------------
# the simulated switch itself, against our own OpenFlow channel (in process)
# ---------------------------------------------------------------------------

from os_ken.ofproto import ofproto_v1_3 as _ofp  # noqa: E402
from os_ken.ofproto import ofproto_v1_3_parser as _parser  # noqa: E402

from contiv_sdn.openflow import codec as _codec  # noqa: E402
from contiv_sdn.openflow.protocol import BundleError, OpenFlowFactory  # noqa: E402
from contiv_sdn.openflow.registry import SwitchRegistry  # noqa: E402
from contiv_sdn.openflow.sync import FlowSync  # noqa: E402
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK, Flow, make_match  # noqa: E402
from contiv_sdn.testing.simswitch import SimHost, entries_of, register_host  # noqa: E402


def _flows(n, port=3, cookie_base=COOKIE_MARK):
    out = set()
    for i in range(n):
        out.add(Flow(table=i % 3, priority=100 + i % 2,
                     match=make_match(in_port=port + i, eth_src=f"02:00:00:00:{i >> 8:02x}:{i & 255:02x}"),
                     actions=(("set_field", "reg0", i), ("output", 2)), goto=None if i % 2 else 5,
                     cookie=cookie_base | i))
    return out


class SimSwitchProtocolTests(TestCase):
    """What the simulated switch answers is what our channel expects from OVS."""

    timeout = 60

    async def _setUp(self):
        self.registry = SwitchRegistry()
        self.ups = []
        self.waiters = []
        self.registry.on_switch_up = self._up
        self.registry.on_ports_changed = lambda sw: [d.callback(sw) for d in self._take()]
        self.listener = reactor.listenTCP(0, OpenFlowFactory(self.registry), interface="127.0.0.1")
        self.addCleanup(self.listener.stopListening)
        self.host = SimHost("simproto", "172.16.0.1", reactor, max_backoff=0.2)
        self.addCleanup(self.host.stop)
        up = defer.Deferred()
        self.waiters.append(up)
        self.host.connect("127.0.0.1", self.listener.getHost().port)
        self.switch = await up

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    def _take(self):
        w, self.waiters = self.waiters, []
        return w

    def _up(self, sw):
        self.ups.append(sw)
        for d in self._take():
            d.callback(sw)

    async def test_handshake_ports_and_port_status(self):
        self.assertEqual(self.switch.dpid, self.host.dpid)
        self.assertEqual(self.switch.ports, {"br-int": 0xFFFFFFFE, "vxlan0": 1})
        changed = defer.Deferred()
        self.waiters.append(changed)
        ofport = self.host.add_port("cv0123456789ab")
        await changed
        self.assertEqual(self.switch.ports["cv0123456789ab"], ofport)
        changed = defer.Deferred()
        self.waiters.append(changed)
        self.host.remove_port("cv0123456789ab")
        await changed
        self.assertNotIn("cv0123456789ab", self.switch.ports)

    async def test_flow_sync_adds_modifies_deletes_and_reads_back(self):
        first = _flows(40)
        sync = FlowSync(self.switch)
        await sync.converge(frozenset(first))
        self.assertEqual(self.host.table, entries_of(first, self.host.interner))
        # some go, some change their actions, some are new
        second = {f for f in first if f.cookie & 0xFF >= 10}
        changed = {Flow(f.table, f.priority, f.match, (("output", 9),), f.goto, f.cookie)
                   for f in second if f.cookie & 1}
        second = {f for f in second if not f.cookie & 1} | changed | _flows(5, port=500)
        result = await sync.converge(frozenset(second))
        self.assertEqual((result.added, result.deleted), (5, 10))
        self.assertEqual(result.modified, len(changed))
        self.assertEqual(self.host.table, entries_of(second, self.host.interner))
        self.assertEqual(set(await self.switch.read_flows(COOKIE_MARK, COOKIE_MASK)), second)
        self.assertEqual(self.host.flows(), second)
        # a new connection's first converge reads the table and sends nothing
        sync2 = FlowSync(self.switch)
        mods = self.host.flow_mods
        self.assertEqual((await sync2.converge(frozenset(second))).changed, 0)
        self.assertEqual(self.host.flow_mods, mods)

    async def test_bundle_with_a_bad_message_applies_nothing(self):
        good = sorted(_flows(3))
        bundle = self.switch.bundle()
        for f in good:
            bundle.add_flow_mod(f, _codec.ADD)
        bad = bytearray(_codec.encode_flow_mod(good[0], _codec.ADD, self.switch.next_xid()))
        bad[48:50] = b"\x00\x07"  # match type 7: not OXM
        bundle.add(bytes(bad))
        with self.assertRaises(BundleError):
            await bundle.commit()
        self.assertEqual(self.host.table, {})
        self.assertEqual(self.host.bundles, 0)

    async def test_stats_filters_and_loose_delete(self):
        mine = _flows(6)
        other = _flows(4, port=100, cookie_base=0xBEEF << 48)
        bundle = self.switch.bundle()
        for f in sorted(mine | other):
            bundle.add_flow_mod(f, _codec.ADD)
        await bundle.commit()
        agg = await self.switch.multipart(_parser.OFPAggregateStatsRequest(
            self.switch.datapath, 0, _ofp.OFPTT_ALL, _ofp.OFPP_ANY, _ofp.OFPG_ANY,
            COOKIE_MARK, COOKIE_MASK, _parser.OFPMatch()))
        self.assertEqual(agg[0].flow_count, 6)
        in_table_1 = await self.switch.flow_stats(table_id=1)
        self.assertEqual(len(in_table_1), len([f for f in mine | other if f.table == 1]))
        by_port = await self.switch.flow_stats(match=_parser.OFPMatch(in_port=100))
        self.assertEqual([e.cookie for e in by_port], [0xBEEF << 48])
        # a loose delete by cookie mask removes exactly the foreign ones
        await self.switch.send_checked(_parser.OFPFlowMod(
            self.switch.datapath, cookie=0xBEEF << 48, cookie_mask=COOKIE_MASK, table_id=_ofp.OFPTT_ALL,
            command=_ofp.OFPFC_DELETE, out_port=_ofp.OFPP_ANY, out_group=_ofp.OFPG_ANY,
            match=_parser.OFPMatch()))
        self.assertEqual(self.host.table, entries_of(mine, self.host.interner))

    async def test_counts_first_on_a_new_connection(self):
        """A new sync whose desired set agrees with the switch's counts reads nothing
        and sends nothing; its belief is unverified until :meth:`FlowSync.verify` reads
        the switch back, which repairs a flow modified in place."""
        flows = _flows(40)
        await FlowSync(self.switch).converge(frozenset(flows))
        sync = FlowSync(self.switch)
        reads, mods = self.host.flow_reads, self.host.flow_mods
        self.assertEqual((await sync.converge(frozenset(flows))).changed, 0)
        self.assertEqual((self.host.flow_reads, self.host.flow_mods), (reads, mods))
        self.assertEqual((sync.count_adoptions, sync.verified, sync.reads), (1, False, 0))
        key = sorted(self.host.table)[0]
        self.host.table[key] = (self.host.table[key][0], self.host.table[sorted(self.host.table)[1]][1])
        self.host.changed()
        sync._full = lambda: frozenset(flows)  # what the controller's apply() leaves there
        result = await sync.verify()
        # one read to compare (FlowSync.check), one by the pass that repairs
        self.assertEqual((result.modified, sync.verified, sync.reads), (1, True, 2))
        self.assertEqual(self.host.table, entries_of(flows, self.host.interner))

    async def test_many_changes_held_back_become_a_full_diff_not_a_read(self):
        """Held back past its bound (more entries than the belief has flows, as in a
        lease lapse during a fill), the work becomes a diff of the whole desired set
        against the belief: the switch is not read back, and ends up exact."""
        first = _flows(40)
        sync = FlowSync(self.switch)
        await sync.converge(frozenset(first))
        sync.HOLD_MIN = 8
        second = {Flow(f.table, f.priority, f.match, (("output", 9),), f.goto, f.cookie)
                  for f in first if f.cookie & 1} | {f for f in first if not f.cookie & 1}
        second |= _flows(30, port=500)
        delta = {f.identity: f for f in second if f not in first}
        self.assertGreater(len(delta), len(first))
        for ident, f in delta.items():
            sync.hold({ident: f})
        self.assertIsNotNone(sync.installed, "the belief was dropped")
        self.assertEqual(sync._held, {}, "the held entries were kept past the bound")
        reads, mods = self.host.flow_reads, self.host.flow_mods
        result = await sync.apply({}, lambda: frozenset(second))
        self.assertEqual(self.host.flow_reads, reads, "the switch was read back")
        self.assertEqual(result.changed, len(delta))
        self.assertEqual(self.host.flow_mods - mods, len(delta))
        self.assertEqual(self.host.table, entries_of(second, self.host.interner))

    def _hold_reads(self):
        """Make the switch's flow reads wait: the request goes out and is answered at
        once (the switch's table as it is then), the answer is handed over only when
        ``gate`` fires; ``answered`` fires when the switch has answered."""
        real = type(self.switch).read_flows_raw.__get__(self.switch)
        gate, answered = defer.Deferred(), defer.Deferred()

        async def held(*args):
            bodies = await real(*args)
            answered.callback(None)
            await gate
            return bodies
        self.switch.read_flows_raw = lambda *args: defer.ensureDeferred(held(*args))
        return gate, answered

    async def test_check_compares_flow_by_flow_while_passes_go_on(self):
        """FlowSync.check reads the switch and compares without holding up a pass: a
        delta sent while the read is on its way is applied at once, and what it sent
        is no difference (the read saw the table before it); a flow modified behind
        our back is one, and the next pass repairs it."""
        flows = sorted(_flows(40), key=lambda f: f.cookie)
        sync = FlowSync(self.switch)
        await sync.converge(frozenset(flows))
        self.assertTrue(await sync.check())
        gate, answered = self._hold_reads()
        checking = defer.ensureDeferred(sync.check())
        await answered
        new = Flow(table=7, priority=5, match=make_match(in_port=99), actions=(("output", 2),),
                   cookie=COOKIE_MARK | 0x77)
        moved = Flow(flows[1].table, flows[1].priority, flows[1].match, (("output", 4),),
                     flows[1].goto, flows[1].cookie)
        mods = self.host.flow_mods
        result = await sync.apply({flows[0].identity: None, moved.identity: moved, new.identity: new},
                                  lambda: None)
        self.assertEqual((result.added, result.modified, result.deleted), (1, 1, 1))
        self.assertEqual(self.host.flow_mods - mods, 3)
        self.assertFalse(checking.called, "the check ended before the read was handed over")
        gate.callback(None)
        self.assertTrue(await checking)
        self.assertIsNotNone(sync.installed)
        desired = frozenset([new, moved] + flows[2:])
        self.assertEqual(self.host.table, entries_of(desired, self.host.interner))

        # a flow changed behind our back while the read is held: a difference
        gate, answered = self._hold_reads()
        key = sorted(self.host.table)[5]
        self.host.table[key] = (self.host.table[key][0], self.host.table[sorted(self.host.table)[6]][1])
        self.host.changed()
        checking = defer.ensureDeferred(sync.check())
        await answered
        gate.callback(None)
        self.assertFalse(await checking)
        self.assertIsNone(sync.installed)
        del self.switch.read_flows_raw  # reads answer at once again
        result = await sync.apply({}, lambda: desired)
        self.assertEqual((result.added, result.modified, result.deleted), (0, 1, 0))
        self.assertEqual(self.host.table, entries_of(desired, self.host.interner))
        self.assertTrue(await sync.check())

    async def test_counts_first_takes_the_callers_counts(self):
        """With ``counts`` (the engine's, kept as its flows change), a reconnect's pass
        compares the switch's counts with them without walking the desired flows; counts
        that do not describe the switch make it read back."""
        flows = _flows(30)
        await FlowSync(self.switch).converge(frozenset(flows))
        table = {f.identity: f for f in flows}
        kinds: dict = {}
        ports: dict = {}
        for f in flows:
            kinds[(f.cookie >> 32) & 0xFFFF] = kinds.get((f.cookie >> 32) & 0xFFFF, 0) + 1
            port = dict(f.match).get("in_port")
            ports[port] = ports.get(port, 0) + 1

        def no_walk(*_args, **_kw):
            raise AssertionError("the desired flows were walked to count them")
        sync = FlowSync(self.switch)
        sync._desired_table = no_walk
        mods = self.host.flow_mods
        result = await sync.apply({}, lambda: table, counts=lambda: (kinds, ports))
        self.assertEqual((result.changed, sync.count_adoptions, sync.reads, self.host.flow_mods - mods),
                         (0, 1, 0, 0))
        self.assertEqual(sync.installed, table)
        wrong = dict(ports)
        wrong[next(iter(wrong))] += 1
        again = FlowSync(self.switch)
        again._desired_table = no_walk
        result = await again.apply({}, lambda: table, counts=lambda: (kinds, wrong))
        self.assertEqual((result.changed, again.count_adoptions, again.reads), (0, 0, 1))

    async def test_counts_first_reads_back_a_renumbered_port(self):
        """Same number of flows of each kind, but the port they match moved: the
        in_port counts disagree, so the switch is read back and corrected at once."""
        flows = _flows(12)
        await FlowSync(self.switch).converge(frozenset(flows))
        moved = frozenset(Flow(f.table, f.priority, tuple(("in_port", v + 1000) if k == "in_port" else (k, v)
                                                          for k, v in f.match), f.actions, f.goto, f.cookie)
                          for f in flows)
        sync = FlowSync(self.switch)
        result = await sync.converge(moved)
        self.assertEqual((result.added, result.deleted, sync.reads, sync.count_adoptions), (12, 12, 1, 0))
        self.assertTrue(sync.verified)
        self.assertEqual(self.host.table, entries_of(moved, self.host.interner))

    async def test_reconnects_keeping_its_table(self):
        await FlowSync(self.switch).converge(frozenset(_flows(4)))
        table = dict(self.host.table)
        again = defer.Deferred()
        self.waiters.append(again)
        self.switch.close("test: drop the switch")
        sw = await again
        self.assertIsNot(sw, self.switch)
        self.assertEqual(self.host.table, table)
        self.assertEqual(self.host.handshakes, 2)


class RegistrationFallbackTests(TestCase):
    """Without the ``registerHost`` route (404), the record is written to the store as
    netplugin used to write it."""

    timeout = 30

    async def test_store_record_when_the_route_is_absent(self):
        from twisted.web import resource, server
        from contiv_sdn.store import Store
        require_binary("redis-server")
        redis = RedisServer(appendonly=False).start()
        self.addCleanup(redis.stop)
        site = server.Site(resource.NoResource())
        port = reactor.listenTCP(0, site, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        store = await Store.connect(redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(store.close()))
        record = {"name": "h9", "vtepIP": "172.16.0.9", "dpid": 99, "bridge": "br-int",
                  "tunnelPort": "vxlan0", "uplinkPort": "", "mtu": 1500}
        from twisted.web.client import HTTPConnectionPool
        pool = HTTPConnectionPool(reactor, persistent=False)
        how = await register_host(record, f"http://127.0.0.1:{port.getHost().port}", store, pool=pool)
        self.assertEqual(how, "store")
        stored = await store.get("host", "h9")
        self.assertEqual({k: stored[k] for k in record}, record)
        self.assertEqual(stored["refresh"], 30.0)
        self.assertIsInstance(stored["updated"], int)


class SimHostSummaryTests(TestCase):
    """The aggregate summary the simulated switch answers counts from is kept in step
    by every flow_mod and undo (it used to be rebuilt after each change)."""

    def test_counts_follow_flow_mods_and_undo(self):
        import random

        from contiv_sdn.testing.simswitch import parse_flow_mod
        rng = random.Random(8)
        host = SimHost("summary", "172.16.0.9", reactor)
        pool = sorted(_flows(40) | _flows(30, port=5, cookie_base=COOKIE_MARK | (3 << 32))
                      | _flows(20, port=100, cookie_base=0xBEEF << 48))

        def match(port):
            f = Flow(table=0, priority=1, match=make_match(in_port=port) if port else ())
            data = _codec.encode_flow_mod(f, _codec.ADD, 1)
            mlen = int.from_bytes(data[50:52], "big")
            return host.interner.match(data[48:48 + (mlen + 7) // 8 * 8])

        asks = [(cookie, mask, match(port))
                for cookie, mask in ((COOKIE_MARK, COOKIE_MASK), (0xBEEF << 48, COOKIE_MASK),
                                     (COOKIE_MARK | (3 << 32), COOKIE_MASK | (0xFFFF << 32)))
                for port in (None, 3, 7, 100, 101)]

        def counts():
            return ([host.count(_ofp.OFPTT_ALL, m, c, k) for c, k, m in asks],
                    [len(host._selected(_ofp.OFPTT_ALL, m, c, k)) for c, k, m in asks])

        for step in range(300):
            touched = []
            for _ in range(rng.randint(1, 4)):
                f = rng.choice(pool)
                cmd = rng.choice([_codec.ADD, _codec.ADD, _codec.MODIFY_STRICT, _codec.DELETE_STRICT])
                host.apply(parse_flow_mod(_codec.encode_flow_mod(f, cmd, 1), host.interner), touched)
            if rng.random() < 0.3:
                host.undo(touched)
            summarized, scanned = counts()
            self.assertEqual(summarized, scanned, f"step {step}")
