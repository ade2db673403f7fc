"""Conformance of the Docker plugin socket to libnetwork's remote driver and IPAM protocols.

The calls are made over the real UNIX socket, the way dockerd makes them, to
the driver running inside a real agent (real netmaster, Redis, OVS, netns).
Every call is tried with a valid body, with its required fields missing and
with malformed bodies; unknown calls and other methods are refused.
"""

from __future__ import annotations

import json
import subprocess

from twisted.internet import defer
from twisted.trial import unittest

from drivers.docker.protocol import CALLS
from tests.test_drv_fixtures import GATEWAY, NET, SUBNET, DockerHost, PluginCaller, netctl_group, \
    netctl_net

NET_ID = "a1" * 32
EP_ID = "b2" * 32


def ensure(fn):
    def wrapper(self):
        return defer.ensureDeferred(fn(self))
    wrapper.__name__ = fn.__name__
    return wrapper


class PluginProtocolTests(unittest.TestCase):
    timeout = 120

    async def _setup(self) -> None:
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        await self.h.start_agent()
        self.p = PluginCaller(self.h.plugin_socket)

    def setUp(self):
        return defer.ensureDeferred(self._setup())

    async def ok(self, call: str, body=None) -> dict:
        code, answer = await self.p.call(call, body)
        self.assertEqual(code, 200, f"{call}: {answer}")
        self.assertIsInstance(answer, dict, call)
        self.assertFalse(answer.get("Err"), call)
        return answer

    async def err(self, call: str, body, status: int) -> str:
        code, answer = await self.p.call(call, body)
        self.assertEqual(code, status, f"{call}: {answer}")
        self.assertIsInstance(answer, dict, f"{call}: {answer!r}")
        self.assertTrue(answer.get("Err"), f"{call}: {answer}")
        return answer["Err"]

    @ensure
    async def test_handshake_unknown_calls_and_malformed_bodies(self):
        """Everything that needs no state, on one fixture (a fixture costs ~2 s)."""
        await self.handshake_and_capabilities()
        await self.unknown_calls_and_methods()
        await self.malformed_and_missing_bodies()

    async def handshake_and_capabilities(self):
        from prometheus_client import REGISTRY

        def calls(call: str) -> float:  # the driver runs in this process: its metrics too
            return REGISTRY.get_sample_value("contiv_plugin_calls_total", {
                "surface": "docker", "call": call, "result": "ok"}) or 0.0

        before = calls("NetworkDriver.GetCapabilities")
        self.assertEqual(await self.ok("Plugin.Activate"),
                         {"Implements": ["NetworkDriver", "IpamDriver"]})
        caps = await self.ok("NetworkDriver.GetCapabilities")
        self.assertEqual(caps, {"Scope": "local", "ConnectivityScope": "global"})
        self.assertEqual(calls("NetworkDriver.GetCapabilities"), before + 1)
        self.assertEqual(await self.ok("IpamDriver.GetCapabilities"),
                         {"RequiresMACAddress": False, "RequiresRequestReplay": False})
        spaces = await self.ok("IpamDriver.GetDefaultAddressSpaces")
        self.assertEqual(set(spaces), {"LocalDefaultAddressSpace", "GlobalDefaultAddressSpace"})
        # the media type of plugin answers
        _, _, headers = await self.p.raw("Plugin.Activate", None)
        self.assertEqual(headers.getRawHeaders(b"content-type"),
                         [b"application/vnd.docker.plugins.v1+json"])

    @ensure
    async def test_full_lifecycle_with_valid_bodies(self):
        h = self.h
        pool = await self.ok("IpamDriver.RequestPool", {
            "AddressSpace": "contiv-local", "Pool": SUBNET, "SubPool": "",
            "Options": {"tenant": "default", "network": NET, "group": "web"}, "V6": False})
        self.assertEqual(pool["Pool"], SUBNET)
        pool_id = pool["PoolID"]
        gw = await self.ok("IpamDriver.RequestAddress", {
            "PoolID": pool_id, "Address": GATEWAY,
            "Options": {"RequestAddressType": "com.docker.network.gateway"}})
        self.assertEqual(gw["Address"], f"{GATEWAY}/24")
        self.assertEqual(await self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.enable_ipv6": False,
                                             "com.docker.network.generic": {
                                                 "tenant": "default", "network": NET,
                                                 "group": "web"}},
            "IPv4Data": [{"AddressSpace": "contiv-local", "Pool": SUBNET,
                          "Gateway": f"{GATEWAY}/24"}], "IPv6Data": []}), {})
        alloc = await self.ok("IpamDriver.RequestAddress",
                              {"PoolID": pool_id, "Address": "", "Options": None})
        self.assertEqual(alloc["Address"], "10.37.1.1/24")
        created = await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID,
            "Interface": {"Address": alloc["Address"], "AddressIPv6": "", "MacAddress": ""},
            "Options": {"com.docker.network.endpoint.exposedports": []}})
        self.assertEqual(created, {"Interface": {"MacAddress": "02:02:0a:25:01:01"}})
        # retried CreateEndpoint (dockerd retries on a lost answer): same endpoint, no leak
        again = await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID,
            "Interface": {"Address": alloc["Address"], "AddressIPv6": "", "MacAddress": ""}})
        self.assertEqual(again, created)
        joined = await self.ok("NetworkDriver.Join", {
            "NetworkID": NET_ID, "EndpointID": EP_ID, "SandboxKey": "/var/run/docker/netns/x",
            "Options": {}})
        src = joined["InterfaceName"]["SrcName"]
        self.assertEqual(joined["InterfaceName"]["DstPrefix"], "eth")
        self.assertEqual(joined["Gateway"], GATEWAY)
        # the interface to move waits in the host namespace with MAC and MTU set
        link = json.loads(subprocess.run(["ip", "-n", h.netns, "-j", "link", "show", src],
                                         capture_output=True, text=True, check=True).stdout)[0]
        self.assertEqual(link["address"], "02:02:0a:25:01:01")
        self.assertEqual(link["mtu"], 1450)
        self.assertIn("cv" + EP_ID[:12], h.ports())
        info = await self.ok("NetworkDriver.EndpointOperInfo",
                             {"NetworkID": NET_ID, "EndpointID": EP_ID})
        self.assertEqual(info["Value"]["ipAddress"], "10.37.1.1")
        self.assertEqual(info["Value"]["group"], "default:web")
        for call in ("NetworkDriver.ProgramExternalConnectivity",
                     "NetworkDriver.RevokeExternalConnectivity", "NetworkDriver.Leave"):
            self.assertEqual(await self.ok(call, {"NetworkID": NET_ID, "EndpointID": EP_ID,
                                                  "Options": {}}), {})
        for call in ("NetworkDriver.DiscoverNew", "NetworkDriver.DiscoverDelete"):
            self.assertEqual(await self.ok(call, {"DiscoveryType": 1,
                                                  "DiscoveryData": {"Address": "1.2.3.4"}}), {})
        self.assertEqual(await self.ok("NetworkDriver.DeleteEndpoint",
                                       {"NetworkID": NET_ID, "EndpointID": EP_ID}), {})
        self.assertNotIn("cv" + EP_ID[:12], h.ports())
        self.assertNotIn(src, h.host_links())
        self.assertEqual(h.endpoints_in_redis(), {})
        # DeleteEndpoint is idempotent; ReleaseAddress of a bound address frees nothing twice
        self.assertEqual(await self.ok("NetworkDriver.DeleteEndpoint",
                                       {"NetworkID": NET_ID, "EndpointID": EP_ID}), {})
        self.assertEqual(await self.ok("IpamDriver.ReleaseAddress",
                                       {"PoolID": pool_id, "Address": "10.37.1.1"}), {})
        # an address reserved and never bound is released by ReleaseAddress
        held = await self.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ""})
        self.assertEqual(held["Address"], "10.37.1.1/24")
        busy = await self.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ""})
        self.assertEqual(busy["Address"], "10.37.1.2/24")
        for addr in ("10.37.1.1", "10.37.1.2"):
            await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": addr})
        again = await self.ok("IpamDriver.RequestAddress", {"PoolID": pool_id, "Address": ""})
        self.assertEqual(again["Address"], "10.37.1.1/24")
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool_id, "Address": "10.37.1.1"})
        self.assertEqual(await self.ok("NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID}), {})
        self.assertEqual(await self.ok("IpamDriver.ReleasePool", {"PoolID": pool_id}), {})
        alloc = await self.ok("NetworkDriver.AllocateNetwork", {
            "NetworkID": NET_ID, "Options": {"contiv-tag": "x"}, "IPv4Data": [],
            "IPv6Data": []})
        self.assertEqual(alloc, {"Options": {"contiv-tag": "x"}})
        self.assertEqual(await self.ok("NetworkDriver.FreeNetwork", {"NetworkID": NET_ID}), {})
        self.assertEqual(await self.ok("Plugin.Deactivate"), {})

    @ensure
    async def test_requested_address(self):
        pool = await self.ok("IpamDriver.RequestPool", {
            "Pool": SUBNET, "Options": {"network": NET}})
        got = await self.ok("IpamDriver.RequestAddress",
                            {"PoolID": pool["PoolID"], "Address": "10.37.1.50"})
        self.assertEqual(got["Address"], "10.37.1.50/24")
        taken = await self.err("IpamDriver.RequestAddress",
                               {"PoolID": pool["PoolID"], "Address": "10.37.1.50"}, 500)
        self.assertIn("10.37.1.50", taken)
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"],
                                                    "Address": "10.37.1.50"})
        # a reservation Docker never bound nor released (dockerd died) is released later
        await self.ok("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"],
                                                    "Address": "10.37.1.60"})
        driver = self.h.plugin.driver
        self.assertEqual(await driver.release_stale(3600), 0)
        self.assertEqual(await driver.release_stale(0), 1)
        self.assertFalse(driver.state.pending)
        again = await self.ok("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"],
                                                            "Address": "10.37.1.60"})
        self.assertEqual(again["Address"], "10.37.1.60/24")
        await self.ok("IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"],
                                                    "Address": "10.37.1.60"})

    @ensure
    async def test_semantic_failures_answer_err(self):
        # placement missing, unknown network or group, wrong subnet, IPv6
        self.assertIn("network=", await self.err("IpamDriver.RequestPool",
                                                 {"Pool": SUBNET, "Options": {}}, 400))
        self.assertIn("nosuch", await self.err("IpamDriver.RequestPool", {
            "Pool": SUBNET, "Options": {"network": "nosuch"}}, 500))
        self.assertIn("nogroup", await self.err("IpamDriver.RequestPool", {
            "Pool": SUBNET, "Options": {"network": NET, "group": "nogroup"}}, 500))
        self.assertIn("does not match", await self.err("IpamDriver.RequestPool", {
            "Pool": "10.99.0.0/16", "Options": {"network": NET}}, 400))
        self.assertIn("IPv6", await self.err("IpamDriver.RequestPool", {
            "Pool": "fd00::/64", "Options": {"network": NET}, "V6": True}, 400))
        self.assertIn("not issued by netplugin", await self.err(
            "IpamDriver.RequestAddress", {"PoolID": "10.37.1.0/24", "Address": ""}, 400))
        self.assertIn("not an IPv4 address", await self.err("IpamDriver.RequestAddress", {
            "PoolID": f"default:{NET}:|{SUBNET}", "Address": "garbage"}, 400))
        # endpoint calls on a network Docker never told us about (and no dockerd to ask)
        self.assertIn("unknown to netplugin", await self.err("NetworkDriver.CreateEndpoint", {
            "NetworkID": "f" * 64, "EndpointID": EP_ID,
            "Interface": {"Address": "10.37.1.9/24"}}, 500))
        self.assertIn("does not exist", await self.err("NetworkDriver.Join", {
            "NetworkID": NET_ID, "EndpointID": "c" * 64, "SandboxKey": "/x"}, 500))
        self.assertEqual((await self.ok("NetworkDriver.EndpointOperInfo", {
            "NetworkID": NET_ID, "EndpointID": "c" * 64})), {"Value": {}})
        self.assertIn("does not exist", await self.err("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.generic": {
                "network": "nosuch"}}, "IPv4Data": [{"Pool": SUBNET}]}, 500))
        self.assertIn("IPv6", await self.err("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {}, "IPv4Data": [{"Pool": SUBNET}],
            "IPv6Data": [{"Pool": "fd00::/64"}]}, 400))
        # a MAC address other than the one derived from the address is refused, nothing leaks
        await self.ok("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.generic": {"network": NET}},
            "IPv4Data": [{"Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}]})
        self.assertIn("--mac-address", await self.err("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID,
            "Interface": {"Address": "", "MacAddress": "02:42:ac:11:00:02"}}, 400))
        self.assertEqual(self.h.endpoints_in_redis(), {})
        self.assertFalse({p for p in self.h.ports() if p.startswith("cv")})
        # without an address Docker's IPAM did not assign, the netmaster's comes back
        made = await self.ok("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {}})
        self.assertEqual(made["Interface"]["Address"], "10.37.1.1/24")
        await self.ok("NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": EP_ID})

    async def malformed_and_missing_bodies(self):
        for call, spec in sorted(CALLS.items()):
            if spec is None:
                # no body expected: garbage is still refused, an empty object is fine
                code, answer, _ = await self.p.raw(call, b"{not json")
                self.assertEqual(code, 400, call)
                self.assertIn("not valid JSON", answer["Err"])
                await self.ok(call, {})
                continue
            required = [name for name, (_, req) in spec.items() if req]
            for raw, why in ((b"", "empty body"), (b"{not json", "not valid JSON"),
                             (b"[1, 2]", "must be a JSON object"),
                             (b"\"text\"", "must be a JSON object")):
                code, answer, _ = await self.p.raw(call, raw)
                self.assertEqual(code, 400, f"{call} {raw!r}: {answer}")
                self.assertIn(why, answer["Err"], call)
            # each required field missing, null, or of the wrong type
            valid = {name: _sample(typ) for name, (typ, _) in spec.items()}
            for name in required:
                for broken, why in (({k: v for k, v in valid.items() if k != name},
                                     f"{name} is required"),
                                    (dict(valid, **{name: None}), f"{name} is required"),
                                    (dict(valid, **{name: _wrong(spec[name][0])}),
                                     f"{name} must be")):
                    code, answer = await self.p.call(call, broken)
                    self.assertEqual(code, 400, f"{call} {broken}: {answer}")
                    self.assertIn(why, answer["Err"], call)
            # an optional field of the wrong type is refused too
            for name, (typ, req) in spec.items():
                if not req and typ is not object:
                    code, answer = await self.p.call(call, dict(valid, **{name: _wrong(typ)}))
                    self.assertEqual(code, 400, f"{call} {name}: {answer}")
        # CreateEndpoint's Interface fields are checked as well
        code, answer = await self.p.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": 7}})
        self.assertEqual(code, 400)
        self.assertIn("Interface.Address", answer["Err"])

    async def unknown_calls_and_methods(self):
        for call in ("NetworkDriver.Frobnicate", "IpamDriver.RequestPools", "", "Plugin"):
            code, answer, _ = await self.p.raw(call, b"{}")
            self.assertEqual(code, 404, call)
            self.assertIn("does not implement", answer["Err"])
        code, answer, headers = await self.p.raw("NetworkDriver.CreateNetwork", None,
                                                 method="GET")
        self.assertEqual(code, 405)
        self.assertEqual(headers.getRawHeaders(b"allow"), [b"POST"])
        self.assertTrue(answer["Err"])


def _sample(typ):
    return {str: "x" * 8, dict: {}, list: [], bool: False, int: 1, object: None}[typ]


def _wrong(typ):
    return {str: 42, dict: "text", list: {"a": 1}, bool: "yes", int: "one"}[typ]
