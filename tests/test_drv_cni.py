"""The ``contiv-cni`` plugin: spec conformance, placement sources, and podman as a real runtime.

The plugin runs as the runtime runs it: the installed ``contiv-cni`` executable,
``CNI_*`` variables, network configuration on stdin.  Behind it is a real
netplugin agent (in-process), netmaster, Redis and OVS; containers are real
network namespaces, and in the last test real podman containers.  The
Kubernetes API server cannot run here: a stand-in answering the one call the
plugin makes (``GET /api/v1/namespaces/{ns}/pods/{name}``, shaped as the public
API reference documents a Pod) provides pod labels.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from typing import Any, Dict, Optional, Tuple

from twisted.internet import defer, endpoints, reactor, threads
from twisted.trial import unittest
from twisted.web import resource, server

from contiv_sdn.testing import require, require_binary
from tests.test_drv_fixtures import (GATEWAY, NET, SUBNET, DockerHost, netctl_group, netctl_net,
                                     wait_for)
from tests.test_fnd_helpers import async_test

CNI = os.path.join(os.path.dirname(sys.executable), "contiv-cni")


def require_cni() -> None:
    """The plugin's console script, installed next to this Python by ``pip install -e .``."""
    require(os.path.exists(CNI), f"{CNI} not installed (pip install -e .)")


