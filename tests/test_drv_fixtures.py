"""Shared set-up of the drivers' tests (no tests here): a real host for Docker and CNI.

:class:`DockerHost` is one simulated host with everything real: redis-server, a
netmaster process, a private OVS inside a fresh ``drv…`` network namespace, the
netplugin agent *in-process* (host ends of veths in that namespace) with the
Docker driver added exactly as the agent's wiring would add it, and a private
dockerd inside the namespace that finds that driver as ``netplugin``.  Without
an OpenFlow controller there is no traffic between containers here; the
lab-based e2e tests cover that.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
import urllib.request
from typing import Any, Callable, Dict, Optional

from twisted.internet import defer, reactor, threads
from twisted.trial import unittest

from contiv_sdn.testing import RedisServer, require_binary, require_root, wait

SUBNET, GATEWAY = "10.37.1.0/24", "10.37.1.254"
NET = "drvnet"


async def wait_for(what: str, check: Callable[[], Any], timeout: float = 30.0,
                   every: float = 0.05) -> Any:
    """The shared :func:`contiv_sdn.testing.wait.wait_for`, in this module's argument order.

    Errors from ``check`` count as "not yet" (the last one is reported on timeout):
    the drivers' checks ask dockerd and the netmaster, which may still be starting.
    """
    return await wait.wait_for(check, timeout=timeout, what=what, every=every, retry_errors=True)


def http_json(base: str, method: str, path: str, body: Any = None,
              content_type: str = "application/json") -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(base + path, data=data, method=method,
                                 headers={"Content-Type": content_type})
    with urllib.request.urlopen(req, timeout=15) as resp:
        raw = resp.read()
    return json.loads(raw) if raw.strip() else None


def netctl_net(base: str, name: str, subnet: str, gateway: str = "", tenant: str = "default",
               encap: str = "vxlan") -> Any:
    body = {"tenantName": tenant, "networkName": name, "encap": encap, "subnet": subnet}
    if gateway:
        body["gateway"] = gateway
    return http_json(base, "POST", f"/api/v1/networks/{tenant}:{name}/", body)


def netctl_group(base: str, network: str, group: str, tenant: str = "default") -> Any:
    return http_json(base, "POST", f"/api/v1/endpointGroups/{tenant}:{group}/", {
        "tenantName": tenant, "networkName": network, "groupName": group})


def netctl_delete(base: str, collection: str, key: str) -> Any:
    return http_json(base, "DELETE", f"/api/v1/{collection}/{key}/")


def inspect_net(base: str, key: str) -> Dict[str, Any]:
    return http_json(base, "GET", f"/api/v1/inspect/networks/{key}/")


class DockerHost:
    """See the module docstring.  Every part is removed on cleanup, also after a failure."""

    def __init__(self, test: unittest.TestCase, docker: bool = True):
        require_root()
        require_binary("redis-server", "ip", "ovsdb-server", "ovs-vswitchd", "ovs-vsctl")
        if docker:
            require_binary("dockerd", "docker", "nsenter", "unshare")
        self.test = test
        self.dir = tempfile.mkdtemp(prefix="drv-")
        test.addCleanup(shutil.rmtree, self.dir, True)
        self.redis = RedisServer().start()
        test.addCleanup(self.redis.stop)
        from contiv_sdn.testing.netmaster import NetmasterProcess
        self.nm = NetmasterProcess(redis_url=self.redis.url)
        test.addCleanup(self.nm.stop)
        self.nm.start()
        self.url = self.nm.url
        self.netns = f"drv{secrets.token_hex(3)}"
        self.netns_path = f"/var/run/netns/{self.netns}"
        subprocess.run(["ip", "netns", "add", self.netns], check=True)
        test.addCleanup(subprocess.run, ["ip", "netns", "del", self.netns])
        subprocess.run(["ip", "-n", self.netns, "link", "set", "lo", "up"], check=True)
        from contiv_sdn.lab.ovs import OvsInstance
        self.ovs = OvsInstance(os.path.join(self.dir, "ovs"), netns=self.netns)
        test.addCleanup(self.ovs.stop)
        self.ovs.start()
        self.host = f"drv-host-{secrets.token_hex(2)}"
        self.plugin_dir = os.path.join(self.dir, "plugins")
        self.plugin_socket = os.path.join(self.plugin_dir, "netplugin.sock")
        self.agent_socket = os.path.join(self.dir, "netplugin.sock")
        self.docker_root = os.path.join(self.dir, "docker")
        self.docker_socket = os.path.join(self.dir, "docker.sock")
        self.agent: Any = None
        self.plugin: Any = None
        self.dockerd: Any = None

    def options(self) -> Dict[str, Any]:
        return {"host": self.host, "vtep-ip": "192.0.2.211", "netmaster": self.url,
                "controllers": ["tcp:127.0.0.1:1"], "redis": self.redis.url,
                "ovs-db": "unix:" + self.ovs.db_sock, "datapath-type": "netdev",
                "bridge": "br-int", "uplink": None, "underlay-mtu": 1500,
                "socket": self.agent_socket, "state-dir": os.path.join(self.dir, "state"),
                "refresh": 30.0, "reconcile-interval": 0}

    async def start_agent(self, reconcile_interval: float = 30.0, grace: float = 60.0) -> Any:
        from contiv_sdn.agent.service import make_service
        from drivers.docker.service import make_docker_plugin_service
        from drivers.netplugin import attach_cni
        self.agent = make_service(self.options(), host_netns=self.netns_path)
        attach_cni(self.agent)  # as drivers.netplugin assembles it
        self.plugin = make_docker_plugin_service(
            self.agent, self.plugin_socket, "unix://" + self.docker_socket,
            reconcile_interval=reconcile_interval, grace=grace)
        self.plugin.setServiceParent(self.agent)
        self.agent.startService()
        self.test.addCleanup(self.stop_agent)
        # cleanups run last-in first-out: containers go while the plugin still answers
        self.test.addCleanup(self.remove_containers)
        await wait_for("agent ready", lambda: self.agent.ready)
        return self.agent

    async def remove_containers(self) -> None:
        if self.dockerd is None or not self.dockerd.running():
            return
        ids = (await self.docker("ps", "-aq", check=False)).stdout.split()
        if ids:
            await self.docker("rm", "-f", *ids, check=False, timeout=120)

    async def stop_agent(self) -> None:
        if self.agent is not None and self.agent.running:
            await self.agent.stopService()

    def start_dockerd(self) -> Any:
        """Start dockerd (blocking: call before the in-process plugin serves anything)."""
        from contiv_sdn.lab.docker import Dockerd, import_busybox
        self.dockerd = Dockerd(self.docker_root, netns=self.netns, plugin_dir=self.plugin_dir,
                               socket_path=self.docker_socket, name=self.netns)
        # in a thread: dockerd calls the plugin, which answers on this reactor
        self.test.addCleanup(lambda: threads.deferToThread(self.dockerd.cleanup))
        self.dockerd.start()
        import_busybox(self.docker_socket)
        return self.dockerd

    def docker(self, *args: str, check: bool = True, timeout: float = 60) -> defer.Deferred:
        """The docker CLI in a thread: dockerd may call our in-process plugin meanwhile."""
        return threads.deferToThread(self.dockerd.docker, *args, check=check, timeout=timeout)

    async def out(self, *args: str) -> str:
        return (await self.docker(*args)).stdout

    async def docker_json(self, *args: str) -> Any:
        return json.loads(await self.out(*args))

    async def names(self) -> set:
        return set((await self.out("network", "ls", "--format", "{{.Name}}")).split())

    def host_links(self) -> set:
        out = subprocess.run(["ip", "-n", self.netns, "-j", "link", "show"], check=True,
                             capture_output=True, text=True).stdout
        return {l["ifname"] for l in json.loads(out)}

    def ports(self) -> list:
        return self.ovs.vsctl("list-ports", "br-int").split()

    def endpoints_in_redis(self) -> Dict[str, Any]:
        out = subprocess.run(["redis-cli", "-s", self.redis.socket, "HGETALL",
                              "contiv:state:endpoint"], capture_output=True, text=True,
                             check=True).stdout.split("\n")
        pairs = [l for l in out if l]
        return {pairs[i]: json.loads(pairs[i + 1]) for i in range(0, len(pairs) - 1, 2)}


def refusing_plugin(path: str) -> Any:
    """Listen on the plugin socket and fail every call at once (a broken netplugin).

    With no socket at all dockerd retries each call for about 30 s before giving
    up; a plugin that answers with an error lets it go on immediately, which is
    how a test makes dockerd forget an endpoint without netplugin noticing.
    """
    from twisted.internet import endpoints
    from twisted.web import resource, server

    class Refuse(resource.Resource):
        isLeaf = True

        def render(self, request: Any) -> bytes:
            request.setResponseCode(500)
            return b'{"Err": "netplugin is broken (test)"}'

    site = server.Site(Refuse())
    site.noisy = False
    return endpoints.UNIXServerEndpoint(reactor, path).listen(site)


class PluginCaller:
    """Calls the plugin socket like dockerd does (POST, JSON), returns (status, json)."""

    def __init__(self, path: str):
        from contiv_sdn.agent.client import UnixEndpoints
        from treq.client import HTTPClient
        from twisted.web.client import Agent, HTTPConnectionPool
        pool = HTTPConnectionPool(reactor, persistent=False)
        self._http = HTTPClient(Agent.usingEndpointFactory(
            reactor, UnixEndpoints(reactor, path, 10), pool=pool))

    async def raw(self, call: str, body: Optional[bytes], method: str = "POST") -> Any:
        kw: Dict[str, Any] = {"timeout": 60}
        if body is not None:
            kw["data"] = body
        response = await self._http.request(method, "http://plugin/" + call, **kw)
        raw = await response.content()
        try:
            answer = json.loads(raw) if raw.strip() else None
        except ValueError:
            answer = raw.decode()
        return response.code, answer, response.headers

    async def call(self, call: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        code, answer, _ = await self.raw(call, data)
        return code, answer
