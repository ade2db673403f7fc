"""The lab's hosts, underlay and teardown, on real namespaces and real OVS (no services).

Every test builds its own lab under ``/run/contiv-lab-test-<pid>`` with hosts
``labt1..`` and links ``lbt*`` on 192.168.51.0/24, so it never meets a lab a
person has up (``node*``, ``ctv*``, 192.168.50.0/24).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time

from twisted.trial import unittest

from contiv_sdn.lab import Lab, LabError
from contiv_sdn.lab.core import ping_argv
from contiv_sdn.lab.ethtool import set_tx_checksum, tx_checksum
from contiv_sdn.lab.sh import ip, run
from contiv_sdn.lab.topology import list_links, list_netns
from contiv_sdn.testing import require_binary, require_root
from contiv_sdn.testing.wait import wait_until

PREFIX, LINK_PREFIX, SUBNET = "labt", "lbt", "192.168.51.0/24"


def lab_processes(root: str) -> list:
    """Pids whose command line names the lab root (what `down` must leave none of)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if root + "/" in cmd and int(pid) != os.getpid():
            found.append((int(pid), cmd))
    return found


def exclusive(timeout: float = 600) -> "object":
    """Hold the machine-wide lock of these tests (a file object; closing releases it).

    The names (labt*, lbt*) and the subnet are fixed, so two test runs at the same time
    (e.g. two people's ``make test``) would tear down each other's labs: they take turns.
    """
    f = open("/run/contiv-lab-tests.lock", "w")
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() > deadline:
                f.close()
                raise AssertionError("another lab test run held the lock for too long")
            time.sleep(0.2)


class LabTestCase(unittest.TestCase):
    def setUp(self) -> None:
        require_root()
        require_binary("ovs-vswitchd", "ovsdb-server", "ip", "busybox")
        self.root = f"/run/contiv-lab-test-{os.getpid()}"
        self.addCleanup(exclusive().close)  # released after every other cleanup

    def make_lab(self, hosts: int = 2) -> Lab:
        lab = Lab(hosts=hosts, root=self.root, start_services=False, prefix=PREFIX,
                  link_prefix=LINK_PREFIX, subnet=SUBNET)
        self.addCleanup(lab.down, all=True)
        return lab

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "contiv_sdn.lab", "--root", self.root,
                               *args], capture_output=True, text=True, timeout=timeout)

    def assertNothingLeft(self) -> None:
        netns = [n for n in list_netns() if n.startswith(PREFIX)]
        self.assertEqual(netns, [], "lab namespaces left behind")
        links = [l for l in list_links() if l.startswith(LINK_PREFIX)]
        self.assertEqual(links, [], "lab links left behind")
        self.assertEqual(lab_processes(self.root), [], "lab processes left behind")


