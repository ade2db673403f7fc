"""FlowSync against a real OVS: only the difference is sent, atomically, and right flows keep counting."""

from __future__ import annotations

from twisted.internet.defer import Deferred, gatherResults
from twisted.trial import unittest

from contiv_sdn.openflow import codec
from contiv_sdn.openflow.protocol import BundleError
from contiv_sdn.openflow.sync import FlowSync, SyncResult
from contiv_sdn.pipeline.flow import COOKIE_MARK, COOKIE_MASK, Flow, make_match
from contiv_sdn.testing import require_binary, require_root

# eth 02:..:01 <- 02:..:02, IPv4 10.1.0.1 -> 10.1.<x>.<y>, UDP: filled in by packet()
_ETH = "020000000001" "020000000002" "0800"


def packet(dst: str) -> str:
    a, b, c, d = (int(x) for x in dst.split("."))
    ip = f"4500001c00004000401100000a010001{a:02x}{b:02x}{c:02x}{d:02x}"
    return _ETH + ip + "303930390008" + "0000"


A = Flow(table=0, priority=100, match=make_match(eth_type=0x800, ipv4_dst="10.1.0.5"), note="A")
B = Flow(table=0, priority=90, match=make_match(eth_type=0x800, ipv4_dst=("10.1.0.0", "255.255.0.0")),
         goto=1, note="B")
C = Flow(table=1, priority=0, note="C")
D = Flow(table=1, priority=10, match=make_match(reg0=7), actions=(("output", 1),), note="D")
B2 = Flow(table=0, priority=90, match=B.match, actions=(("set_field", "reg0", 7),), goto=1, note="B2")


