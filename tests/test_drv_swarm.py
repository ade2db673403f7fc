"""The swarm-mode side of the Docker driver (issue 17), call by call, as Docker 20.10 makes them.

The sequences replayed here are the ones a real swarm made against the managed
plugin ``netplugin:swarm`` (recorded in docs/design.md, "Swarm mode"): the
manager's RequestPool in the global address space, AllocateNetwork, one
RequestAddress per task; on the worker a RequestPool in the local space, the
gateway, CreateNetwork with the options AllocateNetwork answered, the task's
address as the manager chose it, CreateEndpoint, Join; on removal the worker's
DeleteEndpoint and ReleaseAddress, then the manager's ReleaseAddress.  They go
over the real swarm socket to the driver inside a real agent (real netmaster,
Redis, OVS, netns), and the netmaster's own view of the addresses is checked.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from tests.test_drv_fixtures import DockerHost, PluginCaller, http_json, inspect_net

SUBNET = "10.41.7.0/24"
GATEWAY = "10.41.7.254"
NET = "swarm-net"
TAG = "swarmtag"
GTAG = "webtag"
NET_ID = "c3" * 12  # swarm network ids are 25 characters
EP_ID = "d4" * 32
GLOBAL = "contiv-global"
LOCAL = "contiv-local"
SERIAL = "com.docker.network.ipam.serial"
GW_REQ = {"RequestAddressType": "com.docker.network.gateway"}


def ensure(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))
    wrapper.__name__ = fn.__name__
    return wrapper


class SwarmDriverTests(unittest.TestCase):
    timeout = 120

    async def _setup(self) -> None:
        self.h = DockerHost(self, docker=False)
        http_json(self.h.url, "POST", f"/api/v1/networks/default:{NET}/", {
            "tenantName": "default", "networkName": NET, "encap": "vxlan",
            "subnet": SUBNET, "gateway": GATEWAY, "cfgdTag": TAG})
        http_json(self.h.url, "POST", "/api/v1/endpointGroups/default:web/", {
            "tenantName": "default", "networkName": NET, "groupName": "web", "cfgdTag": GTAG})
        await self.h.start_agent()
        self.plugin = self.h.plugin
        self.swarm = PluginCaller(self.plugin.swarm_socket)
        self.legacy = PluginCaller(self.h.plugin_socket)

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    async def ok(self, call: str, body=None, p=None) -> dict:
        code, answer = await (p or self.swarm).call(call, body)
        self.assertEqual(code, 200, f"{call}: {answer}")
        self.assertFalse(answer.get("Err"), call)
        return answer

    def allocated(self, net: str = NET) -> int:
        oper = inspect_net(self.h.url, f"default:{net}").get("Oper") or {}
        return int(oper.get("allocatedAddressesCount") or 0)

    async def manager_pool(self, options: dict, pool: str = "") -> str:
        answer = await self.ok("IpamDriver.RequestPool", {
            "AddressSpace": GLOBAL, "Pool": pool, "SubPool": "",
            "Options": dict(options, **{SERIAL: "true"}), "V6": False})
        self.assertTrue(answer["PoolID"].endswith("|manager"), answer)
        return answer["PoolID"]

    @ensure
    async def test_scopes(self):
        """The swarm socket is a global-scope driver, the legacy one stays local (the
        reconciler's per-host networks need local scope)."""
        self.assertEqual(await self.ok("NetworkDriver.GetCapabilities"),
                         {"Scope": "global", "ConnectivityScope": "global"})
        self.assertEqual(await self.ok("NetworkDriver.GetCapabilities", p=self.legacy),
                         {"Scope": "local", "ConnectivityScope": "global"})

    @ensure
    async def test_task_lifecycle_on_a_tagged_network(self):
        # manager: the network
        pool_id = await self.manager_pool({"contiv-tag": TAG})
        gw = await self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool_id, "Address": "", "Options": dict(GW_REQ, **{SERIAL: "true"})})
        self.assertEqual(gw["Address"], f"{GATEWAY}/24")
        alloc = await self.ok("NetworkDriver.AllocateNetwork", {
            "NetworkID": NET_ID, "Options": {"contiv-tag": TAG},
            "IPv4Data": [{"AddressSpace": "", "Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}],
            "IPv6Data": None})
        self.assertEqual(alloc["Options"], {"contiv-tag": TAG, "tenant": "default",
                                            "network": NET})
        # manager: the task's address, reserved at the netmaster
        before = self.allocated()
        task = await self.ok("IpamDriver.RequestAddress",
                             {"PoolID": pool_id, "Address": "", "Options": {SERIAL: "true"}})
        addr = task["Address"]
        self.assertTrue(addr.startswith("10.41.7.") and addr.endswith("/24"), addr)
        self.assertEqual(self.allocated(), before + 1)
        # worker: the network and the endpoint with the manager's address
        wpool = await self.ok("IpamDriver.RequestPool", {
            "AddressSpace": LOCAL, "Pool": SUBNET, "SubPool": "",
            "Options": {"contiv-tag": TAG, SERIAL: "true"}, "V6": False})
        self.assertTrue(wpool["PoolID"].endswith("|worker"), wpool)
        await self.ok("IpamDriver.RequestAddress", {
            "PoolID": wpool["PoolID"], "Address": GATEWAY, "Options": GW_REQ})
        await self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": False,
                                             "com.docker.network.generic": alloc["Options"]},
            "IPv4Data": [{"AddressSpace": LOCAL, "Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}],
            "IPv6Data": []})
        echoed = await self.ok("IpamDriver.RequestAddress", {
            "PoolID": wpool["PoolID"], "Address": addr.split("/")[0], "Options": None})
        self.assertEqual(echoed["Address"], addr)
        self.assertEqual(self.allocated(), before + 1, "the worker must not allocate again")
        await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID,
            "Interface": {"Address": addr, "AddressIPv6": "", "MacAddress": ""},
            "Options": {}})
        ep = http_json(self.h.url, "GET", f"/api/v1/inspect/endpoints/{EP_ID}/")
        self.assertIn(addr.split("/")[0], str(ep))
        joined = await self.ok("NetworkDriver.Join", {
            "NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "/x", "Options": {}})
        self.assertEqual(joined["Gateway"], GATEWAY)
        # removal: the manager's release after the endpoint is gone frees it; the
        # worker's release does nothing; a release while the endpoint exists neither
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr})
        self.assertEqual(self.allocated(), before + 1, "released under a live endpoint")
        await self.ok("NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": EP_ID})
        await self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID,
                                                       "EndpointID": EP_ID})
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": wpool["PoolID"],
                                                    "Address": addr})
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr})
        self.assertEqual(self.allocated(), before)
        # a service VIP: reserved by the manager, never bound, released by it
        vip = await self.ok("IpamDriver.RequestAddress",
                            {"PoolID": pool_id, "Address": "", "Options": {SERIAL: "true"}})
        self.assertEqual(self.allocated(), before + 1)
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id,
                                                    "Address": vip["Address"]})
        self.assertEqual(self.allocated(), before)
        await self.ok("NetworkDriver.FreeNetwork", {"NetworkID": NET_ID})

    @ensure
    async def test_group_tag_and_default_tag(self):
        await self.manager_pool({"contiv-tag": GTAG})
        alloc = await self.ok("NetworkDriver.AllocateNetwork", {
            "NetworkID": NET_ID, "Options": {"contiv-tag": GTAG},
            "IPv4Data": [], "IPv6Data": []})
        self.assertEqual(alloc["Options"]["group"], "web")
        self.assertEqual(alloc["Options"]["network"], NET)
        # the default tag <name>.<tenant> of a network without cfgdTag works too
        alloc = await self.ok("NetworkDriver.AllocateNetwork", {
            "NetworkID": NET_ID, "Options": {"contiv-tag": f"web.default"},
            "IPv4Data": [], "IPv6Data": []})
        self.assertEqual(alloc["Options"]["group"], "web")

    @ensure
    async def test_unknown_tag_is_refused_with_what_to_do(self):
        code, answer = await self.swarm.call("IpamDriver.RequestPool", {
            "AddressSpace": GLOBAL, "Pool": "", "SubPool": "",
            "Options": {"contiv-tag": "nosuch", SERIAL: "true"}, "V6": False})
        self.assertEqual(code, 400, answer)
        self.assertIn('no contiv network or endpoint group has the tag "nosuch"', answer["Err"])
        self.assertIn("--nw-tag nosuch", answer["Err"])

    @ensure
    async def test_subnet_without_tag_creates_a_contiv_network(self):
        subnet = "10.42.9.0/24"
        pool_id = await self.manager_pool({}, pool=subnet)
        name = "swarm-10-42-9-0-24"
        self.assertTrue(pool_id.startswith(f"default:{name}:|{subnet}"), pool_id)
        net = inspect_net(self.h.url, f"default:{name}")
        self.assertEqual(net["Config"]["subnet"], subnet)
        # the worker, given only the subnet, names the same network
        wpool = await self.ok("IpamDriver.RequestPool", {
            "AddressSpace": LOCAL, "Pool": subnet, "SubPool": "",
            "Options": {SERIAL: "true"}, "V6": False})
        self.assertEqual(wpool["PoolID"], f"default:{name}:|{subnet}|worker")

    @ensure
    async def test_late_manager_release_does_not_free_a_reissued_address(self):
        """The known race: a task's endpoint is deleted on its worker (the netmaster frees
        its address), the manager hands the same address to a new task, then the old
        task's ReleaseAddress reaches the manager.  That release must not free the
        address the new task holds."""
        pool_id = await self.manager_pool({"contiv-tag": TAG})
        before = self.allocated()
        first = (await self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool_id, "Address": "", "Options": {SERIAL: "true"}}))["Address"]
        wpool = await self.ok("IpamDriver.RequestPool", {
            "AddressSpace": LOCAL, "Pool": SUBNET, "SubPool": "",
            "Options": {"contiv-tag": TAG, SERIAL: "true"}, "V6": False})
        await self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.generic": {
                "tenant": "default", "network": NET}},
            "IPv4Data": [{"AddressSpace": LOCAL, "Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}],
            "IPv6Data": []})
        await self.ok("IpamDriver.RequestAddress", {
            "PoolID": wpool["PoolID"], "Address": first.split("/")[0], "Options": None})
        await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID,
            "Interface": {"Address": first, "AddressIPv6": "", "MacAddress": ""},
            "Options": {}})
        await self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID,
                                                       "EndpointID": EP_ID})
        self.assertEqual(self.allocated(), before, "the endpoint's deletion frees it")
        # the lowest free address again: the same one, for a new task
        second = (await self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool_id, "Address": "", "Options": {SERIAL: "true"}}))["Address"]
        self.assertEqual(second, first)
        self.assertEqual(self.allocated(), before + 1)
        # the old task's late release: the new task keeps its address
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": first})
        self.assertEqual(self.allocated(), before + 1, "a late release freed a held address")
        # the new task's own release frees it
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": second})
        self.assertEqual(self.allocated(), before)

    @ensure
    async def test_free_network_is_answered(self):
        """AllocateNetwork reports the mapping and FreeNetwork forgets it; a netmaster that
        does not serve /plugin/createDocknet (404) costs the mapping, not the network."""
        await self.manager_pool({"contiv-tag": GTAG})
        alloc = await self.ok("NetworkDriver.AllocateNetwork", {
            "NetworkID": NET_ID, "Options": {"contiv-tag": GTAG},
            "IPv4Data": [], "IPv6Data": []})
        self.assertEqual(alloc["Options"]["group"], "web")
        self.assertEqual(await self.ok("NetworkDriver.FreeNetwork", {"NetworkID": NET_ID}), {})
