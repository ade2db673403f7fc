"""Issue 18, the Docker driver's surfaces: libnetwork's calls and the netmaster's replies.

A real agent with the Docker driver (Redis, netmaster, private OVS: :class:`DockerHost`
without dockerd), called over its plugin socket as dockerd calls it.  Every call's
body is hostile in every field kind (wrong types, NaN/Infinity/1e400, deep nesting,
non-objects, huge strings): the answer is ``{"Err"}`` with HTTP 400 naming the field,
nothing is created (no port, no veth, no netmaster allocation, no driver state), and
no traceback is logged.  Malformed netmaster replies (through :class:`TamperingProxy`)
are an ``Err`` naming netmaster, with the reservation or endpoint released.
"""

from __future__ import annotations

import json
from typing import Any, Dict

from twisted.internet import defer
from twisted.trial import unittest

from drivers.docker.protocol import REQUESTS
from tests.test_drv_fixtures import GATEWAY, NET, SUBNET, DockerHost, PluginCaller, netctl_group, \
    netctl_net
from tests.test_hard_agent import LogCapture, TamperingProxy, assert_no_repr

NET_ID = "d1" * 32
EP_ID = "e2" * 32
POOL_ID = f"default:{NET}:|{SUBNET}"

#: A valid value of each declared type (by the Go type name) and wrong ones for it.
GOOD: Dict[str, Any] = {"string": "x", "int": 1, "bool": False}
WRONG: Dict[str, list] = {
    "string": [5, 1.5, True, ["x"], {"a": 1}],
    "int": ["1", 1.5, True, [1], {"a": 1}, 1e30],
    "bool": ["true", 1, [True], {"a": 1}],
    "map[string]string": ["text", 5, ["x"], {"a": 1}, {"a": {"b": "c"}}],
    "map[string]interface {}": ["text", 5, ["x"], True],
    "[]IPAMData": ["text", 5, {"a": 1}, [5], [{"Pool": 5}], [{"AuxAddresses": {"a": 1}}]],
    "EndpointInterface": ["text", 5, ["x"], {"Address": 7}, {"MacAddress": ["x"]}],
}


def valid_body(call: str) -> Dict[str, Any]:
    shape, _ = REQUESTS[call]
    body: Dict[str, Any] = {}
    for name, t in shape.fields.items():
        body[name] = GOOD.get(t.go)
    return body