class SyncTests(unittest.TestCase):
    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("ofp")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    def run_async(self, coro):
        return Deferred.fromCoroutine(coro)

    async def stats(self, sw, cookie=COOKIE_MARK, mask=COOKIE_MASK):
        """identity -> (flow, packets, duration in seconds)"""
        entries = await sw.flow_stats(cookie, mask)
        out = {}
        for e in entries:
            f = codec.flow_from_stats(e)
            out[f.identity] = (f, e.packet_count, e.duration_sec + e.duration_nsec / 1e9)
        return out

    async def inject(self, tag: str, dst: str, n: int = 3):
        for _ in range(n):
            await self.lab.ofctl("packet-out", self.lab.name(tag),
                                 f"in_port=controller packet={packet(dst)} actions=table")

    def test_converge_sends_only_the_difference_and_keeps_counters(self):
        async def go():
            sw = await self.lab.add_switch("cv")
            fs = FlowSync(sw)
            r = await fs.converge({A, B, C})
            self.assertEqual(r, SyncResult(added=3))
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), {A, B, C})
            await self.inject("cv", "10.1.0.5", 3)  # A
            await self.inject("cv", "10.1.9.9", 2)  # B then C
            before = await self.stats(sw)
            self.assertEqual((before[A.identity][1], before[B.identity][1], before[C.identity][1]), (3, 2, 2))

            # the same set again: nothing is sent at all
            xid = sw._xid
            self.assertEqual(await fs.converge({A, B, C}), SyncResult())
            self.assertEqual((sw._xid, fs.bundles_sent), (xid, 1))

            # a changed set: B modified, C deleted, D added, A untouched
            r = await fs.converge([A, B2, D])
            self.assertEqual(r, SyncResult(added=1, modified=1, deleted=1))
            after = await self.stats(sw)
            self.assertEqual({v[0] for v in after.values()}, {A, B2, D})
            self.assertEqual(after[A.identity][1], 3)  # untouched: counts kept
            self.assertEqual(after[B.identity][1], 2)  # MODIFY_STRICT: counts kept
            self.assertGreaterEqual(after[A.identity][2], before[A.identity][2])  # not re-added
            self.assertGreaterEqual(after[B.identity][2], before[B.identity][2])
            await self.inject("cv", "10.1.0.5", 1)
            self.assertEqual((await self.stats(sw))[A.identity][1], 4)  # and keeps counting
        return self.run_async(go())

    def test_cookie_change_replaces_flow_and_keeps_counters(self):
        async def go():
            sw = await self.lab.add_switch("ck")
            fs = FlowSync(sw)
            await fs.converge({A})
            await self.inject("ck", "10.1.0.5", 2)
            a2 = Flow(A.table, A.priority, A.match, A.actions, A.goto, cookie=COOKIE_MARK | 0x42)
            self.assertEqual(await fs.converge({a2}), SyncResult(modified=1))
            after = await self.stats(sw)
            self.assertEqual(after[A.identity][0].cookie, COOKIE_MARK | 0x42)
            self.assertEqual(after[A.identity][1], 2)
            self.assertEqual(await fs.converge({a2}), SyncResult())
        return self.run_async(go())

    def test_reconnect_reads_instead_of_flushing(self):
        async def go():
            dpid = self.lab.next_dpid()
            sw = await self.lab.add_switch("rc", dpid=dpid)
            br = self.lab.name("rc")
            await FlowSync(sw).converge({A, B, C})
            await self.inject("rc", "10.1.0.5", 3)
            # behind our back: a foreign flow, and a stale one carrying our cookie mark
            await self.lab.ofctl("add-flow", br, "cookie=0x1234,table=0,priority=50,ip,nw_dst=10.9.0.1,actions=drop")
            await self.lab.ofctl("add-flow", br, f"cookie={COOKIE_MARK | 1:#x},table=0,priority=40,ip,"
                                                 "nw_dst=10.9.0.2,actions=drop")
            before = await self.stats(sw)
            again = self.lab.wait_switch(dpid)
            sw.close("test: drop the controller connection")
            sw2 = await again
            self.assertIsNot(sw2, sw)
            fs2 = FlowSync(sw2)
            r = await fs2.converge({A, B, C})
            self.assertEqual(r, SyncResult(deleted=1))
            self.assertEqual(fs2.reads, 1)
            after = await self.stats(sw2)
            self.assertEqual({v[0] for v in after.values()}, {A, B, C})
            self.assertEqual(after[A.identity][1], 3)
            self.assertGreaterEqual(after[A.identity][2], before[A.identity][2])
            foreign = await self.stats(sw2, 0x1234, (1 << 64) - 1)
            self.assertEqual(len(foreign), 1)
        return self.run_async(go())

    def test_failed_commit_changes_nothing_and_rereads(self):
        async def go():
            sw = await self.lab.add_switch("fl")
            fs = FlowSync(sw)
            await fs.converge({A, B, C})
            bad = Flow(table=3, priority=1, goto=2, note="goto backwards")
            try:
                await fs.converge({A, B2, D, bad})
            except BundleError as e:
                self.assertEqual(len(e.errors), 1)
                self.assertIn("table=3", str(e))
            else:
                self.fail("a bundle with a bad flow was committed")
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), {A, B, C})
            self.assertIsNone(fs.installed)
            self.assertEqual(await fs.converge({A, B2, D}), SyncResult(added=1, modified=1, deleted=1))
            self.assertEqual(fs.reads, 2)
        return self.run_async(go())

    def test_concurrent_converges_coalesce(self):
        async def go():
            sw = await self.lab.add_switch("co")
            fs = FlowSync(sw)
            d1 = Deferred.fromCoroutine(fs.converge({A}))
            d2 = Deferred.fromCoroutine(fs.converge({A, B}))
            d3 = Deferred.fromCoroutine(fs.converge({A, B2, D}))
            r1, r2, r3 = await gatherResults([d1, d2, d3])
            self.assertEqual(r1, SyncResult(added=1))
            self.assertEqual(r2, r3)  # the superseded caller gets the newer pass's result
            self.assertEqual(r3, SyncResult(added=2))
            self.assertEqual(fs.bundles_sent, 2)
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), {A, B2, D})
        return self.run_async(go())

    def test_large_diff_in_batches_is_one_bundle(self):
        async def go():
            sw = await self.lab.add_switch("lg")
            fs = FlowSync(sw, batch=300)
            flows = {Flow(table=2, priority=100, match=make_match(reg1=i, eth_type=0x800),
                          actions=(("output", 1 + i % 7),)) for i in range(1500)}
            self.assertEqual(await fs.converge(flows), SyncResult(added=1500))
            changed = {f if f.match[1][1] % 100 else Flow(f.table, f.priority, f.match, (("output", 9),))
                       for f in flows}
            self.assertEqual(await fs.converge(changed), SyncResult(modified=15))
            self.assertEqual(fs.bundles_sent, 2)
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), changed)
        return self.run_async(go())

    def test_flow_without_our_cookie_is_refused(self):
        async def go():
            sw = await self.lab.add_switch("fc")
            fs = FlowSync(sw)
            foreign = Flow(A.table, A.priority, A.match, cookie=0x1234)
            with self.assertRaises(ValueError):
                await fs.converge({foreign})
            await fs.converge({B})
            with self.assertRaises(ValueError):
                await fs.converge({B, foreign})
            self.assertEqual(await sw.read_flows(0, 0), [B])
        return self.run_async(go())

    def test_duplicate_identity_is_refused(self):
        async def go():
            sw = await self.lab.add_switch("dp")
            fs = FlowSync(sw)
            other = Flow(A.table, A.priority, A.match, (("output", 3),))
            # first push streams: the bundle is discarded, nothing is committed
            with self.assertRaises(ValueError):
                await fs.converge((A, other))
            self.assertEqual(fs.bundles_sent, 0)
            self.assertEqual(await sw.read_flows(COOKIE_MARK, COOKIE_MASK), [])
            await fs.converge({B})
            # with flows installed, the diff is computed first: refused before anything is sent
            xid = sw._xid
            with self.assertRaises(ValueError):
                await fs.converge((A, other, B))
            self.assertEqual(sw._xid, xid)  # nothing sent, the belief still stands
            self.assertEqual(fs.bundles_sent, 1)
            self.assertEqual(await sw.read_flows(COOKIE_MARK, COOKIE_MASK), [B])
        return self.run_async(go())


