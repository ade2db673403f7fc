"""br-int over OVSDB against a real, private OVS (userspace datapath) in a test namespace."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.testing import require_binary, require_root


def start_ovs(test: unittest.TestCase, role: str = "o"):
    """A private OVS inside a fresh ``agt-`` namespace; both removed on cleanup."""
    require_root()
    require_binary("ip", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl")
    from contiv_sdn.lab.ovs import OvsInstance
    netns = f"agt-{role}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    test.addCleanup(subprocess.run, ["ip", "netns", "del", netns])
    directory = tempfile.mkdtemp(prefix=f"{netns}-ovs-")
    test.addCleanup(shutil.rmtree, directory, True)
    ovs = OvsInstance(directory, netns=netns)
    test.addCleanup(fast_stop, ovs)
    ovs.start()
    return ovs, netns


def _gone(pid: int) -> bool:
    """Exited (a zombie counts: PID 1 here reaps only every few seconds)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def fast_stop(ovs) -> None:
    """SIGTERM both daemons and wait for their exit, then let OvsInstance.stop tidy up.

    OvsInstance.stop polls with kill(pid, 0), which a not-yet-reaped zombie passes,
    so on its own it waits seconds per daemon here.
    """
    for name in ("ovs-vswitchd", "ovsdb-server"):
        try:
            with open(os.path.join(ovs.dir, f"{name}.pid")) as f:
                pid = int(f.read().strip())
        except (OSError, ValueError):
            continue
        try:
            os.kill(pid, signal.SIGTERM)
        except OSError:
            continue
        deadline = time.monotonic() + 10
        while not _gone(pid) and time.monotonic() < deadline:
            time.sleep(0.01)
        if _gone(pid):  # else leave the pid file: ovs.stop() below escalates to SIGKILL
            try:
                os.unlink(os.path.join(ovs.dir, f"{name}.pid"))
            except OSError:
                pass
    ovs.stop()


