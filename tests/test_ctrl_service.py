"""The controller against a real Redis and a real OVS: state in, flows on the switch.

No lab here: one private OVS in the root namespace whose br-int connects to the
controller on loopback, with internal ports standing in for endpoint veths.  It
proves the glue (store -> snapshot -> compiler -> sync) and restart behaviour
without namespaces; the lab e2e tests prove the packets.
"""

import re
import tempfile
import time

from twisted.internet import defer, threads
from twisted.trial.unittest import TestCase

from contiv_sdn.controller.service import Controller
from contiv_sdn.lab.ovs import OvsInstance
from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer, free_tcp_port, require_binary, require_root
from contiv_sdn.testing.wait import wait_for

DPID = 0xC7A1


def _wait_for(predicate, timeout=20.0, what="condition"):
    """Wait for a condition on the switch (its predicates run ovs-ofctl: in a thread)."""
    return wait_for(predicate, timeout=timeout, what=what, every=0.1, in_thread=True)


def flow_key(line: str) -> str:
    """A dumped flow without its counters and age: what identifies it across dumps."""
    return re.sub(r"duration=[0-9.]+s, |n_packets=\d+, |n_bytes=\d+, |idle_age=\d+, ", "", line).strip()


def durations(lines):
    """Each flow's age in seconds, by :func:`flow_key`."""
    return {flow_key(l): float(re.search(r"duration=([0-9.]+)s", l).group(1)) for l in lines}


async def start_redis_ovs_store(test: TestCase, prefix: str) -> None:
    """The real parts every controller test needs, cleaned up with the test:
    ``test.redis``, ``test.ovs`` (a private OVS), ``test.port`` (for the controller's
    OpenFlow listener) and ``test.store``."""
    require_root()
    require_binary("ovs-vswitchd", "redis-server")
    test.redis = RedisServer().start()
    test.addCleanup(test.redis.stop)
    test.ovs = OvsInstance(tempfile.mkdtemp(prefix=prefix))
    await threads.deferToThread(test.ovs.start)
    test.addCleanup(lambda: test.ovs.stop(remove=True))
    test.port = free_tcp_port()
    test.store = await Store.connect(test.redis.url)
    test.addCleanup(lambda: defer.ensureDeferred(test.store.close()))


