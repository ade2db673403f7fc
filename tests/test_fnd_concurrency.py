"""Two netmaster processes on one Redis: concurrent requests never share an
address, a tag or an id (allocation happens inside Redis, atomically)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.trial import unittest

from contiv_sdn.store import Store
from contiv_sdn.testing import RedisServer
from contiv_sdn.testing.netmaster import NetmasterProcess
from tests.test_fnd_helpers import Client, async_test, gather_all


class TwoNetmasters(unittest.TestCase):
    def setUp(self):
        self.redis = RedisServer().start()
        self.addCleanup(self.redis.stop)
        self.clients = []
        for _ in range(2):
            nm = NetmasterProcess(redis_url=self.redis.url).start()
            self.addCleanup(nm.stop)
            c = Client(nm.url, max_connections=50)
            self.addCleanup(c.close)
            self.clients.append(c)

    @async_test
    async def test_500_concurrent_allocations_are_distinct(self):
        a, b = self.clients
        await a.ok("POST", "/api/v1/networks/default:fnd-big/", {
            "tenantName": "default", "networkName": "fnd-big", "encap": "vxlan",
            "subnet": "10.60.0.0/22", "gateway": "10.60.0.1"})
        half = [defer.ensureDeferred(a.ok("POST", "/plugin/allocAddress",
                                          {"NetworkID": "fnd-big.default"})) for _ in range(250)]
        half += [defer.ensureDeferred(b.ok("POST", "/plugin/allocAddress",
                                           {"NetworkID": "fnd-big.default"}))
                 for _ in range(250)]
        results = await gather_all(half)
        addrs = [r["IPv4Address"] for r in results]
        self.assertEqual(len(addrs), 500)
        self.assertEqual(len(set(addrs)), 500)
        self.assertNotIn("10.60.0.1/22", addrs)
        # lowest-free: exactly the 500 lowest host addresses after the gateway
        expected = {f"10.60.{(i >> 8)}.{i & 255}/22" for i in range(2, 502)}
        self.assertEqual(set(addrs), expected)
        oper = (await b.ok("GET", "/api/v1/inspect/networks/default:fnd-big/"))["Oper"]
        self.assertEqual(oper["allocatedAddressesCount"], 500)
        self.assertEqual(oper["allocatedIPAddresses"], "10.60.0.1-10.60.1.245")

    @async_test
    async def test_concurrent_network_creates_get_distinct_tags(self):
        a, b = self.clients
        await a.ok("POST", "/api/v1/networks/default:fnd-base/", {
            "tenantName": "default", "networkName": "fnd-base", "encap": "vxlan",
            "subnet": "10.69.0.0/24"})
        calls = []
        for i in range(16):
            c = a if i % 2 else b
            encap = "vlan" if i % 4 == 0 else "vxlan"
            calls.append(defer.ensureDeferred(c.ok("POST", f"/api/v1/networks/default:fnd-n{i}/", {
                "tenantName": "default", "networkName": f"fnd-n{i}", "encap": encap,
                "subnet": f"10.70.{i}.0/24"})))
        calls += [defer.ensureDeferred(self.clients[i % 2].ok(
            "POST", f"/api/v1/endpointGroups/default:fnd-g{i}/",
            {"tenantName": "default", "groupName": f"fnd-g{i}", "networkName": "fnd-base"}))
            for i in range(6)]
        await gather_all(calls)
        vnis, local, vlans = [], [], []
        for i in range(16):
            oper = (await a.ok("GET", f"/api/v1/inspect/networks/default:fnd-n{i}/"))["Oper"]
            if i % 4 == 0:
                vlans.append(oper["pktTag"])
            else:
                vnis.append(oper["externalPktTag"])
                local.append(oper["pktTag"])
        self.assertEqual(sorted(vnis), list(range(2, 14)))  # fnd-base has VNI 1
        self.assertEqual(sorted(local), list(range(2, 14)))
        self.assertEqual(sorted(vlans), [1, 2, 3, 4])
        tenant = await b.ok("GET", "/api/v1/tenants/default/")
        self.assertEqual(len(tenant["link-sets"]["Networks"]), 17)
        self.assertEqual(len(tenant["link-sets"]["EndpointGroups"]), 6)
        net = await b.ok("GET", "/api/v1/networks/default:fnd-base/")
        self.assertEqual(len(net["link-sets"]["EndpointGroups"]), 6)
        glob = (await b.ok("GET", "/api/v1/inspect/globals/global/"))["Oper"]
        self.assertEqual((glob["vlansInUse"], glob["vxlansInUse"], glob["numNetworks"]),
                         ("1-4", "1-13", 17))
        store = await Store.connect(self.redis.url)
        try:
            groups = await store.list("endpointGroup")
            nets = await store.list("network")
        finally:
            await store.close()
        self.assertEqual(sorted(g["epgId"] for g in groups.values()), list(range(1, 7)))
        self.assertEqual(sorted(n["netId"] for n in nets.values()), list(range(1, 18)))
