"""The incremental controller against a real Redis and a real OVS: work follows the change.

A change the compiler cannot see (a host's refresh, a network's ``epCount``, an
endpoint's labels) is noticed and costs nothing more: no compile, no fragment
built, no bundle sent.  One endpoint changed builds that endpoint's fragments
only (counted through the engine's ``on_build`` hook, not timed) and sends its
switch only its flows; a port appearing for an endpoint builds that endpoint's
local fragment and its network's flood list.
"""

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from contiv_sdn.controller.service import Controller
from contiv_sdn.openflow.sync import Following
from contiv_sdn.testing.wait import wait_for
from tests.test_ctrl_service import start_redis_ovs_store

DPID = 0xC7C1
NET = {"netId": 3, "encap": "vxlan", "vni": 1001, "vlan": 0, "subnet": "20.1.1.0/24", "gateway": "",
       "epCount": 3}


def _ep(i: int, host: str, **over):
    return dict({"id": f"ep{i}", "network": "default:net1", "group": "", "ipAddress": f"20.1.1.{i}",
                 "macAddress": f"02:02:14:01:01:{i:02x}", "homingHost": host, "intfName": f"cvi{i}"}, **over)


class IncrementalControllerTests(TestCase):
    timeout = 120

    async def _setUp(self):
        await start_redis_ovs_store(self, "ctrl-inc-")
        s = self.store
        await s.put_state("obj:global", "global", {"name": "global", "fwdMode": "bridge", "arpMode": "proxy"})
        await s.put_state("tenant", "default", {"vrfId": 1})
        await s.put_state("obj:network", "default:net1", {"encap": "vxlan", "subnet": "20.1.1.0/24",
                                                           "tenantName": "default", "networkName": "net1"})
        await s.put_state("network", "default:net1", NET)
        await s.put_state("host", "h1", {"name": "h1", "vtepIP": "192.168.78.1", "dpid": DPID})
        await s.put_state("host", "h2", {"name": "h2", "vtepIP": "192.168.78.2", "dpid": DPID + 1})
        for i, host in ((1, "h1"), (2, "h1"), (3, "h2")):
            await s.put_state("endpoint", f"ep{i}", _ep(i, host))

        def bridge():
            self.ovs.add_bridge("br-int", dpid=DPID, controllers=[f"tcp:127.0.0.1:{self.port}"])
            self.ovs.vsctl("add-port", "br-int", "vxlan0", "--", "set", "interface", "vxlan0",
                           "type=vxlan", "options:remote_ip=flow", "options:key=flow")
            for name in ("cvi1", "cvi2"):
                self.ovs.vsctl("add-port", "br-int", name, "--", "set", "interface", name, "type=internal")
        await threads.deferToThread(bridge)
        self.ctl = Controller(self.store, listen=f"tcp:{self.port}:interface=127.0.0.1")
        self.ctl.startService()
        self.addCleanup(self.ctl.stopService)
        await wait_for(lambda: any("20.1.1.3" in f for f in self._our_flows()), timeout=30,
                       what="initial flows")
        await self.ctl.when_idle()
        self.built = []
        self.ctl.engine.on_build = lambda kind, key: self.built.append((kind, key))
        self.sync = self.ctl.registry.sync_of(DPID)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    def _our_flows(self):
        return [f.split(" actions=")[0].split("cookie=")[1].split(",")[0] + " " + f.split(" priority=")[1]
                for f in self.ovs.ofctl("dump-flows", "br-int").splitlines() if "cookie=0xc0de" in f]

    async def _after_runs(self, before: int) -> None:
        """Wait until the notifications caused a run, then until it finished."""
        await wait_for(lambda: self.ctl.runs > before, timeout=10, what="a controller run")
        await self.ctl.when_idle()

    async def test_changes_no_flow_reads_cost_no_compile_and_no_flow_mod(self):
        ctl, s = self.ctl, self.store
        runs, compiles, bundles = ctl.runs, ctl.compiles, self.sync.bundles_sent
        flows = await threads.deferToThread(self._our_flows)
        await s.put_state("host", "h1", {"name": "h1", "vtepIP": "192.168.78.1", "dpid": DPID,
                                         "lastRefresh": "2024-01-01T00:00:30Z"})
        await s.put_state("host", "h2", {"name": "h2", "vtepIP": "192.168.78.2", "dpid": DPID + 1,
                                         "lastRefresh": "2024-01-01T00:00:31Z"})
        await s.put_state("network", "default:net1", dict(NET, epCount=4))
        await self._after_runs(runs)
        self.assertGreater(ctl.runs, runs)  # the changes were read ...
        self.assertEqual(ctl.compiles, compiles)  # ... and seen to change nothing the compiler reads
        self.assertEqual(self.built, [])
        self.assertEqual(self.sync.bundles_sent, bundles)
        self.assertEqual(await threads.deferToThread(self._our_flows), flows)
        # labels feed the compiler (Kubernetes identities, service providers), but with
        # no NetworkPolicy and no service selecting them a label edit builds nothing
        runs = ctl.runs
        await s.put_state("endpoint", "ep3", _ep(3, "h2", labels={"app": "web"}))
        await self._after_runs(runs)
        self.assertEqual(self.built, [])
        self.assertEqual(self.sync.bundles_sent, bundles)
        self.assertEqual(await threads.deferToThread(self._our_flows), flows)

    async def test_one_endpoint_change_builds_only_its_own_fragments(self):
        ctl, s = self.ctl, self.store
        runs, compiles, bundles = ctl.runs, ctl.compiles, self.sync.bundles_sent
        # a remote endpoint moves to another address: one remote fragment, shared
        await s.put_state("endpoint", "ep3", _ep(3, "h2", ipAddress="20.1.1.33",
                                                 macAddress="02:02:14:01:01:33"))
        await self._after_runs(runs)
        self.assertEqual(self.built, [("endpoint", "ep3")])
        self.assertEqual(ctl.compiles, compiles + 1)
        self.assertEqual(self.sync.bundles_sent, bundles + 1)
        flows = await threads.deferToThread(self.ovs.ofctl, "dump-flows", "br-int")
        self.assertIn("20.1.1.33", flows)
        self.assertNotIn("20.1.1.3,", flows)
        self.assertNotIn("02:02:14:01:01:03", flows)

        # a local endpoint whose port appears later: its local fragment, then its
        # network's flood list on this host when the port comes up
        self.built.clear()
        runs = ctl.runs
        await s.put_state("endpoint", "ep4", _ep(4, "h1"))
        await self._after_runs(runs)
        self.assertEqual(sorted(set(self.built)), [("endpoint", "ep4")])
        self.built.clear()
        runs = ctl.runs
        await threads.deferToThread(self.ovs.vsctl, "add-port", "br-int", "cvi4", "--", "set",
                                    "interface", "cvi4", "type=internal")
        await wait_for(lambda: any("02:02:14:01:01:04" in f for f in
                                   self.ovs.ofctl("dump-flows", "br-int").splitlines()),
                       timeout=20, what="ep4's local flows")
        await ctl.when_idle()
        self.assertEqual(sorted(set(self.built)), [("endpoint", "ep4"), ("network", "default:net1")])

    async def test_the_belief_follows_the_engine_without_a_map_of_its_own(self):
        """Once a pass brought the switch to the engine's desired set, its sync keeps no
        identity -> flow map: the belief is the engine's flows for the host except what
        is not sent yet (sync.Following), and it agrees with the switch flow by flow."""
        ctl, s = self.ctl, self.store
        belief = self.sync.installed
        self.assertIsInstance(belief, Following)
        self.assertEqual(belief.diff, {})
        self.assertEqual(belief.table(), ctl.engine.table("h1"))
        runs = ctl.runs
        await s.put_state("endpoint", "ep3", _ep(3, "h2", ipAddress="20.1.1.33", macAddress="02:02:14:01:01:33"))
        await s.put_state("endpoint", "ep5", _ep(5, "h2"))
        await s.put_state("endpoint", "ep2", _ep(2, "h2"))  # local -> remote
        await self._after_runs(runs)
        self.assertIs(self.sync.installed, belief)
        self.assertEqual(belief.diff, {}, "everything sent: nothing held apart from the engine")
        self.assertEqual(len(belief), len(ctl.engine.table("h1")))
        flows = await threads.deferToThread(self.ovs.ofctl, "dump-flows", "br-int")
        self.assertIn("20.1.1.5", flows)
        self.assertIs(await self.sync.check(), True, "the switch holds exactly the belief")
        self.assertIs(await self.sync.audit(), True)

    async def test_a_disconnected_switch_s_sync_stops_following(self):
        """A retired sync must not keep receiving the engine's changes (nor be kept
        alive by them) until some new connection of its host follows."""
        ctl = self.ctl
        self.assertIs(ctl._following.get("h1"), self.sync)
        await threads.deferToThread(self.ovs.vsctl, "del-controller", "br-int")
        await wait_for(lambda: ctl.registry.sync_of(DPID) is None, timeout=30, what="the switch to go")
        self.assertNotIn("h1", ctl._following)
        self.assertFalse(isinstance(self.sync.installed, Following),
                         "the retired sync still follows the engine")

    async def test_a_run_that_leaves_many_young_objects_freezes_them(self):
        """The collector is off while the engine runs; what a big run leaves in the young
        generation is frozen out of the collector's walks (Controller.FREEZE_YOUNG), or
        the next young collection walks it all on the reactor."""
        import gc

        ctl, s = self.ctl, self.store
        self.addCleanup(gc.unfreeze)
        frozen = gc.get_freeze_count()
        ctl.FREEZE_YOUNG = 10 ** 9
        runs = ctl.runs
        await s.put_state("endpoint", "ep6", _ep(6, "h2"))
        await self._after_runs(runs)
        self.assertEqual(gc.get_freeze_count(), frozen, "a small run froze objects")
        ctl.FREEZE_YOUNG = 1
        runs = ctl.runs
        await s.put_state("endpoint", "ep7", _ep(7, "h2"))
        await self._after_runs(runs)
        self.assertGreater(gc.get_freeze_count(), frozen)

    def test_a_long_full_collection_freezes_at_once(self):
        """A full collection past GC_FREEZE_PAUSE freezes what survived before anything
        else runs: a freeze left for the next reactor turn let a long stretch of
        allocations run full collection after full collection first."""
        import gc

        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        self.ctl.GC_FREEZE_PAUSE = 0.0
        gc.collect()
        self.assertGreater(gc.get_freeze_count(), 0, "nothing frozen in the collection's own turn")