class ControllerWithOvsTests(TestCase):
    timeout = 120

    async def _setUp(self):
        await start_redis_ovs_store(self, "ctrl-ovs-")
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
        # A flow is told apart from a deleted-and-re-added copy by its age, so let every
        # flow get older than one dump takes (a condition, not a guess at the push time).
        await _wait_for(lambda: min(durations(self._our_flows()).values()) >= 0.5,
                        what="every flow at least 0.5 s old")
        before = await threads.deferToThread(self._our_flows)
        dumped_before = time.monotonic()
        await ctl.stopService()
        # Drop the switch connection too, as a killed netmaster would.
        for sw in list(ctl.registry.switches()):
            sw.transport.abortConnection()
        ctl2 = self._start_controller()
        self.addCleanup(ctl2.stopService)
        # (the registry lives on the reactor: checked there, not in a thread)
        await wait_for(lambda: len(ctl2.registry.switches()) == 1, timeout=20, what="reconnect")
        # The reconnect scheduled a run (switch up -> schedule): when_idle fires once it,
        # and the switch's first sync in it, finished.
        await ctl2.when_idle()
        self.assertGreater(ctl2.runs, 0)
        dumping_after = time.monotonic()
        after = await threads.deferToThread(self._our_flows)

        b, a = durations(before), durations(after)
        self.assertEqual(set(b), set(a), "the flow set changed across a controller restart")
        # No flow was deleted and re-added: a flow that stayed aged by at least the time
        # between the two dumps (less the 1 ms of the dump's rounding); a re-added one is
        # younger than that by its age at the first dump (>= 0.5 s).
        gap = dumping_after - dumped_before
        younger = [k for k in b if a[k] + 0.002 < b[k] + gap]
        self.assertEqual(younger, [])

    async def test_ports_appearing_later_get_their_flows(self):
        await self.store.put_state("endpoint", "ep4", {
            "id": "ep4", "network": "default:net1", "group": "", "ipAddress": "20.1.1.4",
            "macAddress": "02:02:14:01:01:04", "homingHost": "h1", "intfName": "cvep4"})
        ctl = self._start_controller()
        self.addCleanup(ctl.stopService)
        await _wait_for(lambda: any("20.1.1.1" in f for f in self._our_flows()), what="initial flows")
        await ctl.when_idle()
        # the controller knows ep4 ...
        self.assertIn("ep4", ctl.last_snapshot.endpoints)
        # ... but its port does not exist yet: no flow sends out of it (no delivery to its
        # MAC), none matches its traffic, and none answers for it.
        flows = await threads.deferToThread(self._our_flows)
        self.assertEqual([f for f in flows if "02:02:14:01:01:04" in f or "20.1.1.4" in f
                          or "cvep4" in f], [])
        await threads.deferToThread(self.ovs.vsctl, "add-port", "br-int", "cvep4", "--", "set",
                                    "interface", "cvep4", "type=internal")
        ofport = int((await threads.deferToThread(
            self.ovs.vsctl, "get", "interface", "cvep4", "ofport")).strip())
        await _wait_for(lambda: any(f"in_port={ofport}" in f or "in_port=cvep4" in f
                                    for f in self._our_flows()), what="flows for the new port")
        # the negative check above looked for the right text: now flows deliver to ep4
        flows = await _wait_for(lambda: [f for f in self._our_flows() if "dl_dst=02:02:14:01:01:04" in f],
                                what="delivery to ep4's MAC")
        self.assertTrue(any(f"output:{ofport}" in f for f in await threads.deferToThread(
            self._our_flows)), "no flow outputs to ep4's port")

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

    async def test_audit_reads_records_changed_without_a_notification(self):
        """A record removed from its hash with no change notification (a lost message)
        is noticed by the audit's comparison of the store with the mirror, and only
        that record is read again; nothing happens before the audit."""
        from contiv_sdn.store import keys as K
        ctl = self._start_controller()
        self.addCleanup(ctl.stopService)
        await _wait_for(lambda: any("20.1.1.3" in f for f in self._our_flows()), what="flows for ep3")
        await ctl.when_idle()
        runs = ctl.runs
        await self.store._conn.execute_command("HDEL", K.hash_of("endpoint"), "ep3")
        await ctl.when_idle()
        self.assertEqual(ctl.runs, runs)
        self.assertTrue(any("20.1.1.3" in f for f in await threads.deferToThread(self._our_flows)))
        ctl.audit()
        await ctl.when_idle()
        await _wait_for(lambda: not any("20.1.1.3" in f for f in self._our_flows()), what="ep3's flows gone")
        self.assertTrue(any("20.1.1.1" in f for f in await threads.deferToThread(self._our_flows)))

    async def test_policy_flows_install_and_follow_rule_changes(self):
        """A group with the seed's prod_web policy (plus a range, a CIDR and a port without a
        protocol): every desired flow is on the switch (OVS accepted the bundle: conntrack
        zones, ct_state masks, prefixes), and deleting a rule removes exactly its flow."""
        s = self.store
        await s.put_state("endpointGroup", "default:web", {"network": "default:net1", "epgId": 9})
        await s.put_state("obj:endpointGroup", "default:web", {
            "key": "default:web", "tenantName": "default", "groupName": "web", "networkName": "net1",
            "policies": ["prod_web"]})
        rules = {
            "1": {"direction": "in", "protocol": "tcp", "action": "deny"},
            "2": {"direction": "in", "protocol": "tcp", "port": 80, "action": "allow", "priority": 10},
            "3": {"direction": "in", "protocol": "tcp", "port": 443, "action": "allow", "priority": 10},
            "4": {"direction": "in", "protocol": "", "port": 8000, "action": "allow", "priority": 20,
                  "fromIpAddress": "20.1.1.2-9"},
            "5": {"direction": "out", "protocol": "icmp", "action": "deny", "priority": 5,
                  "toIpAddress": "20.1.0.0/16"},
        }
        for rid, r in rules.items():
            await s.put_state("obj:rule", f"default:prod_web:{rid}", dict(
                r, key=f"default:prod_web:{rid}", tenantName="default", policyName="prod_web", ruleId=rid))
        await s.put_state("endpoint", "ep1", {
            "id": "ep1", "network": "default:net1", "group": "default:web", "ipAddress": "20.1.1.1",
            "macAddress": "02:02:14:01:01:01", "homingHost": "h1", "intfName": "cvep1"})
        ctl = self._start_controller()
        self.addCleanup(ctl.stopService)
        await _wait_for(lambda: any("tp_dst=443" in f for f in self._our_flows()), what="policy flows")
        await ctl.when_idle()
        flows = await threads.deferToThread(self._our_flows)
        self.assertEqual(len(flows), len(ctl.engine.flows("h1")), "every desired flow is installed")
        text = "\n".join(flows)
        for needle in ("ct(table=51,zone=1)", "ct(commit,zone=1)", "ct_state=+inv+trk", "ct_state=+rpl+trk",
                       "nw_src=20.1.1.4/30", "tp_dst=8000", "nw_dst=20.1.0.0/16"):
            self.assertIn(needle, text)
        self.assertEqual(len([f for f in flows if "table=53" in f and "tp_dst=8000" in f]), 2 * 3,
                         "tcp and udp x the 3 prefixes of 20.1.1.2-9 (/31, /30, /31)")
        await s.del_state("obj:rule", "default:prod_web:3")
        await _wait_for(lambda: not any("tp_dst=443" in f for f in self._our_flows()), what="rule 3 gone")
        await ctl.when_idle()
        after = await threads.deferToThread(self._our_flows)
        self.assertEqual(len(after), len(flows) - 1)