class BridgeSetupTests(unittest.TestCase):
    def setUp(self):
        self.ovs, self.netns = start_ovs(self)
        from contiv_sdn.agent.ovsdb import BridgeSpec, Ovsdb
        from contiv_sdn.agent.registration import host_dpid
        self.Ovsdb, self.BridgeSpec = Ovsdb, BridgeSpec
        self.db = Ovsdb("unix:" + self.ovs.db_sock)
        self.addCleanup(self.db.close)
        self.dpid = host_dpid("agt-host-1")
        self.spec = BridgeSpec("br-int", "netdev", self.dpid,
                               ("tcp:127.0.0.1:6653", "tcp:127.0.0.2:6653"))
        # an uplink to add: a veth end inside the host namespace
        subprocess.run(["ip", "-n", self.netns, "link", "add", "agtup0", "type", "veth", "peer",
                        "name", "agtup1"], check=True)

    def get(self, table: str, record: str, column: str) -> str:
        return self.ovs.vsctl("get", table, record, column).strip().replace('"', "")

    @defer.inlineCallbacks
    def test_bridge_created_with_settings_in_one_go(self):
        from contiv_sdn.agent.bridge import setup_bridge
        yield self.db.connect()
        result = yield setup_bridge(self.db, self.spec, uplink="agtup0")
        self.assertTrue(result["created"])
        self.assertEqual(self.get("bridge", "br-int", "datapath_type"), "netdev")
        self.assertEqual(self.get("bridge", "br-int", "fail_mode"), "secure")
        self.assertEqual(self.get("bridge", "br-int", "protocols"), "[OpenFlow13]")
        self.assertEqual(self.get("bridge", "br-int", "other_config:datapath-id"),
                         f"{self.dpid:016x}")
        self.assertEqual(sorted(self.ovs.vsctl("get-controller", "br-int").split()),
                         ["tcp:127.0.0.1:6653", "tcp:127.0.0.2:6653"])
        # vswitchd applied it: the datapath id is live, the tunnel port has an OpenFlow number
        self.assertEqual(self.get("bridge", "br-int", "datapath_id"), f"{self.dpid:016x}")
        self.assertEqual(self.get("interface", "vxlan0", "type"), "vxlan")
        self.assertEqual(self.get("interface", "vxlan0", "options"),
                         "{dst_port=4789, key=flow, remote_ip=flow}")
        self.assertGreater(int(self.get("interface", "vxlan0", "ofport")), 0)
        self.assertEqual(sorted(self.ovs.vsctl("list-ports", "br-int").split()),
                         ["agtup0", "vxlan0"])
        # OpenFlow 1.0 is refused: the version is pinned
        self.assertEqual(subprocess.run(
            ["ip", "netns", "exec", self.netns, "ovs-ofctl", "-O", "OpenFlow10", "dump-flows",
             self.ovs.mgmt("br-int")], env=self.ovs.env, capture_output=True).returncode != 0,
            True)

    @defer.inlineCallbacks
    def test_second_setup_is_idempotent_and_keeps_flows(self):
        from contiv_sdn.agent.bridge import setup_bridge
        yield self.db.connect()
        yield setup_bridge(self.db, self.spec)
        self.ovs.ofctl("add-flow", "br-int", "table=0,priority=7,ip,actions=drop")
        uuid_before = self.get("bridge", "br-int", "_uuid")

        # the agent restarts: a new OVSDB session, the same setup
        db2 = self.Ovsdb("unix:" + self.ovs.db_sock)
        self.addCleanup(db2.close)
        yield db2.connect()
        result = yield setup_bridge(db2, self.spec)
        self.assertFalse(result["created"])
        self.assertEqual(result["changed"], [])
        self.assertEqual(self.get("bridge", "br-int", "_uuid"), uuid_before)
        self.assertIn("priority=7,ip actions=drop", self.ovs.dump_flows("br-int"))

    @defer.inlineCallbacks
    def test_existing_bridge_with_wrong_settings_is_corrected_keeping_flows(self):
        from contiv_sdn.agent.bridge import setup_bridge
        # someone made br-int by hand: standalone, OpenFlow10 allowed, another dpid, one controller
        self.ovs.vsctl("add-br", "br-int", "--", "set", "bridge", "br-int",
                       "datapath_type=netdev", "fail_mode=standalone",
                       "protocols=OpenFlow10,OpenFlow13",
                       "other_config:datapath-id=00000000000000aa",
                       "--", "set-controller", "br-int", "tcp:127.0.0.1:6653")
        self.ovs.ofctl("add-flow", "br-int", "table=0,priority=9,arp,actions=drop")
        yield self.db.connect()
        result = yield setup_bridge(self.db, self.spec)
        self.assertFalse(result["created"])
        self.assertEqual(sorted(result["changed"]), sorted(
            ["fail_mode", "protocols", "other_config:datapath-id", "controller"]))
        self.assertEqual(self.get("bridge", "br-int", "fail_mode"), "secure")
        self.assertEqual(self.get("bridge", "br-int", "other_config:datapath-id"),
                         f"{self.dpid:016x}")
        self.assertIn("priority=9,arp actions=drop", self.ovs.dump_flows("br-int"))

    @defer.inlineCallbacks
    def test_controller_change_never_empties_and_keeps_flows(self):
        from contiv_sdn.agent.ovsdb import OvsdbError
        yield self.db.connect()
        yield self.db.ensure_bridge(self.spec)
        self.ovs.ofctl("add-flow", "br-int", "table=0,priority=3,actions=drop")

        changed = yield self.db.set_controllers("br-int", ["tcp:127.0.0.3:6653"])
        self.assertTrue(changed)
        self.assertEqual(self.ovs.vsctl("get-controller", "br-int").split(),
                         ["tcp:127.0.0.3:6653"])
        self.assertIn("priority=3 actions=drop", self.ovs.dump_flows("br-int"))

        with self.assertRaises(OvsdbError):
            yield self.db.set_controllers("br-int", [])
        self.assertEqual(self.ovs.vsctl("get-controller", "br-int").split(),
                         ["tcp:127.0.0.3:6653"])
        self.assertIn("priority=3 actions=drop", self.ovs.dump_flows("br-int"))

        unchanged = yield self.db.set_controllers("br-int", ["tcp:127.0.0.3:6653"])
        self.assertFalse(unchanged)

    @defer.inlineCallbacks
    def test_ports_with_external_ids(self):
        from contiv_sdn.agent.ovsdb import OvsdbError
        yield self.db.connect()
        yield self.db.ensure_bridge(self.spec)
        info = yield self.db.ensure_port("br-int", "agtup0", external_ids={"endpoint-id": "e1"},
                                         iface_external_ids={"iface-id": "e1"})
        self.assertEqual(info.external_ids, {"endpoint-id": "e1"})
        self.assertGreater(info.ofport, 0)
        self.assertEqual(self.get("port", "agtup0", "external_ids:endpoint-id"), "e1")
        self.assertEqual(self.get("interface", "agtup0", "external_ids:iface-id"), "e1")
        ports = yield self.db.list_ports("br-int")
        self.assertEqual([p.name for p in ports], ["agtup0"])

        # the same name on another bridge is refused
        self.ovs.vsctl("add-br", "agt-other", "--", "set", "bridge", "agt-other",
                       "datapath_type=netdev")
        with self.assertRaises(OvsdbError):
            yield self.db.ensure_port("agt-other", "agtup0")

        self.assertTrue((yield self.db.delete_port("br-int", "agtup0")))
        self.assertFalse((yield self.db.delete_port("br-int", "agtup0")))
        self.assertEqual(self.ovs.vsctl("list-ports", "br-int").split(), [])
        self.assertEqual(self.ovs.vsctl("--columns=name", "find", "interface",
                                        "name=agtup0").strip(), "")

    def test_empty_controller_list_is_refused_at_creation(self):
        from contiv_sdn.agent.ovsdb import OvsdbError
        spec = self.BridgeSpec("br-int", "netdev", 1, ())
        d = self.db.connect().addCallback(lambda _: self.db.ensure_bridge(spec))
        return self.assertFailure(d, OvsdbError)


class UnreachableTests(unittest.TestCase):
    def test_connect_fails_with_a_clear_error(self):
        from contiv_sdn.agent.ovsdb import Ovsdb, OvsdbError
        path = os.path.join(tempfile.mkdtemp(prefix="agt-noovs-"), "db.sock")
        self.addCleanup(shutil.rmtree, os.path.dirname(path), True)
        db = Ovsdb("unix:" + path, timeout=2)
        self.addCleanup(db.close)
        d = self.assertFailure(db.connect(), OvsdbError)
        d.addCallback(lambda e: self.assertIn("ovsdb-server", str(e)))
        return d