class DeltaAndAuditTests(unittest.TestCase):
    """Deltas touch only the named entries; the count audit finds what changed behind our back."""

    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("ofd")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    def test_a_delta_sends_only_its_entries(self):
        async def go():
            sw = await self.lab.add_switch("dl")
            fs = FlowSync(sw)
            full_calls = []

            def full():
                full_calls.append(1)
                return frozenset({A, B, C})

            # unknown belief: the delta cannot be applied, the whole set is read and sent
            self.assertEqual(await fs.apply({D.identity: D}, full), SyncResult(added=3))
            self.assertEqual(len(full_calls), 1)
            # known belief: B modified, C deleted, D added, A not looked at; full() not called
            r = await fs.apply({B.identity: B2, C.identity: None, D.identity: D}, full)
            self.assertEqual(r, SyncResult(added=1, modified=1, deleted=1))
            self.assertEqual(len(full_calls), 1)
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), {A, B2, D})
            # an entry already as asked, or deleting what is not there: nothing sent
            bundles = fs.bundles_sent
            self.assertEqual(await fs.apply({A.identity: A, C.identity: None}, full), SyncResult())
            self.assertEqual(fs.bundles_sent, bundles)
            # deltas queued while a bundle is in flight are merged: the later value wins
            d1 = fs.apply({C.identity: C}, full)
            d2 = fs.apply({C.identity: None, B.identity: B}, full)
            await gatherResults([Deferred.fromCoroutine(d1), Deferred.fromCoroutine(d2)])
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), {A, B, D})
        return Deferred.fromCoroutine(go())

    def test_the_count_audit_reads_back_only_a_switch_that_differs(self):
        async def go():
            sw = await self.lab.add_switch("au")
            fs = FlowSync(sw)
            await fs.converge({A, B, C})
            self.assertEqual(await sw.flow_count(COOKIE_MARK, COOKIE_MASK), 3)
            self.assertTrue(await fs.audit())
            self.assertEqual(fs.reads, 1)  # the first converge's read only: the audit read no flow
            await self.lab.ofctl("del-flows", self.lab.name("au"), "table=1")
            self.assertFalse(await fs.audit())
            self.assertIsNone(fs.installed)
            r = await fs.apply({}, lambda: frozenset({A, B, C}))
            self.assertEqual((r, fs.reads), (SyncResult(added=1), 2))
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), {A, B, C})
            self.assertTrue(await fs.audit())
            # a flow modified in place keeps the count: only a full check (in rotation) finds it
            await self.lab.ofctl("mod-flows", self.lab.name("au"), "table=0,priority=90,ip,nw_dst=10.1.0.0/16 "
                                 "actions=drop")
            self.assertTrue(await fs.audit())
            self.assertFalse(await fs.audit(full=True))
            r = await fs.apply({}, lambda: frozenset({A, B, C}))
            self.assertEqual(r, SyncResult(modified=1))
        return Deferred.fromCoroutine(go())


