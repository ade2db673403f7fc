"""Kubernetes NodePort in the host's netns (``contiv_sdn/agent/nodeport.py``).

Proves: the node ports and clusterIP routes are read right from ``k8sService``
records (NodePort/LoadBalancer only, headless and bad records ignored, one claim per
port); and, on a real kernel (three network namespaces standing for an underlay
client, the host and br-int's side of ``contivh0``), that the applied ruleset DNATs
``VTEP:nodePort`` to ``clusterIP:port``, masquerades it to the host's ``contivh0``
address (the server sees that address, and its reply returns through the host),
that re-applying is idempotent and that a Service gone takes its rule with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.agent import nodeport as NP
from contiv_sdn.testing import require_binary, require_root
from contiv_sdn.testing.wait import wait_until


def svc(cip: str = "10.96.0.5", type_: str = "NodePort", node_port: int = 30080, port: int = 80,
        proto: str = "TCP", headless: bool = False) -> str:
    return json.dumps({"namespace": "default", "name": "x", "clusterIP": cip, "headless": headless,
                       "type": type_, "ports": [{"name": "http", "port": port, "targetPort": "web",
                                                 "protocol": proto, "nodePort": node_port}],
                       "selector": {"app": "web"}, "sessionAffinity": "None", "affinityTimeout": 0})


class EntriesTests(unittest.TestCase):
    def test_node_ports_and_routes(self) -> None:
        items, routes = NP.entries({
            "default/a": svc(),
            "default/b": svc("10.96.0.6", "ClusterIP", 0),
            "default/c": svc("", headless=True),
            "default/d": "{not json",
            "default/e": svc("10.96.0.7", "LoadBalancer", 30081, 53, "UDP"),
            "default/f": svc("10.96.0.8", node_port=30080),  # the API server refuses it; first key wins
        })
        self.assertEqual(items, [("tcp", 30080, "10.96.0.5", 80), ("udp", 30081, "10.96.0.7", 53)])
        self.assertEqual(routes, ["10.96.0.5/32", "10.96.0.6/32", "10.96.0.7/32", "10.96.0.8/32"])

    def test_ruleset_names_the_vtep_and_the_port(self) -> None:
        text = NP.ruleset("192.168.78.2", "contivh0", [("tcp", 30080, "10.96.0.5", 80)])
        self.assertIn("ip daddr 192.168.78.2 tcp dport 30080 dnat to 10.96.0.5:80", text)
        self.assertIn('oifname "contivh0" ct status dnat ct original ip daddr 192.168.78.2 masquerade',
                      text)
        self.assertTrue(text.startswith(f"table ip {NP.TABLE}\ndelete table ip {NP.TABLE}\n"))


_SERVER = ("import socket,sys\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
           "s.bind(('10.96.0.5',80))\ns.listen(8)\nwhile True:\n c,a=s.accept()\n"
           " c.sendall(a[0].encode())\n c.close()\n")
_CLIENT = ("import socket\ns=socket.create_connection(('10.99.1.1',30080),timeout=2)\n"
           "print(s.recv(100).decode())\n")
_APPLY = "import sys\nfrom contiv_sdn.agent.nodeport import apply\napply(sys.stdin.read())\n"


class KernelPathTests(unittest.TestCase):
    """client (10.99.1.2) -- host (VTEP 10.99.1.1; contivh0 172.19.1.2/16) -- 'br-int'
    (172.19.0.1, the clusterIP 10.96.0.5 on its loopback)."""

    timeout = 60

    def setUp(self) -> None:
        require_root()
        require_binary("ip", "nft")
        tag = f"h20np{os.getpid() % 100000}"
        self.ns = {k: f"{tag}{k}" for k in "chs"}
        for name in self.ns.values():
            self.ip("netns", "add", name)
            self.addCleanup(subprocess.run, ["ip", "netns", "del", name], capture_output=True)
        c, h, s = self.ns["c"], self.ns["h"], self.ns["s"]
        self.ip("link", "add", "cv0", "netns", c, "type", "veth", "peer", "name", "hv0", "netns", h)
        self.ip("link", "add", "contivh0", "netns", h, "type", "veth", "peer", "name", "sv0", "netns", s)
        for ns, dev, addr in ((c, "cv0", "10.99.1.2/24"), (h, "hv0", "10.99.1.1/24"),
                              (h, "contivh0", "172.19.1.2/16"), (s, "sv0", "172.19.0.1/16")):
            self.ip("-n", ns, "addr", "add", addr, "dev", dev)
            self.ip("-n", ns, "link", "set", dev, "up")
        for ns in (c, h, s):
            self.ip("-n", ns, "link", "set", "lo", "up")
        self.ip("-n", s, "addr", "add", "10.96.0.5/32", "dev", "lo")
        # the host's sysctl: strict reverse-path filtering, as a distribution sets it
        self.run_in(h, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1")
        self.ip("-n", h, "route", "replace", "10.96.0.5/32", "via", "172.19.0.1", "dev", "contivh0")
        server = subprocess.Popen(["ip", "netns", "exec", s, sys.executable, "-c", _SERVER],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(server.wait)
        self.addCleanup(server.kill)
        self.records = {"default/web": svc()}

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, timeout=15)

    def run_in(self, ns: str, *argv: str, text: str = None) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", ns, *argv], input=text, capture_output=True,
                              text=True, timeout=15)

    def apply_in_host(self, script: str) -> None:
        res = self.run_in(self.ns["h"], sys.executable, "-c", _APPLY, text=script)
        if res.returncode != 0:
            raise RuntimeError(res.stderr)

    def connect(self) -> str:
        res = self.run_in(self.ns["c"], sys.executable, "-c", _CLIENT)
        return res.stdout.strip() if res.returncode == 0 else f"FAIL {res.stderr.strip()[-200:]}"

    @defer.inlineCallbacks
    def test_dnat_to_the_cluster_ip_masqueraded_to_contivh0(self):
        async def read():
            return dict(self.records)

        nps = NP.NodePorts("10.99.1.1", read, apply_fn=self.apply_in_host)
        self.assertTrue(self.connect().startswith("FAIL"), "answered before any rule")
        routes = yield defer.ensureDeferred(nps.sync())
        self.assertEqual(routes, ["10.96.0.5/32"])
        self.assertEqual(self.run_in(self.ns["h"], "sysctl", "-n", "net.ipv4.ip_forward").stdout.strip(), "1")
        # the server sees the host's contivh0 address, not the client's
        wait_until(lambda: self.connect() == "172.19.1.2", "VTEP:30080 answered via the clusterIP",
                   20, interval=0.5, detail=self.connect)
        yield defer.ensureDeferred(nps.sync())  # again: same table, still answering
        listed = self.run_in(self.ns["h"], "nft", "list", "table", "ip", NP.TABLE).stdout
        self.assertEqual(listed.count("dnat to 10.96.0.5:80"), 2, listed)  # prerouting + output
        self.assertEqual(self.connect(), "172.19.1.2")
        self.records.clear()
        routes = yield defer.ensureDeferred(nps.sync())
        self.assertEqual(routes, [])
        listed = self.run_in(self.ns["h"], "nft", "list", "table", "ip", NP.TABLE).stdout
        self.assertNotIn("dnat to", listed)
        self.assertTrue(self.connect().startswith("FAIL"), "answered after the Service left")