class HostileDockerInputTests(unittest.TestCase):
    timeout = 180

    async def _setup(self, proxy: bool = False) -> None:
        self.logs = LogCapture(self)
        self.h = DockerHost(self, docker=False)
        netctl_net(self.h.url, NET, SUBNET, GATEWAY)
        netctl_group(self.h.url, NET, "web")
        self.proxy = None
        if proxy:
            self.proxy = TamperingProxy(self.h.url)
            self.h.url = self.proxy.start(self)
        await self.h.start_agent()
        self.p = PluginCaller(self.h.plugin_socket)

    async def refused(self, call: str, raw: bytes, *expect: str, status: int = 400) -> str:
        code, answer, _ = await self.p.raw(call, raw)
        what = f"{call} {raw[:120]!r}: {str(answer)[:300]}"
        self.assertEqual(code, status, what)
        self.assertIsInstance(answer, dict, what)
        self.assertEqual(set(answer), {"Err"}, what)
        for text in expect:
            self.assertIn(text, answer["Err"], what)
        assert_no_repr(self, answer["Err"])
        self.assertLess(len(answer["Err"]), 2000, what)
        return answer["Err"]

    def assert_nothing_created(self) -> None:
        h = self.h
        self.assertFalse({p for p in h.ports() if p.startswith("cv")})
        self.assertFalse({l for l in h.host_links() if l.startswith(("cv", "ct"))})
        self.assertEqual(h.endpoints_in_redis(), {})
        self.assertFalse(h.plugin.driver.state.pending)
        self.assertIsNone(h.plugin.driver.state.network(NET_ID))

    def test_hostile_bodies_for_every_call(self):
        return defer.ensureDeferred(self._hostile_bodies())

    async def _hostile_bodies(self) -> None:
        await self._setup()
        for call, entry in sorted(REQUESTS.items()):
            if entry is None:
                for raw in (b"NaN", b"[" * 20000, b"{\"a\": Infinity}"):
                    await self.refused(call, raw, "not valid JSON")
                continue
            shape, _ = entry
            valid = valid_body(call)
            # non-objects, broken JSON, NaN/Infinity anywhere, nesting past Go's bound
            for raw in (b"[1, 2]", b'"text"', b"5", b"true"):
                await self.refused(call, raw, "must be a JSON object", shape.go_name)
            for raw in (b"NaN", b"Infinity", b"{\"NetworkID\": NaN}", b"{\"x\": -Infinity}",
                        b"{not json", b"{\"a\": " + b"[" * 20000 + b"]" * 20000 + b"}"):
                await self.refused(call, raw, "not valid JSON")
            # every field: each wrong type, NaN/1e400 in its place, a 5,000-deep value
            for name, t in shape.fields.items():
                if t.go == "interface {}":
                    continue  # DiscoveryData: anything is allowed
                for wrong in WRONG[t.go]:
                    raw = json.dumps(dict(valid, **{name: wrong})).encode()
                    await self.refused(call, raw, name, "cannot unmarshal")
                for lit in (b"NaN", b"Infinity", b"-Infinity"):
                    raw = json.dumps(dict(valid, **{name: "@"})).encode().replace(b'"@"', lit)
                    await self.refused(call, raw, "not valid JSON")
                raw = json.dumps(dict(valid, **{name: "@"})).encode()
                if t.go != "map[string]interface {}":
                    await self.refused(call, raw.replace(b'"@"', b"1e400"), name)
                    await self.refused(call, raw.replace(b'"@"', b"[" * 5000 + b"]" * 5000),
                                       name, "cannot unmarshal array")
            # huge identifiers are refused by length, and not echoed
            for name in ("NetworkID", "EndpointID", "PoolID"):
                if name in shape.fields:
                    raw = json.dumps(dict(valid, **{name: "i" * 1_000_000})).encode()
                    await self.refused(call, raw, name, "at most 512")

        # free-form Options: any JSON value, even deep, but decoded without recursion and
        # never echoed; a CreateNetwork without placement creates nothing
        deep = b"{\"a\": " * 5000 + b"1" + b"}" * 5000
        code, answer, _ = await self.p.raw("NetworkDriver.CreateNetwork", (
            b'{"NetworkID": "%s", "Options": {"x": %s}}' % (NET_ID.encode(), deep)))
        self.assertEqual((code, answer), (200, {}))
        err = await self.refused("NetworkDriver.Join", b'{"NetworkID": "%s", "EndpointID": "%s", '
                                 b'"SandboxKey": "/x", "Options": %s}' % (
                                     NET_ID.encode(), EP_ID.encode(), deep),
                                 "does not exist", status=500)
        self.assertLess(len(err), 300)
        # huge strings where the driver parses them: quoted short, not echoed whole
        err = await self.refused("IpamDriver.RequestAddress", json.dumps(
            {"PoolID": POOL_ID, "Address": "1" * 1_000_000}).encode(), "not an IPv4 address")
        self.assertLess(len(err), 300)
        err = await self.refused("IpamDriver.RequestPool", json.dumps(
            {"Pool": "p" * 1_000_000, "Options": {"network": NET}}).encode(), "is not a subnet")
        self.assertLess(len(err), 300)

        self.assert_nothing_created()
        self.assertEqual(self.logs.failures(), [])
        # the driver still works
        code, answer = await self.p.call("IpamDriver.RequestAddress",
                                         {"PoolID": POOL_ID, "Address": ""})
        self.assertEqual((code, answer), (200, {"Address": "10.37.1.1/24", "Data": {}}))

    def test_malformed_netmaster_replies(self):
        return defer.ensureDeferred(self._malformed_replies())

    async def _malformed_replies(self) -> None:
        await self._setup(proxy=True)
        assert self.proxy is not None
        h = self.h
        # a reservation whose reply does not fit: refused, and the address given back
        for fake, expect in (
                (b'{"IPv4Address": 5}', "netmaster sent a malformed reply to allocAddress: json: "
                 "cannot unmarshal number into Go struct field AddressAllocResponse.IPv4Address"
                 " of type string"),
                (b'{"IPv4Address": "10.37.1.50"}', "not an address/prefix length"),
                (b'{"IPv4Address": NaN}', "malformed reply to allocAddress: invalid character")):
            self.proxy.replace = {"/plugin/allocAddress": fake}
            await self.refused("IpamDriver.RequestAddress", json.dumps(
                {"PoolID": POOL_ID, "Address": "10.37.1.50"}).encode(), expect, status=500)
            self.assertFalse(h.plugin.driver.state.pending)
        self.proxy.replace = {}
        code, answer = await self.p.call("IpamDriver.RequestAddress",
                                         {"PoolID": POOL_ID, "Address": "10.37.1.50"})
        self.assertEqual((code, answer["Address"]), (200, "10.37.1.50/24"))
        await self.p.call("IpamDriver.ReleaseAddress", {"PoolID": POOL_ID,
                                                        "Address": "10.37.1.50"})

        # an endpoint whose createEndpoint reply does not fit: no port, veth or allocation
        code, answer = await self.p.call("NetworkDriver.CreateNetwork", {
            "NetworkID": NET_ID, "Options": {"com.docker.network.generic": {"network": NET}},
            "IPv4Data": [{"Pool": SUBNET, "Gateway": f"{GATEWAY}/24"}]})
        self.assertEqual(code, 200, answer)
        for fake, expect in (
                (b'{"EndpointConfig": {"id": "%s", "macAddress": ["x"]}}',
                 "netmaster sent a malformed reply to createEndpoint: json: cannot unmarshal "
                 "array into Go struct field CfgEndpointState.EndpointConfig.macAddress of type "
                 "string"),
                (b'{"EndpointConfig": {"id": "%s", "epgId": 1e400}}',
                 "CfgEndpointState.EndpointConfig.epgId of type int")):
            self.proxy.replace = {"/plugin/createEndpoint": fake.replace(b"%s", EP_ID.encode())}
            await self.refused("NetworkDriver.CreateEndpoint", json.dumps({
                "NetworkID": NET_ID, "EndpointID": EP_ID,
                "Interface": {"Address": "10.37.1.9/24"}}).encode(), expect, status=500)
            self.assertFalse({p for p in h.ports() if p.startswith("cv")})
            self.assertFalse({l for l in h.host_links() if l.startswith(("cv", "ct"))})
            self.assertEqual(h.endpoints_in_redis(), {})
        self.proxy.replace = {}
        code, answer = await self.p.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": NET_ID, "EndpointID": EP_ID, "Interface": {"Address": "10.37.1.9/24"}})
        self.assertEqual(code, 200, answer)
        self.assertEqual([e["ipAddress"] for e in h.endpoints_in_redis().values()],
                         ["10.37.1.9"])
        self.assertEqual(self.logs.failures(), [])


