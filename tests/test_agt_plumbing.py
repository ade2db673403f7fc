"""Endpoint plumbing against real network namespaces (veth, address, route, MTU, offload)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.testing import require_binary, require_root
from contiv_sdn.testing.wait import wait_for


def ip_json(*args: str) -> list:
    out = subprocess.run(["ip", "-j", *args], check=True, capture_output=True, text=True).stdout
    return json.loads(out or "[]")


class Netns:
    """A named network namespace for one test, removed on cleanup."""

    def __init__(self, test: unittest.TestCase, role: str):
        self.name = f"agt-{role}-{secrets.token_hex(3)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        test.addCleanup(subprocess.run, ["ip", "netns", "del", self.name], capture_output=True)
        self.path = f"/var/run/netns/{self.name}"

    def links(self) -> dict:
        return {l["ifname"]: l for l in ip_json("-n", self.name, "-d", "link", "show")}

    def addrs(self, ifname: str) -> list:
        out = ip_json("-n", self.name, "addr", "show", "dev", ifname)
        return [(a["local"], a["prefixlen"]) for a in out[0]["addr_info"] if a["family"] == "inet"]

    def routes(self) -> list:
        return ip_json("-n", self.name, "route", "show")

    def run(self, *argv: str) -> None:
        subprocess.run(["ip", "-n", self.name, *argv], check=True, capture_output=True)


class PlumbingTests(unittest.TestCase):
    def setUp(self):
        require_root()
        require_binary("ip")
        from contiv_sdn.agent import plumbing
        self.plumbing = plumbing
        self.host = Netns(self, "h")
        self.ctr = Netns(self, "c")
        self.plumber = plumbing.Plumber(host_netns=self.host.path)

    def request(self, **kw):
        args = dict(host_ifname="cv0123456789ab", netns=self.ctr.path, ifname="eth0",
                    mac="02:02:0a:24:01:05", ipv4="10.36.1.5", prefix_len=24,
                    gateway="10.36.1.254", mtu=1450)
        args.update(kw)
        return self.plumbing.VethRequest(**args)

    @defer.inlineCallbacks
    def test_create_configures_both_ends(self):
        result = yield self.plumber.create(self.request())
        self.assertEqual(result["hostIfname"], "cv0123456789ab")
        self.assertEqual(result["macAddress"], "02:02:0a:24:01:05")
        self.assertEqual(result["mtu"], 1450)

        ctr = self.ctr.links()["eth0"]
        self.assertEqual(ctr["address"], "02:02:0a:24:01:05")
        self.assertEqual(ctr["mtu"], 1450)
        self.assertIn("UP", ctr["flags"])
        self.assertEqual(ctr["linkinfo"]["info_kind"], "veth")
        self.assertEqual(self.ctr.addrs("eth0"), [("10.36.1.5", 24)])
        defaults = [r for r in self.ctr.routes() if r["dst"] == "default"]
        self.assertEqual([(r["gateway"], r["dev"]) for r in defaults], [("10.36.1.254", "eth0")])

        host = self.host.links()["cv0123456789ab"]
        self.assertEqual(host["mtu"], 1450)
        self.assertIn("UP", host["flags"])
        self.assertNotIn("eth0", self.host.links())

        # TX checksum offload off on both ends (TCP through the userspace datapath needs it)
        self.assertFalse(self.plumbing.tx_checksum_in(self.ctr.path, "eth0"))
        self.assertFalse(self.plumbing.tx_checksum_in(self.host.path, "cv0123456789ab"))

    @defer.inlineCallbacks
    def test_delete_removes_pair_and_is_idempotent(self):
        yield self.plumber.create(self.request(gateway=None))
        self.assertTrue((yield self.plumber.host_link_exists("cv0123456789ab")))
        self.assertTrue((yield self.plumber.delete("cv0123456789ab")))
        self.assertNotIn("cv0123456789ab", self.host.links())
        self.assertNotIn("eth0", self.ctr.links())
        self.assertFalse((yield self.plumber.delete("cv0123456789ab")))
        self.assertFalse((yield self.plumber.host_link_exists("cv0123456789ab")))

    @defer.inlineCallbacks
    def test_missing_namespace_leaves_nothing(self):
        before = set(self.host.links())
        with self.assertRaises(self.plumbing.NetnsNotFound):
            yield self.plumber.create(self.request(netns="/var/run/netns/agt-none-" +
                                                   secrets.token_hex(3)))
        self.assertEqual(set(self.host.links()), before)

    @defer.inlineCallbacks
    def test_name_taken_in_container_leaves_nothing(self):
        self.ctr.run("link", "add", "eth0", "type", "veth", "peer", "name", "other0")
        before = set(self.host.links())
        with self.assertRaises(self.plumbing.InterfaceExists) as ctx:
            yield self.plumber.create(self.request())
        self.assertIn("eth0", str(ctx.exception))
        self.assertEqual(set(self.host.links()), before)
        self.assertIn("other0", self.ctr.links())  # theirs, untouched

    @defer.inlineCallbacks
    def test_failure_after_creation_removes_the_pair(self):
        # the gateway is outside the subnet: the route step fails after the veth exists
        with self.assertRaises(self.plumbing.PlumbingError) as ctx:
            yield self.plumber.create(self.request(gateway="10.99.0.1"))
        self.assertIn("10.99.0.1", str(ctx.exception))
        self.assertNotIn("cv0123456789ab", self.host.links())
        self.assertNotIn("eth0", self.ctr.links())

    @defer.inlineCallbacks
    def test_proc_pid_namespace_path(self):
        # a namespace given as /proc/PID/ns/net, as runtimes do
        proc = subprocess.Popen(["ip", "netns", "exec", self.ctr.name, "sleep", "30"])
        self.addCleanup(proc.wait)
        self.addCleanup(proc.kill)
        path = f"/proc/{proc.pid}/ns/net"
        yield defer.ensureDeferred(wait_for(
            lambda: self.plumbing.netns_id(path) == self.plumbing.netns_id(self.ctr.path),
            timeout=10, what="the process to enter the container's namespace", every=0.01))
        self.assertEqual(self.plumbing.netns_id(path), self.plumbing.netns_id(self.ctr.path))
        yield self.plumber.create(self.request(netns=path, ifname="net1", gateway=None))
        self.assertEqual(self.ctr.addrs("net1"), [("10.36.1.5", 24)])

    @defer.inlineCallbacks
    def test_two_step_create_remove_first_and_delete_also(self):
        # a stale link of the same endpoint goes in the creating thread hop
        self.host.run("link", "add", "ct0123456789ab", "type", "veth", "peer", "name", "agtstale0")
        req = self.request()
        yield self.plumber.create_host_end(req, remove_first=("ct0123456789ab",))
        self.assertFalse({"ct0123456789ab", "agtstale0"} & set(self.host.links()))
        # first step: host end up with offload off; container end there, not yet configured
        host = self.host.links()["cv0123456789ab"]
        self.assertIn("UP", host["flags"])
        self.assertEqual(host["mtu"], 1450)
        self.assertFalse(self.plumbing.tx_checksum_in(self.host.path, "cv0123456789ab"))
        eth0 = self.ctr.links()["eth0"]
        self.assertEqual((eth0["address"], eth0["mtu"]), ("02:02:0a:24:01:05", 1450))
        self.assertNotIn("UP", eth0["flags"])
        self.assertEqual(self.ctr.addrs("eth0"), [])
        # second step: the container end
        result = yield self.plumber.configure_container_end(req)
        self.assertEqual((result["macAddress"], result["mtu"]), ("02:02:0a:24:01:05", 1450))
        self.assertIn("UP", self.ctr.links()["eth0"]["flags"])
        self.assertEqual(self.ctr.addrs("eth0"), [("10.36.1.5", 24)])
        self.assertFalse(self.plumbing.tx_checksum_in(self.ctr.path, "eth0"))
        # delete takes further host links along (if present), answering for the veth
        self.host.run("link", "add", "agtextra0", "type", "veth", "peer", "name", "agtextra1")
        self.assertTrue((yield self.plumber.delete("cv0123456789ab",
                                                   also=("agtextra0", "agtabsent0"))))
        self.assertFalse({"cv0123456789ab", "agtextra0", "agtextra1"} & set(self.host.links()))
        self.assertNotIn("eth0", self.ctr.links())

    @defer.inlineCallbacks
    def test_host_name_taken_is_reported_as_such(self):
        self.host.run("link", "add", "cv0123456789ab", "type", "veth", "peer", "name", "agtpeer0")
        with self.assertRaises(self.plumbing.InterfaceExists) as ctx:
            yield self.plumber.create(self.request())
        self.assertIn("cv0123456789ab", str(ctx.exception))
        self.assertIn("on the host", str(ctx.exception))
        self.assertNotIn("eth0", self.ctr.links())
        self.assertIn("agtpeer0", self.host.links())  # theirs, untouched
        self.assertIn("cv0123456789ab", self.host.links())

    def test_invalid_names_are_rejected_before_anything_happens(self):
        with self.assertRaises(self.plumbing.PlumbingError):
            self.plumbing.create_veth(self.request(ifname="x" * 16), self.host.path)
        with self.assertRaises(self.plumbing.PlumbingError):
            self.plumbing.create_veth(self.request(host_ifname="a/b"), self.host.path)
        self.assertNotIn("eth0", self.ctr.links())


if os.environ.get("AGT_DEBUG"):
    defer.setDebugging(True)