class GroupSyncTests(unittest.TestCase):
    """FlowSync with service groups on a real OVS: groups before the flows that use
    them, deletes after; a restarted sync sends nothing when all is right; foreign
    groups untouched; the audit finds a group changed behind our back."""

    def setUp(self):
        require_root()
        require_binary("ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl", "ovs-appctl")
        from contiv_sdn.openflow.testing import SwitchLab
        self.lab = SwitchLab("ofs")
        self.addCleanup(lambda: Deferred.fromCoroutine(self.lab.stop()))
        return Deferred.fromCoroutine(self.lab.start())

    @staticmethod
    def _services(n_web: int, with_db: bool = True):
        from contiv_sdn.pipeline import servicelb as S
        web = S.ServicePort("t:web", "t", 5, (1,), 1, "10.1.1.100", 6, 80, 8080, tuple(
            S.Provider(f"10.1.1.{i + 2}", f"02:00:00:00:00:{i + 2:02x}", 1, "other", f"p{i}") for i in range(n_web)))
        db = S.ServicePort("t:db", "t", 5, (1,), 1, "10.1.1.101", 17, 53, 53,
                           (S.Provider("10.1.1.9", "02:00:00:00:00:09", 1, "other", "p9"),))
        return S.host_services([web, db] if with_db else [web], "h", {})

    async def _groups(self, sw):
        return {g.group_id: g for g in codec.groups_from_desc(await sw.group_desc())}

    def test_groups_follow_the_desired_set_and_a_restart_sends_nothing(self):
        async def go():
            sw = await self.lab.add_switch("gs")
            br = self.lab.bridges[0]
            await self.lab.ofctl("-O", "OpenFlow13", "add-group", br, "group_id=7,type=select,bucket=output:1")
            flows, groups = self._services(2)
            sync = FlowSync(sw)
            r = await sync.converge(frozenset(flows), groups=lambda: frozenset(groups))
            self.assertEqual((r.added, r.groups), (len(flows), 2))
            have = await self._groups(sw)
            self.assertEqual({g: have[g] for g in have if g != 7}, {g.group_id: g for g in groups})
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), set(flows))
            # a netmaster restart: a new sync reads both back and sends nothing
            again = FlowSync(sw)
            r = await again.converge(frozenset(flows), groups=lambda: frozenset(groups))
            self.assertEqual((r.changed, r.groups, again.group_mods_sent, again.bundles_sent), (0, 0, 0, 0))
            # a provider leaves web, db goes: web MODIFY first, db's flows then its group
            flows2, groups2 = self._services(1, with_db=False)
            r = await again.apply({f.identity: None for f in set(flows) - set(flows2)}
                                  | {f.identity: f for f in set(flows2) - set(flows)},
                                  lambda: frozenset(flows2), groups=lambda: frozenset(groups2))
            self.assertEqual(r.groups, 2)
            have = await self._groups(sw)
            self.assertEqual(sorted(have), sorted([7, groups2[0].group_id]))
            self.assertEqual(have[groups2[0].group_id], groups2[0])
            self.assertEqual(len(have[7].buckets), 1, "a foreign group is left alone")
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), set(flows2))
            # a group changed behind our back: the audit sees it, the next pass repairs it
            self.assertTrue(await again.audit())
            await self.lab.ofctl("-O", "OpenFlow13", "del-groups", br, f"group_id={groups2[0].group_id}")
            self.assertFalse(await again.audit())
            r = await again.apply({}, lambda: frozenset(flows2), groups=lambda: frozenset(groups2))
            self.assertEqual((await self._groups(sw))[groups2[0].group_id], groups2[0])
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), set(flows2))
        return Deferred.fromCoroutine(go())

    def test_groups_are_looked_at_only_when_due(self):
        """A delta without ``groups`` leaves the groups alone (no desired set built, no
        diff); one with ``groups`` brings them to it; a failed pass leaves them due."""
        async def go():
            sw = await self.lab.add_switch("gd")
            flows, groups = self._services(2)
            asked = []

            def desired():
                asked.append(1)
                return frozenset(groups)
            sync = FlowSync(sw)
            await sync.converge(frozenset(flows), groups=desired)
            self.assertEqual(len(asked), 1)
            extra = Flow(table=0, priority=3, match=make_match(in_port=77), note="extra")
            await sync.apply({extra.identity: extra}, lambda: frozenset(flows) | {extra})
            self.assertEqual(len(asked), 1, "a delta without groups built the desired groups")
            await sync.apply({extra.identity: None}, lambda: frozenset(flows), groups=desired)
            self.assertEqual(len(asked), 2)
            bad = Flow(table=3, priority=1, goto=2, note="goto backwards")
            with self.assertRaises(BundleError):
                await sync.apply({bad.identity: bad}, lambda: frozenset(flows), groups=desired)
            self.assertEqual(len(asked), 3)
            # the failed pass left the groups due: the next pass looks at them, groups or not
            await sync.apply({}, lambda: frozenset(flows))
            self.assertEqual(len(asked), 4)
            await sync.apply({}, lambda: frozenset(flows))
            self.assertEqual(len(asked), 4)
            self.assertEqual(await self._groups(sw), {g.group_id: g for g in groups})
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), set(flows))
        return Deferred.fromCoroutine(go())

    def test_to_ofctl_of_nat_flows_is_what_ovs_ofctl_takes(self):
        """``Flow.to_ofctl`` prints ct_nat as ovs-ofctl writes it; OVS reads it back as the Flow."""
        async def go():
            sw = await self.lab.add_switch("ot")
            br = self.lab.bridges[0]
            flows, groups = self._services(2)
            await FlowSync(sw).converge((), groups=lambda: frozenset(groups))
            nat = [f for f in flows if any(a[0] == "ct_nat" for a in f.actions) or f.table == 27]
            self.assertTrue(nat)
            for f in nat:
                await self.lab.ofctl("-O", "OpenFlow13", "add-flow", br, f.to_ofctl())
            self.assertEqual(set(await sw.read_flows(COOKIE_MARK, COOKIE_MASK)), set(nat))
        return Deferred.fromCoroutine(go())
