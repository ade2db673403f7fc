"""End to end in the lab: the seed walkthrough with real dockerds, and podman (CNI) next to Docker.

Two lab hosts (namespaces with their own OVS on an underlay), Redis, a
netmaster with its OpenFlow controller, and per host a netplugin serving the
Docker driver plus its own dockerd (``Lab(docker=True)``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any, Callable

from twisted.trial import unittest

from contiv_sdn.testing import require_binary, require_root
from contiv_sdn.testing.wait import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CNI = os.path.join(os.path.dirname(sys.executable), "contiv-cni")


def until(what: str, check: Callable[[], Any], timeout: float = 30.0, every: float = 0.3) -> Any:
    """The shared :func:`contiv_sdn.testing.wait.wait_until` in the fixtures' argument order;
    errors count as "not yet" (the checks ask services that may still be starting)."""
    return wait_until(check, what, timeout=timeout, interval=every, retry_errors=True)


class LabCase(unittest.TestCase):
    timeout = 600

    def setUp(self):
        require_root()
        require_binary("dockerd", "docker", "ovs-vswitchd", "redis-server", "nsenter")
        from contiv_sdn.lab.core import Lab
        from contiv_sdn.testing import free_tcp_port
        self.lab = Lab(hosts=2, prefix="drve", link_prefix="dre", subnet="192.168.59.0/24",
                       root=f"/run/contiv-lab-drve-{os.getpid()}", docker=True,
                       netmaster_port=free_tcp_port(), ofp_port=free_tcp_port())
        self.addCleanup(self.lab.down, all=True)
        self.lab.up()
        self.n1, self.n2 = (h.name for h in self.lab.hosts)

    # -- helpers -----------------------------------------------------------------------
    def api(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.lab.netmaster_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=15) as r:
            raw = r.read()
        return json.loads(raw) if raw.strip() else None

    def docker(self, host: str, *args: str, check: bool = True) -> str:
        return self.lab.docker(host, *args, check=check, timeout=120).stdout

    def networks(self, host: str) -> set:
        return set(self.docker(host, "network", "ls", "--format", "{{.Name}}").split())

    def ip_of(self, host: str, name: str) -> str:
        return self.docker(host, "inspect", "-f",
                           "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                           name).strip()

    def pings(self, host: str, name: str, target: str) -> bool:
        return self.lab.docker(host, "exec", name, "ping", "-c", "1", "-W", "1", target,
                               check=False).returncode == 0

    def tcp(self, host: str, name: str, target: str, port: int = 80) -> bool:
        out = self.lab.docker(host, "exec", name, "sh", "-c",
                              f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {target} {port}",
                              check=False)
        return "hello-contiv" in out.stdout

    def records(self) -> dict:
        out = subprocess.run(["redis-cli", "-s", self.lab.redis_socket, "HGETALL",
                              "contiv:state:endpoint"], capture_output=True, text=True,
                             check=True).stdout.split("\n")
        lines = [l for l in out if l]
        return {lines[i]: json.loads(lines[i + 1]) for i in range(0, len(lines) - 1, 2)}


class EndToEndTests(LabCase):
    """One lab for everything (a lab costs ~10 s): Docker first, then CNI next to it."""

    def test_seed_walkthrough_then_cni_next_to_docker(self):
        self.seed_walkthrough_restarts_and_removal()
        self.podman_on_node2_and_docker_on_node1_talk()

    def seed_walkthrough_restarts_and_removal(self):
        n1, n2 = self.n1, self.n2
        # Step 1 of the seed: the network; Docker networks follow on both hosts
        self.api("POST", "/api/v1/networks/default:contiv-net/", {
            "tenantName": "default", "networkName": "contiv-net", "encap": "vxlan",
            "subnet": "20.1.1.0/24", "gateway": "20.1.1.254", "pktTag": 1001})
        self.api("POST", "/api/v1/endpointGroups/default:web/", {
            "tenantName": "default", "networkName": "contiv-net", "groupName": "web"})
        for h in (n1, n2):
            until(f"contiv-net and web.contiv-net on {h}",
                  lambda h=h: {"contiv-net", "web.contiv-net"} <= self.networks(h))
        # Step 2: web on node1 (in group web), db on node2 with a requested address
        self.docker(n1, "run", "-d", "--name=web", "--net=web.contiv-net", "busybox:local",
                    "sh", "-c", "echo hello-contiv > /var/www/index.html; "
                                "httpd -f -p 80 -h /var/www")
        self.docker(n2, "run", "-d", "--name=db", "--net=contiv-net", "--ip=20.1.1.50",
                    "busybox:local", "sleep", "3600")
        web_ip, db_ip = self.ip_of(n1, "web"), self.ip_of(n2, "db")
        self.assertEqual(db_ip, "20.1.1.50")
        # they talk: ping both ways, and TCP (a ping alone proves little, lab.md)
        until("web pings db across hosts", lambda: self.pings(n1, "web", db_ip))
        self.assertTrue(self.pings(n2, "db", web_ip))
        until("db reaches web's httpd over TCP", lambda: self.tcp(n2, "db", web_ip))
        # the records carry host, group, MAC, IP and the container names (for DNS)
        recs = until("both container names in the records",
                     lambda: {r["containerName"]: r for r in self.records().values()
                              if r.get("containerName") in ("web", "db")}
                     if len(self.records()) == 2 else None)
        self.assertEqual((recs["web"]["homingHost"], recs["web"]["group"]), (n1, "default:web"))
        self.assertEqual((recs["db"]["homingHost"], recs["db"]["ipAddress"]), (n2, db_ip))
        # docker restart of a container: connectivity comes back
        self.docker(n2, "restart", "-t", "0", "db")
        self.assertEqual(self.ip_of(n2, "db"), db_ip)
        until("db reachable after docker restart", lambda: self.pings(n1, "web", db_ip))
        # dockerd restart on node1 (live-restore): web keeps running and connected
        self.lab.dockerd(n1).restart()
        self.assertTrue(self.pings(n2, "db", web_ip))
        self.assertTrue(self.tcp(n2, "db", web_ip))
        # netplugin restart (killed) on node2: db keeps its traffic, the networks stay
        self.lab.restart_netplugin(n2, kill=True)
        self.assertTrue(self.pings(n1, "web", db_ip))
        until("networks consistent after the restarts",
              lambda: all({"contiv-net", "web.contiv-net"} <= self.networks(h) for h in (n1, n2)))
        self.assertEqual(len(self.records()), 2)
        # removal releases everything: records, ports, counts, the address
        self.docker(n2, "rm", "-f", "db")
        until("db's endpoint released", lambda: len(self.records()) == 1)
        oper = self.api("GET", "/api/v1/inspect/networks/default:contiv-net/")["Oper"]
        self.assertEqual(oper.get("numEndpoints"), 1)
        self.docker(n2, "run", "-d", "--name=db2", "--net=contiv-net", "--ip=20.1.1.50",
                    "busybox:local", "sleep", "3600")
        until("the released address works again", lambda: self.pings(n1, "web", "20.1.1.50"))
        self.docker(n2, "rm", "-f", "db2")

    def podman_on_node2_and_docker_on_node1_talk(self):
        require_binary("podman", "conmon")
        n1, n2 = self.n1, self.n2
        web_ip = self.ip_of(n1, "web")
        from contiv_sdn.lab.docker import Podman
        podman = Podman(os.path.join(self.lab.root, n2, "podman"), netns=self.lab.host(n2).netns)
        self.addCleanup(podman.cleanup)
        podman.setup()
        with open(os.path.join(ROOT, "plugins", "cni", "contiv.conflist")) as f:
            conflist = json.load(f)
        conflist["plugins"][0]["socket"] = self.lab.host(n2).socket
        podman.add_network("contiv-net", conflist)
        podman.import_busybox()
        podman.run("run", "-d", "--name", "pod", "--network", "contiv-net", "busybox:local",
                   "sleep", "3600")
        pod_ip = podman.run("exec", "pod", "ip", "-o", "-4", "addr", "show", "eth0") \
            .stdout.split()[3].split("/")[0]
        until("docker on node1 pings podman on node2", lambda: self.pings(n1, "web", pod_ip))
        self.assertEqual(podman.run("exec", "pod", "ping", "-c", "1", "-W", "2", web_ip,
                                    check=False).returncode, 0)
        # a Mesos-style configuration puts its container in the labelled group
        mesos = {"cniVersion": "1.0.0", "name": "contiv", "type": "contiv-cni",
                 "socket": self.lab.host(n2).socket, "network": "contiv-net",
                 "args": {"org.apache.mesos": {"network_info": {"name": "contiv", "labels": {
                     "labels": [{"key": "io.contiv.net-group", "value": "web"}]}}}}}
        ns = "drvemesos"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        self.addCleanup(subprocess.run, ["ip", "netns", "del", ns])
        env = {"PATH": os.environ["PATH"], "CNI_CONTAINERID": "mesos0123", "CNI_IFNAME": "eth0",
               "CNI_NETNS": f"/var/run/netns/{ns}", "CNI_PATH": "/usr/lib/cni"}
        add = subprocess.run([CNI], input=json.dumps(mesos).encode(), capture_output=True,
                             env=dict(env, CNI_COMMAND="ADD"), timeout=60)
        self.assertEqual(add.returncode, 0, add.stdout)
        self.assertEqual(self.records()["mesos0123"]["group"], "default:web")
        mesos_ip = json.loads(add.stdout)["ips"][0]["address"].split("/")[0]
        until("docker on node1 pings the mesos container",
              lambda: self.pings(n1, "web", mesos_ip))
        # DEL twice succeeds
        for _ in range(2):
            rm = subprocess.run([CNI], input=json.dumps(mesos).encode(), capture_output=True,
                                env=dict(env, CNI_COMMAND="DEL"), timeout=60)
            self.assertEqual((rm.returncode, rm.stdout), (0, b""))
        self.assertNotIn("mesos0123", self.records())