class TopologyTests(LabTestCase):
    def test_hosts_underlay_trunk_and_down(self) -> None:
        lab = self.make_lab(2).up()
        h1, h2 = lab.host("labt1"), lab.host("labt2")
        self.assertEqual((h1.vtep_ip, h2.vtep_ip), ("192.168.51.1", "192.168.51.2"))
        self.assertTrue({"labt1", "labt2"} <= set(list_netns()))
        for h in (h1, h2):
            self.assertTrue(h.ovs.running())
            self.assertEqual(h.ovs.vsctl("list-ports", "br-ul").split(), ["eth0"])
            self.assertEqual(h.ovs.vsctl("get", "bridge", "br-ul", "datapath_type").strip(),
                             "netdev")
            # offload off on all four veth ends (TCP through userspace OVS needs it)
            for ifname in ("eth0", "eth1"):
                self.assertFalse(tx_checksum(ifname, h.netns), f"{h.name} {ifname}")
            for ifname in (lab.names.host_underlay_link(h.name),
                           lab.names.host_trunk_link(h.name)):
                self.assertFalse(tx_checksum(ifname), ifname)
        # the VTEP addresses (on OVS internal ports) reach each other over the underlay
        res = h1.exec(*ping_argv(), "-c", "2", "-W", "2", h2.vtep_ip)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        # the trunk carries VLAN-tagged frames between hosts (tagged by OVS, as the agent's
        # br-int will; this kernel has no vlan module)
        for i, h in enumerate((h1, h2), 1):
            h.ovs.add_bridge("br-trt", fail_mode="standalone")
            h.ovs.vsctl("add-port", "br-trt", "eth1", "--", "add-port", "br-trt", "vl42",
                        "tag=42", "--", "set", "interface", "vl42", "type=internal")
            ip("addr", "add", f"10.251.42.{i}/24", "dev", "vl42", netns=h.netns)
            ip("link", "set", "vl42", "up", netns=h.netns)
        res = h2.exec(*ping_argv(), "-c", "2", "-W", "2", "10.251.42.1")
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)

        lab.down()
        self.assertNothingLeft()
        self.assertFalse(os.path.exists(os.path.join(self.root, "state.json")))
        lab.down()  # idempotent
        self.assertNothingLeft()

    def test_vxlan_tcp_between_hosts_with_hand_written_flows(self) -> None:
        """The underlay is fit for what the controller will do: VXLAN via flows, TCP included."""
        lab = self.make_lab(2).up()
        hosts = lab.hosts
        for i, h in enumerate(hosts):
            other = hosts[1 - i]
            h.ovs.add_bridge("br-int")
            h.ovs.vsctl("--may-exist", "add-port", "br-int", "vxlan0", "--", "set", "interface",
                        "vxlan0", "type=vxlan", "options:remote_ip=flow", "options:key=flow")
            ns = f"{h.name}-c"
            run(["ip", "netns", "add", ns])
            ip("link", "set", "lo", "up", netns=ns)
            ip("link", "add", "vc1", "type", "veth", "peer", "name", "eth0", "netns", ns,
               netns=h.netns)
            set_tx_checksum("vc1", False, h.netns)
            set_tx_checksum("eth0", False, ns)
            ip("link", "set", "vc1", "up", netns=h.netns)
            ip("addr", "add", f"10.251.0.{i + 1}/24", "dev", "eth0", netns=ns)
            ip("link", "set", "eth0", "mtu", "1450", "up", netns=ns)
            h.ovs.vsctl("add-port", "br-int", "vc1")
            h.ovs.ofctl("add-flow", "br-int", f"in_port=vc1,actions=set_field:77->tun_id,"
                        f"set_field:{other.vtep_ip}->tun_dst,output:vxlan0")
            h.ovs.ofctl("add-flow", "br-int", "in_port=vxlan0,tun_id=77,actions=output:vc1")
        res = run([*ping_argv(), "-c", "3", "-W", "2", "10.251.0.2"], netns="labt1-c",
                  check=False)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        server = subprocess.Popen(["ip", "netns", "exec", "labt2-c", "busybox", "nc", "-l",
                                   "-p", "8080", "-e", "echo", "over-vxlan"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(server.wait)
        self.addCleanup(lambda: server.poll() is None and server.kill())
        # retried while the server is not listening yet
        wait_until(lambda: "over-vxlan" in run(["busybox", "nc", "-w", "3", "10.251.0.2", "8080"],
                                               netns="labt1-c", check=False, input="hi\n",
                                               timeout=10).stdout,
                   "no answer over the VXLAN link from the nc server", timeout=60, interval=0.1)
        lab.down()
        # the hand-made "container" namespaces match the lab's names, so down removed them too
        self.assertNothingLeft()


class StateAndCliTests(LabTestCase):
    def test_state_status_exec_and_second_up(self) -> None:
        lab = self.make_lab(2).up()
        loaded = Lab.load(self.root)
        self.assertEqual([h.name for h in loaded.hosts], ["labt1", "labt2"])
        self.assertEqual(loaded.subnet.cidr, SUBNET)
        st = loaded.status()
        self.assertEqual(st["phase"], "up")
        self.assertEqual([(h["name"], h["netns"], h["ovs"], h["bridges"]) for h in st["hosts"]],
                         [("labt1", True, True, ["br-ul"]), ("labt2", True, True, ["br-ul"])])
        # exec passes the exit code and runs inside the host
        res = self.cli("exec", "labt2", "--", "sh", "-c", "ip -4 -o addr show br-ul; exit 3")
        self.assertEqual(res.returncode, 3, res.stderr)
        self.assertIn("192.168.51.2/24", res.stdout)
        # on a host, plain OVS tools reach that host's own OVS
        res = self.cli("exec", "labt1", "--", "ovs-vsctl", "list-ports", "br-ul")
        self.assertEqual((res.returncode, res.stdout.split()), (0, ["eth0"]), res.stderr)
        res = lab.host("labt2").exec("ovs-ofctl", "-O", "OpenFlow13", "dump-flows", "br-ul")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("actions=NORMAL", res.stdout)
        res = self.cli("exec", "labt9", "--", "true")
        self.assertEqual(res.returncode, 1)
        self.assertIn("no host or container", res.stderr)
        res = self.cli("status")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertIn("labt1", res.stdout)
        # a second up on a running lab refuses and leaves the lab alone
        self.assertRaises(LabError, Lab(hosts=2, root=self.root, start_services=False,
                                        prefix=PREFIX, link_prefix=LINK_PREFIX,
                                        subnet=SUBNET).up)
        self.assertTrue(lab.host("labt1").ovs.running())
        res = self.cli("down")
        self.assertEqual(res.returncode, 0, res.stderr)
        self.assertNothingLeft()

    def test_down_after_killed_up_and_lost_state(self) -> None:
        proc = subprocess.Popen([sys.executable, "-m", "contiv_sdn.lab", "--root", self.root,
                                 "up", "--hosts", "4", "--no-services", "--prefix", PREFIX,
                                 "--link-prefix", LINK_PREFIX, "--subnet", SUBNET],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        first_ovs = os.path.join(self.root, "labt1", "ovs", "ovs-vswitchd.pid")
        deadline = time.monotonic() + 60
        while not os.path.exists(first_ovs) and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        self.assertEqual(proc.wait(30), -signal.SIGKILL, "up finished before it could be killed")
        self.assertIn("labt1", list_netns())
        # lose the state file too: down must find everything by names and pidfiles
        os.unlink(os.path.join(self.root, "state.json"))
        # things that are not the lab's, with similar names, must survive
        run(["ip", "netns", "add", "labtx"])
        self.addCleanup(run, ["ip", "netns", "delete", "labtx"], check=False)
        ip("link", "add", "lbtother", "type", "bridge")
        self.addCleanup(ip, "link", "delete", "lbtother", check=False)
        stranger = subprocess.Popen(["sleep", "60"])
        self.addCleanup(stranger.wait)
        self.addCleanup(stranger.kill)
        with open(os.path.join(self.root, "stranger.pid"), "w") as f:
            f.write(str(stranger.pid))

        res = self.cli("down", "--prefix", PREFIX, "--link-prefix", LINK_PREFIX)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertEqual(stranger.poll(), None, "down killed a process that is not the lab's")
        self.assertIn("labtx", list_netns())
        self.assertIn("lbtother", list_links())
        run(["ip", "netns", "delete", "labtx"])
        ip("link", "delete", "lbtother")
        self.assertNothingLeft()
        res = self.cli("down", "--all", "--prefix", PREFIX, "--link-prefix", LINK_PREFIX)
        self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
        self.assertFalse(os.path.exists(self.root))

    def test_up_cleans_leftovers_of_a_crashed_run(self) -> None:
        first = self.make_lab(2).up()
        os.unlink(os.path.join(self.root, "state.json"))  # as if that run crashed
        old_pid = first.host("labt1").ovs._pid("ovs-vswitchd")
        second = self.make_lab(2).up()
        self.assertTrue(second.host("labt1").ovs.running())
        self.assertNotEqual(second.host("labt1").ovs._pid("ovs-vswitchd"), old_pid)
        second.down()
        self.assertNothingLeft()

    def test_names_are_checked(self) -> None:
        lab = Lab(hosts=2, root=self.root, start_services=False, prefix="averylonghost",
                  link_prefix=LINK_PREFIX, subnet=SUBNET)
        self.assertRaises(LabError, lab.up)
        self.assertRaises(LabError, Lab, hosts=300, root=self.root, prefix=PREFIX,
                          subnet=SUBNET)

    def test_refuses_a_root_that_is_not_a_labs(self) -> None:
        other = self.mktemp()
        os.makedirs(other)
        precious = os.path.join(other, "precious")
        open(precious, "w").close()
        lab = Lab(hosts=1, root=other, start_services=False, prefix=PREFIX,
                  link_prefix=LINK_PREFIX, subnet=SUBNET)
        self.assertRaises(LabError, lab.up)
        self.assertRaises(LabError, lab.down, all=True)
        self.assertTrue(os.path.exists(precious))
        self.assertNotIn("labt1", list_netns())