class MalformedDockerdReplyTests(unittest.TestCase):
    """dockerd's replies are decoded into declared shapes too (a fake dockerd on a socket)."""

    timeout = 30

    def setUp(self):
        import os
        import tempfile
        from twisted.internet import reactor
        from twisted.web import resource, server
        self.logs = LogCapture(self)
        self.replies: Dict[str, bytes] = {}
        replies = self.replies

        class Fake(resource.Resource):
            isLeaf = True

            def render(self, request: Any) -> bytes:
                request.setHeader(b"Content-Type", b"application/json")
                return replies.get(request.path.decode(), b"{}")

        d = tempfile.mkdtemp(prefix="hard-dockerd-")
        self.addCleanup(lambda: __import__("shutil").rmtree(d, True))
        path = os.path.join(d, "docker.sock")
        site = server.Site(Fake())
        site.noisy = False
        port = reactor.listenUNIX(path, site)
        self.addCleanup(port.stopListening)
        from drivers.docker.client import DockerClient
        self.client = DockerClient("unix://" + path, timeout=10)
        self.addCleanup(self.client.close)

    def test_malformed_replies_are_errors_naming_dockerd(self):
        return defer.ensureDeferred(self._malformed())

    async def _malformed(self) -> None:
        from drivers.docker.client import DockerAPIError
        self.replies.update({
            "/networks/n1": b'{"Name": "n1", "IPAM": {"Config": [{"Subnet": 5}]}}',
            "/networks/n2": b'{"Name": "n2", "Labels": {"a": NaN}}',
            "/networks": b'{"not": "a list"}',
            "/containers/c1/json": b'{"Id": "c1", "NetworkSettings": {"Networks": '
                                   b'{"x": {"EndpointID": ["e"]}}}}',
        })
        for call, expect in (
                (lambda: self.client.inspect_network("n1"),
                 "IPAMConfig.IPAM.Config.Subnet of type string"),
                (lambda: self.client.inspect_network("n2"), "invalid character 'N'"),
                (lambda: self.client.list_networks("netplugin"),
                 "cannot unmarshal object into Go value of type []NetworkResource"),
                (lambda: self.client.inspect_container("c1"),
                 "EndpointSettings.NetworkSettings.Networks.EndpointID of type string")):
            with self.assertRaises(DockerAPIError) as ctx:
                await call()
            self.assertRegex(str(ctx.exception), r"^dockerd: .*: malformed reply: ")
            self.assertIn(expect, str(ctx.exception))
            assert_no_repr(self, str(ctx.exception))
        # a reply that fits has every declared field, typed, whatever dockerd left out
        self.replies["/networks/n3"] = b'{"Name": "n3", "Id": "i3", "Labels": null}'
        net = await self.client.inspect_network("n3")
        self.assertEqual((net["Name"], net["Labels"], net["IPAM"]["Config"], net["Containers"]),
                         ("n3", {}, [], {}))
        self.assertEqual(self.logs.failures(), [])
