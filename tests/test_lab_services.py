"""The lab with its services: redis, netmaster, a netplugin per host, container namespaces.

Real processes throughout (redis-server, ``twistd netmaster``, ``twistd netplugin`` inside
each host namespace, OVS per host); free ports instead of the lab's 9999/6653.
"""

from __future__ import annotations

import socket
import subprocess

from contiv_sdn.lab import ApiError, Lab, LabError
from contiv_sdn.lab import http
from contiv_sdn.lab.topology import list_netns
from contiv_sdn.testing import free_tcp_port, require_binary
from contiv_sdn.testing.wait import wait_until

from tests.test_lab_topology import LINK_PREFIX, PREFIX, SUBNET, LabTestCase


class ServicesTests(LabTestCase):
    def setUp(self) -> None:
        super().setUp()
        require_binary("redis-server")

    def make_lab(self, hosts: int = 2, **kw) -> Lab:
        lab = Lab(hosts=hosts, root=self.root, start_services=True, prefix=PREFIX,
                  link_prefix=LINK_PREFIX, subnet=SUBNET,
                  netmaster_port=kw.pop("netmaster_port", None) or free_tcp_port(),
                  ofp_port=free_tcp_port(), **kw)
        self.addCleanup(lab.down, all=True)
        return lab

    def test_services_containers_restarts_and_down(self) -> None:
        lab = self.make_lab(2).up()
        self.assertEqual(http.request("GET", "/version", base_url=lab.netmaster_url)[0], 200)
        for h in lab.hosts:
            st = h.api("GET", "/v1/status")
            self.assertEqual((st["host"], st["vtepIP"], st["ready"]), (h.name, h.vtep_ip, True))
            # the agent made br-int in this host's OVS, with the lab's controller and trunk
            self.assertEqual(h.ovs.vsctl("get-controller", "br-int").split(),
                             [lab.controller_target])
            self.assertIn("eth1", h.ovs.vsctl("list-ports", "br-int").split())
            # up warmed OVS's tunnel neighbour cache: the other host's VTEP is known
            neigh = h.ovs.appctl("tnl/neigh/show")
            for other in lab.hosts:
                if other is not h:
                    self.assertIn(other.vtep_ip, neigh)

        http.call("POST", "/api/v1/networks/default:labnet/",
                  {"tenantName": "default", "networkName": "labnet", "encap": "vxlan",
                   "subnet": "10.251.7.0/24", "gateway": "10.251.7.254"},
                  base_url=lab.netmaster_url)
        web = lab.add_container("labt1", "web", "labnet")
        db = lab.add_container("labt2", "db", "labnet", ip="10.251.7.50")
        self.assertEqual(db.ip, "10.251.7.50")
        self.assertNotEqual(web.ip, db.ip)
        self.assertTrue(web.ip.startswith("10.251.7."))
        for c in (web, db):
            res = c.exec("ip", "-4", "-o", "addr", "show", "eth0")
            self.assertIn(f"{c.ip}/24", res.stdout, res.stderr)
        self.assertRaises(ApiError, lab.add_container, "labt1", "bad", "nosuchnet")
        self.assertNotIn("labt1-bad", list_netns())  # a refused endpoint leaves no namespace

        # across hosts through the flows the controller pushed: ping, and TCP (offload off)
        # (flows arrive asynchronously after an endpoint is made: retry a while)
        wait_until(lambda: web.exec("busybox", "ping", "-c", "1", "-W", "1", db.ip).returncode == 0,
                   "web cannot ping db across hosts", timeout=60)
        self.assertGreater(lab.host("labt1").flow_count(), 0)
        server = subprocess.Popen(["ip", "netns", "exec", db.netns, "busybox", "nc", "-l",
                                   "-p", "8080", "-e", "echo", "db-over-tcp"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(server.wait)
        self.addCleanup(lambda: server.poll() is None and server.kill())
        wait_until(lambda: "db-over-tcp" in web.exec(
            "busybox", "nc", "-w", "3", db.ip, "8080", input="hi\n").stdout,
            "no TCP from web to db", timeout=60)

        # another command (a new Lab object) sees the same containers
        again = Lab.load(self.root)
        self.assertEqual(again.container("db").ip, "10.251.7.50")
        self.assertEqual(again.netns_of("web"), "labt1-web")
        res = self.cli("exec", "web", "--", "ip", "-4", "-o", "addr", "show", "eth0")
        self.assertIn(web.ip, res.stdout, res.stderr)

        # restarts: new processes, ready again, state kept
        old = lab.services["netmaster"].pid
        lab.restart_netmaster(kill=True)
        self.assertNotEqual(lab.services["netmaster"].pid, old)
        self.assertEqual(http.request("GET", "/version", base_url=lab.netmaster_url)[0], 200)
        old = lab.services["netplugin:labt2"].pid
        lab.restart_netplugin("labt2")
        self.assertNotEqual(lab.services["netplugin:labt2"].pid, old)
        ids = [e.get("id") for e in lab.host("labt2").api("GET", "/v1/endpoints")]
        self.assertIn(db.id, ids)
        old = lab.host("labt1").ovs._pid("ovs-vswitchd")
        lab.restart_ovs("labt1")
        self.assertNotEqual(lab.host("labt1").ovs._pid("ovs-vswitchd"), old)
        self.assertIn("br-int", lab.host("labt1").ovs.vsctl("list-br").split())
        self.assertTrue(all(s["alive"] for s in Lab.load(self.root).status()["services"].values()))
        # after all three restarts the containers talk again
        wait_until(lambda: web.exec("busybox", "ping", "-c", "1", "-W", "1", db.ip).returncode == 0,
                   "no connectivity after the restarts", timeout=60)

        lab.remove_container("labt1", "web")
        self.assertNotIn("labt1-web", list_netns())
        self.assertEqual(lab.host("labt1").api("GET", "/v1/endpoints"), [])

        lab.down()  # db is still there: down deletes its endpoint, then everything
        self.assertNothingLeft()

    def test_failed_service_reports_its_log_and_tears_down(self) -> None:
        busy = socket.socket()
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        self.addCleanup(busy.close)
        lab = self.make_lab(1, netmaster_port=busy.getsockname()[1])
        with self.assertRaises(LabError) as cm:
            lab.up()
        self.assertIn("netmaster", str(cm.exception))
        self.assertIn(f"{self.root}/netmaster/", str(cm.exception))  # where its log is
        self.assertNothingLeft()