def run_cni(command: str, config: Any, env: Optional[Dict[str, str]] = None,
            raw: Optional[bytes] = None) -> Tuple[int, Any]:
    """Execute the plugin like a runtime does; (exit status, decoded stdout or None)."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_COMMAND": command}
    full.update(env or {})
    stdin = raw if raw is not None else json.dumps(config).encode()
    proc = subprocess.run([CNI], input=stdin, env=full, capture_output=True, timeout=120)
    out = proc.stdout.decode().strip()
    return proc.returncode, (json.loads(out) if out else None)


class Netns:
    def __init__(self, test: unittest.TestCase, prefix: str = "drvc"):
        self.name = f"{prefix}{secrets.token_hex(3)}"
        self.path = f"/var/run/netns/{self.name}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        test.addCleanup(subprocess.run, ["ip", "netns", "del", self.name])


class SpecTests(unittest.TestCase):
    """What needs no netplugin: VERSION, decoding, environment checks, error format."""

    def setUp(self):
        require_cni()

    conf = {"cniVersion": "1.0.0", "name": "drv", "type": "contiv-cni",
            "socket": "/nonexistent/netplugin.sock"}
    env = {"CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/none",
           "CNI_IFNAME": "eth0", "CNI_PATH": "/opt/cni/bin"}

    def assertError(self, result: Tuple[int, Any], code: int, words: str = "",
                    version: str = "1.0.0") -> Dict[str, Any]:
        status, out = result
        self.assertNotEqual(status, 0, out)
        self.assertEqual(out["code"], code, out)
        self.assertEqual(out["cniVersion"], version)
        self.assertIn(words, out["msg"] + " " + out.get("details", ""))
        return out

    def test_version(self):
        for asked in ("1.0.0", "0.4.0", "1.1.0"):
            status, out = run_cni("VERSION", {"cniVersion": asked})
            self.assertEqual(status, 0)
            self.assertEqual(out["cniVersion"], asked)
            for v in ("0.4.0", "1.0.0", "1.1.0"):
                self.assertIn(v, out["supportedVersions"])
        # no config at all (some runtimes): the latest version answers
        status, out = run_cni("VERSION", None, raw=b"")
        self.assertEqual((status, out["cniVersion"]), (0, "1.1.0"))

    def test_decode_and_config_errors(self):
        self.assertError(run_cni("ADD", None, self.env, raw=b"{oops"), 6, "decode",
                         version="1.1.0")
        self.assertError(run_cni("ADD", None, self.env, raw=b"[1]"), 6, "JSON object",
                         version="1.1.0")
        self.assertError(run_cni("ADD", {"cniVersion": "0.2.0", "name": "x", "type": "y"},
                                 self.env), 1, "0.2.0", version="1.1.0")
        self.assertError(run_cni("ADD", {"name": "x", "type": "y"}, self.env), 7, "cniVersion",
                         version="1.1.0")
        self.assertError(run_cni("ADD", {"cniVersion": "1.0.0", "type": "y"}, self.env), 7,
                         '"name"')
        self.assertError(run_cni("ADD", dict(self.conf, socket="relative.sock"), self.env), 7,
                         "socket")
        self.assertError(run_cni("ADD", dict(self.conf, tenant=5), self.env), 7, "tenant")

    def test_environment_errors(self):
        self.assertError(run_cni("FROB", self.conf, self.env), 4, "CNI_COMMAND",
                         version="1.0.0")
        self.assertError(run_cni("", self.conf, self.env), 4, "CNI_COMMAND")
        out = self.assertError(run_cni("ADD", self.conf, {"CNI_IFNAME": "eth0"}), 4, "missing")
        for var in ("CNI_CONTAINERID", "CNI_NETNS", "CNI_PATH"):
            self.assertIn(var, out["msg"])
        self.assertError(run_cni("ADD", self.conf, dict(self.env, CNI_CONTAINERID="-bad id")),
                         4, "CNI_CONTAINERID")
        self.assertError(run_cni("ADD", self.conf, dict(self.env, CNI_IFNAME="x" * 16)), 4,
                         "CNI_IFNAME")
        self.assertError(run_cni("ADD", self.conf, dict(self.env, CNI_NETNS="relative")), 4,
                         "CNI_NETNS")
        self.assertError(run_cni("ADD", self.conf, dict(self.env, CNI_ARGS="K8S_POD_NAME")), 4,
                         "CNI_ARGS")
        # DEL does not need CNI_NETNS (the namespace may be gone already)
        self.assertError(run_cni("DEL", self.conf, {"CNI_CONTAINERID": "abc",
                                                    "CNI_IFNAME": "eth0"}), 11, "netplugin")

    def test_version_gated_commands_and_unreachable_netplugin(self):
        self.assertError(run_cni("CHECK", dict(self.conf, cniVersion="0.3.1"), self.env), 1,
                         "0.4.0", version="0.3.1")
        self.assertError(run_cni("STATUS", self.conf, {}), 1, "1.1.0")
        self.assertError(run_cni("GC", self.conf, {}), 1, "1.1.0")
        self.assertError(run_cni("ADD", self.conf, self.env), 11, "not running")
        self.assertError(run_cni("STATUS", dict(self.conf, cniVersion="1.1.0"), {}), 50,
                         "not running", version="1.1.0")


class PodStandIn(resource.Resource):
    """Stand-in for the Kubernetes API server: serves Pod objects (metadata.labels) only."""

    isLeaf = True

    def __init__(self, pods: Dict[Tuple[str, str], Dict[str, str]], token: str):
        super().__init__()
        self.pods = pods
        self.token = token
        self.requests: list = []

    def render_GET(self, request: Any) -> bytes:
        self.requests.append(request.path.decode())
        request.setHeader(b"Content-Type", b"application/json")
        if request.getHeader("authorization") != f"Bearer {self.token}":
            request.setResponseCode(401)
            return b'{"kind":"Status","status":"Failure","reason":"Unauthorized","code":401}'
        parts = request.path.decode().strip("/").split("/")
        if len(parts) == 6 and parts[:3] == ["api", "v1", "namespaces"] and parts[4] == "pods":
            labels = self.pods.get((parts[3], parts[5]))
            if labels is not None:
                return json.dumps({"kind": "Pod", "apiVersion": "v1", "metadata": {
                    "name": parts[5], "namespace": parts[3], "labels": labels}}).encode()
        request.setResponseCode(404)
        return b'{"kind":"Status","status":"Failure","reason":"NotFound","code":404}'


class PluginTests(unittest.TestCase):
    """ADD/CHECK/DEL/STATUS/GC against a real netplugin."""

    timeout = 120

    async def _setup(self) -> None:
        require_cni()
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        await self.h.start_agent()
        self.conf = {"cniVersion": "1.0.0", "name": "drvcni", "type": "contiv-cni",
                     "socket": self.h.agent_socket, "network": NET}

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    def env(self, ctr: Netns, cid: Optional[str] = None, **extra: str) -> Dict[str, str]:
        env = {"CNI_CONTAINERID": cid or secrets.token_hex(32), "CNI_NETNS": ctr.path,
               "CNI_IFNAME": "eth0", "CNI_PATH": "/usr/lib/cni"}
        env.update(extra)
        return env

    def cni(self, command: str, config: Any, env: Dict[str, str]) -> defer.Deferred:
        # in a thread: the plugin talks to the agent running on this reactor
        return threads.deferToThread(run_cni, command, config, env)

    @async_test
    async def test_add_check_del(self):
        ctr = Netns(self)
        env = self.env(ctr, CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=ns1;K8S_POD_NAME=web-0")
        status, result = await self.cni("ADD", self.conf, env)
        self.assertEqual(status, 0, result)
        self.assertEqual(result["cniVersion"], "1.0.0")
        host_if, cont_if = result["interfaces"]
        self.assertEqual(cont_if, {"name": "eth0", "mac": "02:02:0a:25:01:01",
                                   "sandbox": ctr.path})
        self.assertEqual(host_if["name"], "cv" + env["CNI_CONTAINERID"][:12])
        self.assertEqual(result["ips"], [{"address": "10.37.1.1/24", "gateway": GATEWAY,
                                          "interface": 1}])
        self.assertEqual(result["routes"], [{"dst": "0.0.0.0/0", "gw": GATEWAY}])
        self.assertEqual(result["dns"], {"nameservers": [GATEWAY]})
        addr = subprocess.run(["ip", "-n", ctr.name, "-o", "addr", "show", "eth0"],
                              capture_output=True, text=True).stdout
        self.assertIn("10.37.1.1/24", addr)
        record = self.h.endpoints_in_redis()[env["CNI_CONTAINERID"]]
        self.assertEqual(record["containerName"], "web-0")
        self.assertEqual(record["homingHost"], self.h.host)
        # CHECK passes with the ADD result, fails with another address
        checked = dict(self.conf, prevResult=result)
        self.assertEqual(await self.cni("CHECK", checked, env), (0, None))
        wrong = dict(result, ips=[{"address": "10.37.1.9/24", "interface": 1}])
        status, out = await self.cni("CHECK", dict(self.conf, prevResult=wrong), env)
        self.assertEqual((status, out["code"]), (1, 3))
        # ... and when the interface in the namespace lost its address
        subprocess.run(["ip", "-n", ctr.name, "addr", "flush", "dev", "eth0"], check=True)
        status, out = await self.cni("CHECK", checked, env)
        self.assertEqual((status, out["code"]), (1, 3), out)
        # DEL releases everything and is idempotent, also without the namespace
        self.assertEqual(await self.cni("DEL", dict(self.conf, prevResult=result), env),
                         (0, None))
        self.assertEqual(self.h.endpoints_in_redis(), {})
        self.assertNotIn(host_if["name"], self.h.ports())
        self.assertEqual(await self.cni("DEL", self.conf, env), (0, None))
        self.assertEqual(await self.cni("DEL", self.conf, dict(env, CNI_NETNS="")), (0, None))
        status, out = await self.cni("CHECK", checked, env)
        self.assertEqual(out["code"], 3)

    @async_test
    async def test_result_in_0_4_0_and_requested_ip(self):
        ctr = Netns(self)
        conf = dict(self.conf, cniVersion="0.4.0", dns={"nameservers": ["10.37.1.53"],
                                                       "search": ["contiv"]})
        env = self.env(ctr, CNI_ARGS="IP=10.37.1.40")
        status, result = await self.cni("ADD", conf, env)
        self.assertEqual(status, 0, result)
        self.assertEqual(result["cniVersion"], "0.4.0")
        self.assertEqual(result["ips"], [{"address": "10.37.1.40/24", "gateway": GATEWAY,
                                          "interface": 1, "version": "4"}])
        self.assertEqual(result["dns"], {"nameservers": ["10.37.1.53"], "search": ["contiv"]})
        # the same address for another container is refused with the netmaster's words
        other = Netns(self)
        status, out = await self.cni("ADD", conf, self.env(other, CNI_ARGS="IP=10.37.1.40"))
        self.assertEqual(status, 1)
        self.assertIn("10.37.1.40", out["msg"])
        self.assertEqual(len(self.h.endpoints_in_redis()), 1)
        # an unknown network in the config is an invalid configuration
        status, out = await self.cni("ADD", dict(conf, network="nosuch"), self.env(other))
        self.assertEqual((status, out["code"]), (1, 7), out)
        self.assertEqual(await self.cni("DEL", conf, env), (0, None))

    @async_test
    async def test_placement_from_mesos_and_kubernetes_labels(self):
        # Mesos: args["org.apache.mesos"].network_info.labels
        ctr = Netns(self)
        mesos = dict(self.conf, network="ignored-by-label", args={"org.apache.mesos": {
            "network_info": {"name": "contiv", "labels": {"labels": [
                {"key": "io.contiv.network", "value": NET},
                {"key": "io.contiv.net-group", "value": "web"},
                {"key": "app", "value": "shop"}]}}}})
        env = self.env(ctr)
        status, result = await self.cni("ADD", mesos, env)
        self.assertEqual(status, 0, result)
        record = self.h.endpoints_in_redis()[env["CNI_CONTAINERID"]]
        self.assertEqual(record["group"], "default:web")
        self.assertEqual(record["labels"]["app"], "shop")
        self.assertEqual(await self.cni("DEL", mesos, env), (0, None))
        # Kubernetes: the pod's labels, read from the API server named in the config
        token = secrets.token_hex(8)
        api = PodStandIn({("shop", "web-1"): {"io.contiv.net-group": "web", "tier": "front"}},
                         token)
        site = server.Site(api)
        port = await endpoints.TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.addCleanup(port.stopListening)
        k8s = dict(self.conf, kubernetes={
            "apiServer": f"http://127.0.0.1:{port.getHost().port}", "token": token})
        pod = self.env(Netns(self), CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;"
                                             "K8S_POD_NAME=web-1;K8S_POD_INFRA_CONTAINER_ID=x")
        status, result = await self.cni("ADD", k8s, pod)
        self.assertEqual(status, 0, result)
        self.assertEqual(api.requests, ["/api/v1/namespaces/shop/pods/web-1"])
        record = self.h.endpoints_in_redis()[pod["CNI_CONTAINERID"]]
        self.assertEqual((record["group"], record["containerName"]), ("default:web", "web-1"))
        self.assertEqual(record["labels"]["tier"], "front")
        # a pod the API server does not know is an I/O failure, nothing is allocated
        lost = self.env(Netns(self), CNI_ARGS="K8S_POD_NAMESPACE=shop;K8S_POD_NAME=gone")
        status, out = await self.cni("ADD", k8s, lost)
        self.assertEqual((status, out["code"]), (1, 5), out)
        self.assertEqual(len(self.h.endpoints_in_redis()), 1)

    @async_test
    async def test_status_and_gc(self):
        conf = dict(self.conf, cniVersion="1.1.0")
        self.assertEqual(await self.cni("STATUS", conf, {}), (0, None))
        envs = [self.env(Netns(self)) for _ in range(3)]
        for env in envs[:2]:
            self.assertEqual((await self.cni("ADD", conf, env))[0], 0)
        other_conf = dict(conf, name="otherconf")
        self.assertEqual((await self.cni("ADD", other_conf, envs[2]))[0], 0)
        valid = [{"containerID": envs[0]["CNI_CONTAINERID"], "ifname": "eth0"}]
        self.assertEqual(await self.cni("GC", dict(conf, **{"cni.dev/valid-attachments": valid}),
                                        {}), (0, None))
        left = set(self.h.endpoints_in_redis())
        self.assertEqual(left, {envs[0]["CNI_CONTAINERID"], envs[2]["CNI_CONTAINERID"]})


class PodmanTests(unittest.TestCase):
    """Podman runs containers through contiv-cni (its CNI backend, private configuration)."""

    timeout = 180

    async def _setup(self) -> None:
        require_binary("podman", "conmon")
        require_cni()
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        await self.h.start_agent()
        from contiv_sdn.lab.docker import Podman
        self.podman = Podman(os.path.join(self.h.dir, "podman"), netns=self.h.netns)
        self.addCleanup(lambda: threads.deferToThread(self.podman.cleanup))
        self.podman.setup()
        with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                               "plugins", "cni", "contiv.conflist")) as f:
            conflist = json.load(f)
        conflist["plugins"][0].update(socket=self.h.agent_socket, network=NET, group="web")
        self.podman.add_network("drvpod", conflist)
        await threads.deferToThread(self.podman.import_busybox)

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    @async_test
    async def test_podman_run_gets_an_endpoint_and_releases_it(self):
        out = await threads.deferToThread(
            self.podman.run, "run", "--rm", "--name", "pod1", "--network", "drvpod",
            "busybox:local", "sh", "-c", "ip -o addr show eth0; ip route; cat /etc/resolv.conf")
        self.assertIn("10.37.1.1/24", out.stdout)
        self.assertIn(f"default via {GATEWAY}", out.stdout)
        self.assertIn(f"nameserver {GATEWAY}", out.stdout)
        await wait_for("endpoint released after podman run --rm",
                       lambda: not self.h.endpoints_in_redis())
        # --ip is honoured, the container name reaches the endpoint record
        await threads.deferToThread(self.podman.run, "run", "-d", "--name", "pod2", "--network",
                                    "drvpod", "--ip", "10.37.1.66", "busybox:local", "sleep",
                                    "300")
        records = self.h.endpoints_in_redis()
        self.assertEqual([(r["ipAddress"], r["containerName"], r["group"])
                          for r in records.values()], [("10.37.1.66", "pod2", "default:web")])
        await threads.deferToThread(self.podman.run, "rm", "-f", "-t", "0", "pod2")
        await wait_for("endpoint released after podman rm",
                       lambda: not self.h.endpoints_in_redis())
