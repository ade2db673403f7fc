"""The controller against a real Redis and a real OVS: state in, flows on the switch.

No lab here: one private OVS in the root namespace whose br-int connects to the
controller on loopback, with internal ports standing in for endpoint veths.  It
proves the glue (store -> snapshot -> compiler -> sync) and restart behaviour
without namespaces; the lab e2e tests prove the packets.
"""

import re
import tempfile

from twisted.internet import defer, reactor, task, threads
from twisted.trial.unittest import TestCase

from contiv_sdn.controller.service import Controller
from contiv_sdn.lab.ovs import OvsInstance
from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary, require_root

DPID = 0xC7A1


async def _wait_for(predicate, timeout=20.0, what="condition"):
    deadline = reactor.seconds() + timeout
    while True:
        value = await threads.deferToThread(predicate)
        if value:
            return value
        if reactor.seconds() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await task.deferLater(reactor, 0.1, lambda: None)


class ControllerWithOvsTests(TestCase):
    timeout = 120

    async def _setUp(self):
        require_root()
        require_binary("ovs-vswitchd", "redis-server")
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.ovs = OvsInstance(tempfile.mkdtemp(prefix="ctrl-ovs-"))
        await threads.deferToThread(self.ovs.start)
        self.addCleanup(lambda: self.ovs.stop(remove=True))
        self.port = free_tcp_port()
        self.store = await Store.connect(self.redis.url)
        self.addCleanup(lambda: defer.ensureDeferred(self.store.close()))
        await self._seed_state()

        def bridge():
            self.ovs.add_bridge("br-int", dpid=DPID, controllers=[f"tcp:127.0.0.1:{self.port}"])
            self.ovs.vsctl("add-port", "br-int", "vxlan0", "--", "set", "interface", "vxlan0",
                           "type=vxlan", "options:remote_ip=flow", "options:key=flow")
            for name in ("cvep1", "cvep2"):
                self.ovs.vsctl("add-port", "br-int", name, "--", "set", "interface", name,
                               "type=internal")
        await threads.deferToThread(bridge)

    def setUp(self):
        return defer.ensureDeferred(self._setUp())

    async def _seed_state(self):
        s = self.store
        await s.put_state("obj:global", "global", {"name": "global", "fwdMode": "bridge", "arpMode": "proxy"})
        await s.put_state("tenant", "default", {"vrfId": 1})
        await s.put_state("obj:network", "default:net1", {"encap": "vxlan", "subnet": "20.1.1.0/24",
                                                           "tenantName": "default", "networkName": "net1"})
        await s.put_state("network", "default:net1", {"netId": 3, "encap": "vxlan", "vni": 1001, "vlan": 0,
                                                       "localVlan": 1, "subnet": "20.1.1.0/24", "gateway": ""})
        await s.put_state("host", "h1", {"name": "h1", "vtepIP": "192.168.77.1", "dpid": DPID})
        await s.put_state("host", "h2", {"name": "h2", "vtepIP": "192.168.77.2", "dpid": DPID + 1})
        for i, host in ((1, "h1"), (2, "h1"), (3, "h2")):
            await s.put_state("endpoint", f"ep{i}", {
                "id": f"ep{i}", "network": "default:net1", "group": "", "ipAddress": f"20.1.1.{i}",
                "macAddress": f"02:02:14:01:01:{i:02x}", "homingHost": host, "intfName": f"cvep{i}"})

    def _start_controller(self):
        ctl = Controller(self.store, listen=f"tcp:{self.port}:interface=127.0.0.1")
        ctl.startService()
        return ctl

    def _flows(self):
        return self.ovs.dump_flows("br-int")

    def _our_flows(self):
        return [f for f in self.ovs.ofctl("dump-flows", "br-int").splitlines() if "cookie=0xc0de" in f]

    async def test_state_becomes_flows_and_deletes_follow(self):
        ctl = self._start_controller()
        self.addCleanup(ctl.stopService)
        await _wait_for(lambda: any("20.1.1.3" in f for f in self._our_flows()), what="flows for ep3")
        flows = await threads.deferToThread(self._our_flows)
        self.assertTrue(any("cvep1" in f or "02:02:14:01:01:01" in f for f in flows))
        # Remote endpoint ep3 on h2 is reached through the tunnel with its VNI and VTEP.
        self.assertTrue(any("192.168.77.2" in f and ("0x3e9" in f or "1001" in f) for f in flows), flows)
        # Deleting ep2 removes every flow that mentions it, and only those.
        before = len(flows)
        await self.store.del_state("endpoint", "ep2")
        await _wait_for(lambda: not any("02:02:14:01:01:02" in f or "20.1.1.2" in f
                                        for f in self._our_flows()), what="ep2 flows gone")
        after = await threads.deferToThread(self._our_flows)
        self.assertLess(len(after), before)
        self.assertTrue(any("20.1.1.1" in f for f in after))

    async def test_controller_restart_keeps_every_flow_in_place(self):
        ctl = self._start_controller()
        await _wait_for(lambda: any("20.1.1.3" in f for f in self._our_flows()), what="initial flows")
        await ctl.when_idle()
        await task.deferLater(reactor, 0.5, lambda: None)
        before = await threads.deferToThread(self._our_flows)
        await ctl.stopService()
        # Drop the switch connection too, as a killed netmaster would.
        for sw in list(ctl.registry.switches()):
            sw.transport.abortConnection()
        await task.deferLater(reactor, 1.0, lambda: None)
        ctl2 = self._start_controller()
        self.addCleanup(ctl2.stopService)
        await _wait_for(lambda: len(ctl2.registry.switches()) == 1, what="reconnect")
        await task.deferLater(reactor, 1.0, lambda: None)
        await ctl2.when_idle()
        after = await threads.deferToThread(self._our_flows)

        def durations(lines):
            out = {}
            for l in lines:
                key = re.sub(r"duration=[0-9.]+s, |n_packets=\d+, |n_bytes=\d+, |idle_age=\d+, ", "", l).strip()
                out[key] = float(re.search(r"duration=([0-9.]+)s", l).group(1))
            return out

        b, a = durations(before), durations(after)
        self.assertEqual(set(b), set(a), "the flow set changed across a controller restart")
        # No flow was deleted and re-added: every flow is at least as old as before.
        younger = [k for k in b if a[k] + 0.001 < b[k]]
        self.assertEqual(younger, [])

    async def test_ports_appearing_later_get_their_flows(self):
        ctl = self._start_controller()
        self.addCleanup(ctl.stopService)
        await self.store.put_state("endpoint", "ep4", {
            "id": "ep4", "network": "default:net1", "group": "", "ipAddress": "20.1.1.4",
            "macAddress": "02:02:14:01:01:04", "homingHost": "h1", "intfName": "cvep4"})
        await _wait_for(lambda: any("20.1.1.1" in f for f in self._our_flows()), what="initial flows")
        await ctl.when_idle()
        # ep4's port does not exist yet: no flow sends out of it.
        await threads.deferToThread(self.ovs.vsctl, "add-port", "br-int", "cvep4", "--", "set",
                                    "interface", "cvep4", "type=internal")
        ofport = int((await threads.deferToThread(
            self.ovs.vsctl, "get", "interface", "cvep4", "ofport")).strip())
        await _wait_for(lambda: any(f"in_port={ofport}" in f or "in_port=cvep4" in f
                                    for f in self._our_flows()), what="flows for the new port")

    async def test_audit_repairs_flows_deleted_behind_our_back(self):
        ctl = self._start_controller()
        self.addCleanup(ctl.stopService)
        await _wait_for(lambda: any("20.1.1.3" in f for f in self._our_flows()), what="initial flows")
        await ctl.when_idle()
        before = len(await threads.deferToThread(self._our_flows))
        await threads.deferToThread(self.ovs.ofctl, "del-flows", "br-int")
        self.assertEqual(await threads.deferToThread(self._our_flows), [])
        ctl.audit()
        await _wait_for(lambda: len(self._our_flows()) == before, what="flows restored by the audit")
